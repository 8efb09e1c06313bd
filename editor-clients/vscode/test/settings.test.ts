import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { DEFAULTS, documentSelector, serverCommand, toServerSettings } from '../src/settings';

const manifest = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'),
) as { contributes: { configuration: { properties: Record<string, { default: unknown }> } } };
const properties = manifest.contributes.configuration.properties;

test('unset settings become the server defaults', () => {
  assert.deepEqual(toServerSettings(() => undefined), DEFAULTS);
});

test('only the server keys are sent, values as set', () => {
  const set: Record<string, unknown> = {
    model: '/models/ckpt',
    device: 'cpu',
    maxSteps: 32,
    enable: false,
    spanSize: 0,
    languages: ['python', 'go'],
    'server.path': '/bin/infill-lsp',
    server: { path: '/bin/infill-lsp' },
    trace: { server: 'verbose' },
  };
  const sent = toServerSettings((key) => set[key]);
  assert.deepEqual(Object.keys(sent).sort(), Object.keys(DEFAULTS).sort());
  assert.equal(sent.model, '/models/ckpt');
  assert.equal(sent.enable, false); // false and 0 are values, not "unset"
  assert.equal(sent.spanSize, 0);
  assert.deepEqual(sent.languages, ['python', 'go']);
  assert.equal(sent.saveDeadlineMs, 800);
});

test('bad values pass through for the server to report', () => {
  const sent = toServerSettings((key) => (key === 'maxSteps' ? 'many' : undefined));
  assert.equal(sent.maxSteps, 'many');
});

test('package.json contributes every server setting with the server default', () => {
  for (const [key, value] of Object.entries(DEFAULTS)) {
    assert.ok(properties[`infill.${key}`], `infill.${key} is not contributed`);
    assert.deepEqual(properties[`infill.${key}`].default, value, `infill.${key} default`);
  }
  const clientOnly = ['infill.server.path', 'infill.server.args', 'infill.trace.server'];
  const extra = Object.keys(properties).filter(
    (k) => !clientOnly.includes(k) && !(k.slice('infill.'.length) in DEFAULTS),
  );
  assert.deepEqual(extra, []);
});

test('"*" syncs every document; a list syncs only those languages', () => {
  assert.deepEqual(documentSelector(['*']), [{ scheme: 'file' }, { scheme: 'untitled' }]);
  assert.deepEqual(documentSelector([]), [{ scheme: 'file' }, { scheme: 'untitled' }]);
  assert.deepEqual(documentSelector(undefined), [{ scheme: 'file' }, { scheme: 'untitled' }]);
  assert.deepEqual(documentSelector(['python', 7]), [
    { scheme: 'file', language: 'python' },
    { scheme: 'untitled', language: 'python' },
  ]);
});

test('server command: default infill-lsp, args kept as strings', () => {
  assert.deepEqual(serverCommand(undefined, undefined), { command: 'infill-lsp', args: [] });
  assert.deepEqual(serverCommand('  ', ['--x']), { command: 'infill-lsp', args: ['--x'] });
  assert.deepEqual(serverCommand(' /opt/bin/infill-lsp ', ['--device', 3, 'cpu']), {
    command: '/opt/bin/infill-lsp',
    args: ['--device', 'cpu'],
  });
});
