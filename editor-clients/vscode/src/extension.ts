/**
 * Infill for VS Code, in the shape of the LSP sample: activate -> LanguageClient -> start.
 *
 * vscode-languageclient turns the server's capabilities into ghost text (inline
 * completion), completion items, code actions and fill on save. This file adds what the
 * protocol does not: the server command, settings sent with exactly the server's keys,
 * commands, and a status-bar item fed by the server's `infill/status` notification.
 */

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from 'vscode-languageclient/node';
import { resolveCommand, startErrorMessage } from './command';
import { documentSelector, serverCommand, ServerSettings, toServerSettings } from './settings';
import { Status, statusView } from './status';

const SECTION = 'infill';
// Commands the server runs (workspace/executeCommand). The client registers these ids for
// the server, so the extension's own commands are named infill.client.*.
const SERVER_REWRITE = 'infill.rewriteSelection';
const SERVER_FILL_HOLES = 'infill.fillHoles';

let client: LanguageClient | undefined;
let lastStatus: Status | undefined;
let output: vscode.LogOutputChannel;
let statusItem: vscode.StatusBarItem;

/** Start the server and register the commands and the status-bar item. */
export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel('Infill', { log: true });
  statusItem = vscode.window.createStatusBarItem('infill.status', vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'Infill';
  statusItem.command = 'infill.client.showLog';
  showStatus(undefined);
  statusItem.show();
  context.subscriptions.push(
    output,
    statusItem,
    vscode.commands.registerCommand('infill.client.rewriteSelection', rewriteSelection),
    vscode.commands.registerCommand('infill.client.fillHoles', fillHoles),
    vscode.commands.registerCommand('infill.client.restartServer', restart),
    vscode.commands.registerCommand('infill.client.toggleSuggestions', toggleSuggestions),
    vscode.commands.registerCommand('infill.client.showLog', () => output.show(true)),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChange),
  );
  await start();
}

/** Stop the server. */
export async function deactivate(): Promise<void> {
  await stop();
}

function settings(): ServerSettings {
  const config = vscode.workspace.getConfiguration(SECTION);
  return toServerSettings((key) => config.get(key));
}

async function start(): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const { command, args } = serverCommand(config.get('server.path'), config.get('server.args'));
  const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? process.cwd();
  const file = resolveCommand(command, process.env.PATH ?? '', isExecutable, cwd, os.homedir());
  if (file === undefined) {
    failed(command, command.includes('/') ? 'no executable there' : 'not found on PATH');
    return;
  }
  const serverOptions: ServerOptions = { command: file, args, transport: TransportKind.stdio };
  const clientOptions: LanguageClientOptions = {
    documentSelector: documentSelector(config.get('languages')),
    // a function, so a restart sends the settings of the moment
    initializationOptions: () => ({ [SECTION]: settings() }),
    synchronize: { configurationSection: SECTION },
    outputChannel: output,
    middleware: {
      workspace: {
        // The section also holds client-only keys (server.*, trace.*) that the server
        // would report as unknown: send exactly its own instead.
        didChangeConfiguration: async () => {
          await client?.sendNotification(DidChangeConfigurationNotification.type, {
            settings: { [SECTION]: settings() },
          });
        },
      },
    },
  };
  const next = new LanguageClient('infill', 'Infill', serverOptions, clientOptions);
  next.onNotification('infill/status', (status: Status) => showStatus(status));
  client = next;
  try {
    await next.start();
  } catch (err) {
    client = undefined;
    failed(command, describeError(err));
  }
}

async function stop(): Promise<void> {
  const running = client;
  client = undefined;
  if (running === undefined) {
    return;
  }
  try {
    await running.stop();
  } catch (err) {
    output.appendLine(`Infill: stopping the server: ${describeError(err)}`);
  }
}

async function restart(): Promise<void> {
  await stop();
  showStatus(undefined);
  await start();
}

function onConfigurationChange(event: vscode.ConfigurationChangeEvent): void {
  if (event.affectsConfiguration('infill.server') || event.affectsConfiguration('infill.languages')) {
    void restart();
  } else if (event.affectsConfiguration('infill.enable')) {
    showStatus(lastStatus);
  }
}

function showStatus(status: Status | undefined): void {
  lastStatus = status;
  const view = statusView(status, settings().enable !== false);
  statusItem.text = view.text;
  statusItem.tooltip = view.tooltip;
  statusItem.backgroundColor = view.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
}

function failed(command: string, reason: string): void {
  const text = startErrorMessage(command, reason);
  output.appendLine(text);
  showStatus({ state: 'error', message: text });
  void vscode.window.showErrorMessage(text, 'Open Settings', 'Show Log').then((choice) => {
    if (choice === 'Open Settings') {
      void vscode.commands.executeCommand('workbench.action.openSettings', 'infill.server');
    } else if (choice === 'Show Log') {
      output.show(true);
    }
  });
}

/** The running client, or undefined after telling the user how to get one. */
function runningClient(): LanguageClient | undefined {
  if (client?.isRunning()) {
    return client;
  }
  void vscode.window.showWarningMessage('Infill: the server is not running (run "Infill: Restart Server").');
  return undefined;
}

async function rewriteSelection(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const running = runningClient();
  if (editor === undefined || running === undefined) {
    return;
  }
  if (editor.selection.isEmpty) {
    void vscode.window.showInformationMessage('Infill: select the code to rewrite first.');
    return;
  }
  const c2p = running.code2ProtocolConverter;
  const params = {
    command: SERVER_REWRITE,
    arguments: [c2p.asUri(editor.document.uri), c2p.asRange(editor.selection)],
  };
  const result = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Window, title: 'Infill: rewriting the selection' },
    () => running.sendRequest(ExecuteCommandRequest.type, params),
  );
  if (!result?.applied) {
    void vscode.window.showInformationMessage('Infill: nothing to rewrite (the model gave no usable text).');
  }
}

async function fillHoles(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const running = runningClient();
  if (editor === undefined || running === undefined) {
    return;
  }
  const params = {
    command: SERVER_FILL_HOLES,
    arguments: [running.code2ProtocolConverter.asUri(editor.document.uri)],
  };
  const result = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Window, title: 'Infill: filling holes' },
    () => running.sendRequest(ExecuteCommandRequest.type, params),
  );
  const marker = settings().holeMarker;
  if (result?.applied) {
    void vscode.window.showInformationMessage(`Infill: filled ${result.holes} hole(s).`);
  } else if (!result?.left) {
    // holes left as they were (`left`) the server has already named, with why
    void vscode.window.showInformationMessage(
      `Infill: no hole filled (no '${marker}' comment, or nothing usable from the model).`,
    );
  }
}

async function toggleSuggestions(): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const enable = config.get<boolean>('enable') === false;
  // change it where it is set, so a workspace value does not hide the change
  const where = config.inspect<boolean>('enable');
  const target =
    where?.workspaceFolderValue !== undefined
      ? vscode.ConfigurationTarget.WorkspaceFolder
      : where?.workspaceValue !== undefined
        ? vscode.ConfigurationTarget.Workspace
        : vscode.ConfigurationTarget.Global;
  await config.update('enable', enable, target);
  vscode.window.setStatusBarMessage(`Infill: suggestions ${enable ? 'on' : 'off'}`, 3000);
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
