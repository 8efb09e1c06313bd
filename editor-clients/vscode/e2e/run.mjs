// End-to-end check: the packaged extension in code-server (VS Code in the browser), driven
// by headless Chromium through playwright-core. Run through run.sh, which installs what it
// needs and builds the .vsix and a tiny model:
//
//   node run.mjs --vsix infill.vsix --server /path/to/.venv/bin/infill-lsp --model DIR
//
// --model '' serves the bundled model instead of DIR.
//
// Steps: wait for the status bar to say the model is ready; type in a Python file and
// wait for ghost text; accept it with Tab; rewrite a line with the code action (Ctrl+.)
// and another with "Infill: Rewrite Selection"; toggle suggestions off and on; restart
// the server; with --scripted, against a server whose model always answers the same: no
// ghost text while typing in a comment, accept a word of a suggestion, then the rest,
// then the next line's, and save a file with a `# <fill>` hole; point infill.server.path
// nowhere and expect the start error. Edits are checked on disk after a save. Prints a JSON summary,
// saves screenshots, and exits non-zero on the first failed step.

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
  options: {
    vsix: { type: 'string' },
    server: { type: 'string' },
    model: { type: 'string', default: '' },
    home: { type: 'string', default: process.env.E2E_HOME ?? '/tmp/infill-vscode-e2e' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    // the command of a server whose model always answers the same (tests/scripted_server.py),
    // a JSON list; its answer is appended
    scripted: { type: 'string', default: '' },
  },
});
const require = createRequire(path.join(opts.home, 'package.json'));
const { chromium } = require('playwright-core');
const codeServer = path.join(opts.home, 'node_modules', '.bin', 'code-server');

const run = fs.mkdtempSync('/tmp/infill-e2e-');
const shots = path.join(run, 'shots');
const workspace = path.join(run, 'workspace');
const userData = path.join(run, 'user-data');
const extensions = path.join(run, 'extensions');
const config = path.join(run, 'code-server.yaml');
for (const dir of [shots, workspace, path.join(userData, 'User'), extensions]) {
  fs.mkdirSync(dir, { recursive: true });
}
fs.writeFileSync(config, 'auth: none\ncert: false\n');

const SAMPLE = [
  'def mean(values):',
  '    total = 0',
  '    for value in values:',
  '        total += value',
  '    return total / len(values)',
  '',
].join('\n');
const HOLES = ['def scale(xs, k):', '    out = []', '    # <fill> multiply each item', '    return out', ''].join('\n');
fs.writeFileSync(path.join(workspace, 'sample.py'), SAMPLE);
fs.writeFileSync(path.join(workspace, 'holes.py'), HOLES);
const GATED = ['def mean(values):', '    total = sum(values)', '    # the mean', '    avg = ', '    return avg', ''].join('\n');
const ANSWER = 'total / len(values)';
fs.writeFileSync(path.join(workspace, 'gated.py'), GATED);
fs.writeFileSync(
  path.join(userData, 'User', 'settings.json'),
  JSON.stringify(
    {
      'chat.disableAIFeatures': true,
      'workbench.startupEditor': 'none',
      'workbench.tips.enabled': false,
      'security.workspace.trust.enabled': false,
      'telemetry.telemetryLevel': 'off',
      'extensions.ignoreRecommendations': true,
      'editor.autoIndent': 'none',
      // VS Code in the browser saves 1 s after typing by default; desktop VS Code does not
      'files.autoSave': 'off',
      'infill.server.path': opts.server,
      // a setting, not --model: the client sends every infill.* setting, and the server
      // lets them override its command line
      'infill.model': opts.model,
      'infill.device': 'cpu',
      'infill.server.args': [
        ...['--log-file', path.join(run, 'server.log'), '--log-level', process.env.E2E_LOG_LEVEL ?? 'INFO'],
      ],
      'infill.maxSteps': 8,
    },
    null,
    2,
  ),
);

const summary = { run, steps: {} };
const started = Date.now();
const since = () => Date.now() - started;
const lines = (file) => fs.readFileSync(path.join(workspace, file), 'utf8').split('\n');

function check(name, ok, details) {
  summary.steps[name] = { ok, at_ms: since(), ...details };
  if (!ok) {
    throw new Error(`${name} failed: ${JSON.stringify(details)}`);
  }
}

async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(what, timeout, poll) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await poll();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      return undefined;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

