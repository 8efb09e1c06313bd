#!/bin/sh
# Fetch Neovim 0.12 from Debian sid into DEST, for testing the ghost-text path on a Debian
# machine whose own Neovim is older. Downloads sid's neovim and its runtime libraries
# (sid's glibc included) as .debs, unpacks them with `dpkg -x` under DEST/root, and writes
# DEST/nvim, a wrapper that runs the binary through sid's own loader. Nothing outside DEST
# is touched (apt's lists and cache live in DEST/apt). Needs apt-get, dpkg and Debian's
# archive keyring. Sid moves: if a library is renamed there, adjust the list below.
set -eu
DEST=${1:?usage: get-nvim-0.12.sh DEST_DIR}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
mkdir -p "$DEST/apt/lists/partial" "$DEST/apt/cache/archives/partial" "$DEST/debs" "$DEST/root"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" > "$DEST/apt/sources.list"
O="-o Dir::Etc::sourcelist=$DEST/apt/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::Lists=$DEST/apt/lists -o Dir::Cache=$DEST/apt/cache"
# shellcheck disable=SC2086
apt-get $O update -qq
cd "$DEST/debs"
# shellcheck disable=SC2086
apt-get $O download neovim neovim-runtime libc6 libgcc-s1 lua-luv lua-lpeg libuv1t64 libutf8proc3 \
  libunibilium4 libtree-sitter0.26 libluajit-5.1-2 libluajit-5.1-common 2>&1 \
  | grep -v "^W: Download is performed unsandboxed" || true
for f in *.deb; do dpkg -x "$f" "$DEST/root"; done
# The binary looks for its bundled parsers (vimdoc for :help, lua, ...) in /usr/lib/nvim;
# here they are under DEST: show them to it through $VIMRUNTIME/parser.
[ -e "$DEST/root/usr/share/nvim/runtime/parser" ] \
  || ln -s "$DEST/root/usr/lib/nvim/parser" "$DEST/root/usr/share/nvim/runtime/parser"
cat > "$DEST/nvim" <<EOS
#!/bin/sh
R=$DEST/root
export VIMRUNTIME=\$R/usr/share/nvim/runtime
exec \$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path \$R/usr/lib/x86_64-linux-gnu \$R/usr/bin/nvim "\$@"
EOS
chmod +x "$DEST/nvim"
"$DEST/nvim" --version | head -1
