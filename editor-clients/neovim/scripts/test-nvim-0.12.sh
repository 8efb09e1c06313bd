#!/bin/sh
# Run the Neovim tests, ghost text included, against Neovim 0.12 from Debian sid.
#   editor-clients/neovim/scripts/test-nvim-0.12.sh [DEST]   (default DEST: /tmp/nvim-0.12)
# Not part of CI: it downloads from sid, which moves.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
DEST=${1:-/tmp/nvim-0.12}
[ -x "$DEST/nvim" ] || sh "$HERE/get-nvim-0.12.sh" "$DEST"
cd "$ROOT"
INFILL_NVIM_012="$DEST/nvim" "${PYTHON:-.venv/bin/python}" -m pytest -q tests/test_neovim.py