const common = ['--user-data-dir', userData, '--extensions-dir', extensions, '--config', config];
const install = spawnSync(codeServer, [...common, '--install-extension', opts.vsix], { encoding: 'utf8' });
check('install_vsix', install.status === 0, { output: (install.stdout + install.stderr).trim().slice(-300) });

const port = await freePort();
const log = fs.openSync(path.join(run, 'code-server.log'), 'w');
const server = spawn(
  codeServer,
  [
    ...common,
    '--bind-addr',
    `127.0.0.1:${port}`,
    '--auth',
    'none',
    '--disable-telemetry',
    '--disable-update-check',
    '--disable-workspace-trust',
    '--ignore-last-opened',
    workspace,
  ],
  { stdio: ['ignore', log, log], detached: true },
);

let browser;
let page;
async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
}

async function openFile(name) {
  await page.keyboard.press('Control+P');
  await page.waitForSelector('.quick-input-widget input', { state: 'visible' });
  await page.keyboard.type(name);
  await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${name}"]`, { timeout: 10000 });
  await page.keyboard.press('Enter');
  await page.waitForSelector(`.tab.active[aria-label*="${name}"]`, { timeout: 10000 });
  await page.waitForSelector('.quick-input-widget', { state: 'hidden' });
  await page.locator('.editor-instance .monaco-editor .view-lines').first().click();
}

async function goToLine(line) {
  await page.keyboard.press('Control+G');
  await page.waitForSelector('.quick-input-widget input', { state: 'visible' });
  await page.keyboard.type(String(line));
  await page.keyboard.press('Enter');
  await page.waitForSelector('.quick-input-widget', { state: 'hidden' });
}

async function selectLine(line) {
  await goToLine(line);
  await page.keyboard.press('End');
  await page.keyboard.press('Shift+Home'); // to the first non-blank character
}

async function save(file, before) {
  await page.keyboard.press('Control+S');
  return settle(file, before);
}

/**
 * The file's lines once they differ from `before` on disk, saving when the editor holds
 * unsaved changes (VS Code saves files a refactoring code action changed by itself).
 */
let extraSaves = 0;
async function settle(file, before, timeout = 15000) {
  return waitFor(`${file} on disk`, timeout, async () => {
    const now = lines(file);
    if (now.join('\n') !== before.join('\n')) {
      return now;
    }
    if ((await page.locator(`.tab.dirty[aria-label*="${file}"]`).count()) > 0) {
      extraSaves += 1;
      await page.keyboard.press('Control+S');
    }
    return undefined;
  });
}

/** Set infill.server.path in the Settings editor, as a user does; the client restarts. */
async function setServerPath(value) {
  await runCommand('Preferences: Open User Settings');
  await page.waitForSelector('.settings-editor .suggest-input-container', { timeout: 10000 });
  await page.keyboard.type('infill.server.path');
  const input = page
    .locator('.settings-editor .setting-item-contents', { hasText: 'Command that starts the language server' })
    .locator('input')
    .first();
  await input.waitFor({ timeout: 10000 });
  await input.fill(value);
  await input.press('Tab');
}

/** Ask for an inline suggestion as a user does (editor.action.inlineSuggest.trigger). */
async function askForSuggestion() {
  await page.keyboard.press('F1');
  await page.waitForSelector('.quick-input-widget input', { state: 'visible' });
  await page.keyboard.type('Trigger Inline Suggestion');
  await page.waitForSelector('.quick-input-list .monaco-list-row[aria-label*="Trigger Inline Suggestion"]');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.quick-input-widget', { state: 'hidden' });
}

async function runCommand(title) {
  await page.keyboard.press('F1');
  await page.waitForSelector('.quick-input-widget input', { state: 'visible' });
  await page.keyboard.type(title);
  const label = title.split(': ')[1];
  await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${label}"]`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('.quick-input-widget', { state: 'hidden' });
}

