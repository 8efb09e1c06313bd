-- infill: a language server that fills code in the middle with a text-diffusion model.
--
-- With this directory on 'runtimepath', `vim.lsp.enable('infill')` (Neovim 0.11+) starts
-- `infill-lsp` for the filetypes below. `require('infill').setup()` does that too, and adds
-- ghost text (0.12+), keymaps and commands; see `:help infill`.
--
-- Settings go under the `infill` section, one-to-one with the server's (see `:help
-- infill-settings`). Give them twice: as `init_options`, so the first model load already
-- uses them, and as `settings`, which Neovim sends in workspace/didChangeConfiguration:
--
--   vim.lsp.config('infill', {
--     init_options = { infill = { device = 'cpu' } },
--     settings = { infill = { device = 'cpu' } },
--   })
--
-- None are set here: Neovim encodes an empty table as a JSON array, not an object.

---@type vim.lsp.Config
return {
  cmd = { 'infill-lsp' },
  -- Languages with a tree-sitter grammar in the server. It serves any other language with
  -- line-based context: add its filetype here (or `filetypes` in setup()) to try it.
  filetypes = {
    'python',
    'javascript',
    'javascriptreact',
    'typescript',
    'typescriptreact',
    'go',
    'rust',
  },
  root_markers = { 'pyproject.toml', 'setup.py', 'package.json', 'go.mod', 'Cargo.toml', '.git' },
  -- 0.12+: on quit, wait for the server to answer `shutdown` and exit (usually a few ms)
  exit_timeout = 500,
}
