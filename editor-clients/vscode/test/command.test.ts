import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveCommand, startErrorMessage } from '../src/command';

const files = new Set(['/usr/bin/infill-lsp', '/work/.venv/bin/infill-lsp', '/home/me/venv/bin/infill-lsp']);
const exists = (file: string) => files.has(file);

test('a bare name is looked up on PATH, in order', () => {
  assert.equal(resolveCommand('infill-lsp', '/nope:/work/.venv/bin:/usr/bin', exists), '/work/.venv/bin/infill-lsp');
  assert.equal(resolveCommand('infill-lsp', '/nope::', exists), undefined);
});

test('a path is taken as is, relative to the workspace, ~ from home', () => {
  assert.equal(resolveCommand('/usr/bin/infill-lsp', '', exists), '/usr/bin/infill-lsp');
  assert.equal(resolveCommand('.venv/bin/infill-lsp', '', exists, '/work'), '/work/.venv/bin/infill-lsp');
  assert.equal(resolveCommand('~/venv/bin/infill-lsp', '', exists, '/', '/home/me'), '/home/me/venv/bin/infill-lsp');
  assert.equal(resolveCommand('/missing/infill-lsp', '/usr/bin', exists), undefined);
});

test('the start error says what failed and how to fix it', () => {
  const text = startErrorMessage('infill-lsp', 'not found on PATH');
  assert.ok(text.includes("'infill-lsp' (not found on PATH)"));
  assert.ok(text.includes('infill.server.path'));
  assert.ok(text.includes('make setup'));
});
