/**
 * Finding the server's executable before starting it, and the message shown when it is
 * missing. Pure apart from the `isExecutable` check it is given.
 */

import * as path from 'node:path';

/**
 * The executable a command names: a path is taken as is (relative to `cwd`, `~/` is
 * `home`), a bare name is looked up on `PATH`. `undefined` if there is none.
 */
export function resolveCommand(
  command: string,
  searchPath: string,
  isExecutable: (file: string) => boolean,
  cwd = '/',
  home = '',
  platform: NodeJS.Platform = process.platform,
): string | undefined {
  if (home && (command === '~' || command.startsWith('~/'))) {
    command = path.join(home, command.slice(1));
  }
  if (command.includes('/') || (platform === 'win32' && command.includes('\\'))) {
    const file = path.resolve(cwd, command);
    return isExecutable(file) ? file : undefined;
  }
  const exts = platform === 'win32' ? ['.exe', '.cmd', '.bat', ''] : [''];
  const sep = platform === 'win32' ? ';' : ':';
  for (const dir of searchPath.split(sep)) {
    if (!dir) {
      continue;
    }
    for (const ext of exts) {
      const file = path.join(dir, command + ext);
      if (isExecutable(file)) {
        return file;
      }
    }
  }
  return undefined;
}

/** The error shown when the server cannot start, with the fix. */
export function startErrorMessage(command: string, reason: string): string {
  return (
    `Infill: could not start the language server '${command}' (${reason}). ` +
    'Install it (in the project checkout: `make setup`, or `pip install -e .` into an ' +
    "environment of your own) and set 'infill.server.path' to its full path, e.g. " +
    "'/path/to/checkout/.venv/bin/infill-lsp', or put it on the PATH VS Code starts with."
  );
}
