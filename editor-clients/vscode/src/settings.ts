/**
 * The server's settings (section `infill`) as the extension sends them, and the server
 * command. Pure: no `vscode` import, so unit tests run under plain node.
 */

/** Every setting `infill-lsp` reads, one-to-one with `infill.*` in package.json. */
export interface ServerSettings {
  model: string;
  device: string;
  maxSteps: number;
  spanSize: number;
  holeMarker: string;
  saveDeadlineMs: number;
  fillOnSave: boolean;
  enable: boolean;
  languages: string[];
  disabledLanguages: string[];
  inCommentsAndStrings: boolean;
  maxLineSuffix: number;
  nextSuggestion: boolean;
  crossFile: boolean;
  crossFileTokens: number;
  crossFileSources: string[];
  backend: string;
}

/** The server's own defaults. */
export const DEFAULTS: Readonly<ServerSettings> = Object.freeze({
  model: '',
  device: 'auto',
  maxSteps: 0,
  spanSize: 0,
  holeMarker: '<fill>',
  saveDeadlineMs: 800,
  fillOnSave: true,
  enable: true,
  languages: ['*'],
  disabledLanguages: [],
  inCommentsAndStrings: false,
  maxLineSuffix: 8,
  nextSuggestion: true,
  crossFile: false,
  crossFileTokens: 192,
  crossFileSources: ['recent', 'imports'],
  backend: 'local',
});

/** Reads one key of the `infill` section, e.g. `k => workspace.getConfiguration('infill').get(k)`. */
export type Read = (key: string) => unknown;

/**
 * The `infill` section to send to the server: exactly its keys, defaults where unset.
 * Values pass through unchecked: the server validates them once and reports bad ones.
 */
export function toServerSettings(read: Read): ServerSettings {
  const result: Record<string, unknown> = {};
  for (const [key, fallback] of Object.entries(DEFAULTS)) {
    const value = read(key);
    result[key] = value === undefined || value === null ? fallback : value;
  }
  return result as unknown as ServerSettings;
}

/** A document filter as vscode-languageclient takes it. */
export interface DocumentFilter {
  scheme: string;
  language?: string;
}

/** Which documents the client syncs: every file for `*`, else the listed languages. */
export function documentSelector(languages: unknown): DocumentFilter[] {
  const ids = Array.isArray(languages) ? languages.filter((x) => typeof x === 'string') : [];
  if (ids.length === 0 || ids.includes('*')) {
    return [{ scheme: 'file' }, { scheme: 'untitled' }];
  }
  return ids.flatMap((language) => [
    { scheme: 'file', language },
    { scheme: 'untitled', language },
  ]);
}

/** The server command from `infill.server.path` and `infill.server.args`. */
export function serverCommand(path: unknown, args: unknown): { command: string; args: string[] } {
  const command = typeof path === 'string' && path.trim() !== '' ? path.trim() : 'infill-lsp';
  const list = Array.isArray(args) ? args.filter((x): x is string => typeof x === 'string') : [];
  return { command, args: list };
}