try {
  const url = `http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`;
  await waitFor('code-server', 60000, async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
    } catch {
      return false;
    }
  });
  browser = await chromium.launch({ executablePath: opts.chromium, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(url);
  await page.waitForSelector('.monaco-workbench', { timeout: 60000 });

  // 1. the status bar follows infill/status to "ready"
  await openFile('sample.py');
  const item = page.locator('.statusbar-item', { hasText: 'Infill' });
  const ready = await waitFor('ready', 60000, async () => (await item.locator('.codicon-sparkle').count()) > 0);
  await shot('1-ready');
  check('status_ready', Boolean(ready), { text: await item.first().innerText().catch(() => '') });

  // 2. ghost text while typing, accepted with Tab
  await goToLine(5);
  await page.keyboard.press('End');
  await page.keyboard.press('Enter');
  await page.keyboard.type('result = ', { delay: 50 });
  const ghost = page.locator('.monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text');
  const shown = await waitFor('ghost text', 30000, async () => (await ghost.count()) > 0);
  await shot('2-ghost-text');
  const ghostText = shown ? (await ghost.allInnerTexts()).join('') : '';
  const dirty = await page.locator('.tab.dirty[aria-label*="sample.py"]').count();
  check('ghost_text', Boolean(shown) && dirty === 1, { ghost: ghostText, tab_dirty: dirty });
  await page.keyboard.press('Tab');
  await page.keyboard.press('Escape');
  const afterTab = await save('sample.py', SAMPLE.split('\n'));
  const typed = afterTab?.[5] ?? '';
  check('tab_accepts', typed.startsWith('result = ') && typed.length > 'result = '.length, {
    line: typed,
    others_kept: afterTab?.slice(0, 5).join('\n') === SAMPLE.split('\n').slice(0, 5).join('\n'),
  });
  const latency = await item.first().innerText();
  check('status_latency', /\d+ ms/.test(latency), { text: latency });

  // 3. rewrite a line with the code action (Ctrl+.). The random model may have nothing
  // usable for a line (then the action changes nothing): try the next line.
  let before = lines('sample.py');
  let after;
  const tried = [];
  for (const line of [2, 3, 4]) {
    await selectLine(line);
    await page.keyboard.press('Control+.');
    const action = page.locator('.action-widget .monaco-list-row', { hasText: 'Rewrite selection (infill)' });
    await action.first().waitFor({ timeout: 10000 });
    if (tried.length === 0) {
      await shot('3-code-action');
    }
    await action.first().click();
    after = await settle('sample.py', before, 8000);
    tried.push(line);
    if (after) {
      break;
    }
  }
  const changed = after?.map((l, i) => (l === before[i] ? null : i)).filter((i) => i !== null) ?? [];
  check('rewrite_code_action', Boolean(after) && after[0] === before[0] && after.at(-2) === before.at(-2), {
    tried,
    first_changed_line: changed[0],
    after,
  });

  // 4. rewrite another line through the command palette
  before = lines('sample.py');
  await selectLine(1);
  await runCommand('Infill: Rewrite Selection');
  // the model may rewrite the line, or say it had nothing usable: either answers
  const toast = page.locator('.notification-list-item-message', { hasText: 'Infill:' });
  const answer = await waitFor('rewrite command', 15000, async () => {
    if (lines('sample.py').join('\n') !== before.join('\n')) {
      return { applied: true };
    }
    if ((await page.locator('.tab.dirty[aria-label*="sample.py"]').count()) > 0) {
      await page.keyboard.press('Control+S');
    }
    return (await toast.count()) > 0 ? { applied: false, message: await toast.first().innerText() } : undefined;
  });
  after = lines('sample.py');
  await shot('4-rewrite-command');
  check(
    'rewrite_command',
    Boolean(answer) && after.slice(-3).join('\n') === before.slice(-3).join('\n'),
    { line1_before: before[0], answer, after },
  );

  // 6. Toggle Suggestions flips infill.enable; the status bar follows
  await runCommand('Infill: Toggle Suggestions');
  const off = await waitFor('off', 10000, async () => (await item.locator('.codicon-circle-slash').count()) > 0);
  await runCommand('Infill: Toggle Suggestions');
  const on = await waitFor('on', 10000, async () => (await item.locator('.codicon-sparkle').count()) > 0);
  check('toggle_suggestions', Boolean(off && on), { off: Boolean(off), on: Boolean(on) });

  // 7. Restart Server: the status bar goes back to ready
  await runCommand('Infill: Restart Server');
  const restarted = await waitFor('restart', 60000, async () => (await item.locator('.codicon-sparkle').count()) > 0);
  check('restart_server', Boolean(restarted), {});

  // 8. against the scripted server: no ghost text while typing in a comment, one when asked
  // for ("Trigger Inline Suggestion", Alt+\\); accept a word of it (Ctrl+Right), then the rest (Tab); the next line's
  // suggestion is there once the line is accepted, and Tab takes it too
  if (opts.scripted) {
    // a command of its own (it ignores the log arguments the client passes)
    const command = JSON.parse(opts.scripted).map((a) => `'${a}'`).join(' ');
    const wrapper = path.join(run, 'scripted-lsp');
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec ${command} '${JSON.stringify([ANSWER])}'\n`, { mode: 0o755 });
    await setServerPath(wrapper);
    const sparkle = async () => (await item.locator('.codicon-sparkle').count()) > 0;
    const restarting = await waitFor('restart', 20000, async () => !(await sparkle()));
    const back = await waitFor('scripted ready', 60000, sparkle);
    await page.keyboard.press('Escape'); // the Settings editor, a modal here, closes
    await page.waitForSelector('.settings-editor', { state: 'hidden', timeout: 10000 });
    check('scripted_server', Boolean(restarting) && Boolean(back), {});
    await openFile('gated.py');
    const ghostShown = () => ghost.count().then((n) => n > 0);
    await goToLine(3);
    await page.keyboard.press('End');
    await page.keyboard.type(' of the values', { delay: 50 });
    const inComment = await waitFor('ghost text in a comment', 3000, ghostShown);
    await askForSuggestion();
    const asked = await waitFor('ghost text when asked', 10000, ghostShown);
    const shownText = asked ? (await ghost.allInnerTexts()).join('').replace(/\u00a0/g, ' ') : '';
    await shot('8-asked-in-comment');
    check('quiet_in_comments', !inComment && shownText.includes(ANSWER), { typing: Boolean(inComment), asked: shownText });
    await page.keyboard.press('Escape');

    await goToLine(4);
    await page.keyboard.press('End');
    await askForSuggestion();
    const offered = await waitFor('ghost text', 10000, ghostShown);
    await page.keyboard.press('Control+ArrowRight'); // editor.action.inlineSuggest.acceptNextWord
    await page.keyboard.press('Escape');
    const oneWord = (await save('gated.py', GATED.split('\n')))?.[3] ?? '';
    await askForSuggestion(); // the rest, from the server at once
    const rest = await waitFor('the rest', 10000, ghostShown);
    await page.keyboard.press('Tab');
    const next = await waitFor('the next line', 10000, ghostShown);
    await shot('8-next-line');
    await page.keyboard.press('Tab');
    const accepted = await save('gated.py', lines('gated.py'));
    const want = ['    avg = ' + ANSWER, ANSWER, '    return avg'];
    check(
      'partial_accept_and_next_line',
      Boolean(offered) &&
        oneWord.startsWith('    avg = total') &&
        oneWord.length < want[0].length &&
        Boolean(rest) &&
        Boolean(next) &&
        accepted?.slice(3, 6).join('\n') === want.join('\n'),
      { one_word: oneWord, rest: Boolean(rest), next: Boolean(next), disk: accepted },
    );

    // saving a file with a hole marker fills it (willSaveWaitUntil); the random model's
    // fills need not parse there (one that does not is left out), the scripted one does
    await openFile('holes.py');
    const t = Date.now();
    extraSaves = 0;
    const filled = await save('holes.py', HOLES.split('\n'));
    await shot('8-fill-on-save');
    const original = HOLES.split('\n');
    check(
      'fill_on_save',
      Boolean(filled) &&
        !filled.some((l) => l.includes('<fill>')) &&
        filled.slice(0, 2).join('\n') === original.slice(0, 2).join('\n') &&
        filled.at(-2) === original.at(-2),
      // saves > 0: the fill missed the save deadline and came as an edit right after
      { save_ms: Date.now() - t, saves_after: extraSaves, disk: filled },
    );
  }

  // 9. a server command that does not exist: an error that says how to fix it
  await setServerPath('/nonexistent/infill-lsp');
  const startError = page.locator('.notification-list-item-message', { hasText: 'could not start' });
  const said = await waitFor('start error', 20000, async () => (await startError.count()) > 0);
  await shot('9-start-error');
  check('start_error', Boolean(said) && (await item.locator('.codicon-error').count()) > 0, {
    message: said ? await startError.first().innerText() : undefined,
  });
  summary.ok = true;
} catch (err) {
  summary.ok = false;
  summary.error = String(err?.stack ?? err);
  if (page) {
    await shot('failure').catch(() => {});
    summary.notifications = await page
      .locator('.notification-list-item-message')
      .allInnerTexts()
      .catch(() => []);
  }
} finally {
  summary.total_ms = since();
  summary.shots = shots;
  await browser?.close().catch(() => {});
  try {
    process.kill(-server.pid, 'SIGTERM');
  } catch {
    // already gone
  }
  console.log(JSON.stringify(summary, null, 2));
  process.exitCode = summary.ok ? 0 : 1;
}
