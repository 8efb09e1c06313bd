--- Neovim client for `infill-lsp`, the language server that fills code in the middle.
---
--- `require('infill').setup(opts)` configures and enables the `infill` LSP config
--- (lsp/infill.lua), turns on ghost text where Neovim has it (0.12+: vim.lsp.inline_completion),
--- and adds keymaps and user commands. On 0.11 it falls back to completion items and code
--- actions; on anything older it says what is missing, once, and does nothing else.
local M = {}

local NAME = 'infill'

--- Defaults of `setup()`; see `:help infill-setup`.
M.defaults = {
  cmd = nil, -- server command; nil keeps lsp/infill.lua's { 'infill-lsp' }
  filetypes = nil, -- nil keeps lsp/infill.lua's list
  settings = {}, -- server settings, camelCase, see `:help infill-settings`
  ghost_text = true, -- 0.12+: vim.lsp.inline_completion
  -- items enter the buffer only on <C-y> (ask_before_inserting); on 0.11 also
  -- vim.lsp.completion. false: leave completion and 'completeopt' alone
  completion = { autotrigger = false },
  keymaps = {
    accept = '<Tab>', -- insert: accept the ghost text, else the key itself
    accept_word = '<M-Right>', -- insert: accept the ghost text's next word, else the key
    accept_line = '<M-C-Right>', -- insert: accept the ghost text's next line, else the key
    next = '<M-]>', -- insert: next suggestion
    prev = '<M-[>', -- insert: previous suggestion
    rewrite = '<leader>ir', -- visual: rewrite the selection
    fill_holes = '<leader>if', -- normal: fill every hole marker in the buffer
  },
}

--- The last `infill/status` the server sent: {state, message, model, device, latencyMs}.
M.status = nil

local options = vim.deepcopy(M.defaults)
local said = {}

local function level(name)
  return vim.log and vim.log.levels and vim.log.levels[name] or nil
end

--- vim.notify, at most once per key for the session.
local function say_once(key, message, lvl)
  if said[key] then
    return
  end
  said[key] = true
  pcall(vim.notify, message, lvl or level('INFO'), { title = 'infill' })
end

local function has(version)
  return vim.fn.has('nvim-' .. version) == 1
end

--- Whether this Neovim shows LSP inline completions as ghost text (0.12+).
function M.has_ghost_text()
  if not has('0.12') then
    return false
  end
  local ok, module = pcall(function()
    return vim.lsp.inline_completion
  end)
  return ok and type(module) == 'table' and type(module.enable) == 'function'
end

--- Short status text for a status line, e.g. "infill: ready 120 ms".
---@param status? table an `infill/status` payload (default: the last one received)
---@return string
function M.status_text(status)
  status = status or M.status
  if type(status) ~= 'table' then
    return ''
  end
  local text = 'infill: ' .. tostring(status.state or '?')
  if status.state == 'ready' and type(status.latencyMs) == 'number' then
    text = text .. (' %d ms'):format(math.floor(status.latencyMs + 0.5))
  end
  return text
end

--- Long status text for `:InfillStatus`, with model, device and any error message.
---@param status table an `infill/status` payload
---@return string
function M.describe(status)
  local parts = { M.status_text(status) }
  if type(status.model) == 'string' then
    table.insert(parts, 'model ' .. status.model)
  end
  if type(status.device) == 'string' then
    table.insert(parts, status.device)
  end
  if type(status.message) == 'string' and status.message ~= '' then
    table.insert(parts, status.message)
  end
  return table.concat(parts, ' | ')
end

--- For 'statusline': `%{v:lua.require'infill'.statusline()}`.
function M.statusline()
  return M.status_text()
end

local function on_status(_, params)
  M.status = params
  pcall(vim.api.nvim_exec_autocmds, 'User', {
    pattern = 'InfillStatus',
    data = params,
    modeline = false,
  })
  pcall(vim.cmd, 'redrawstatus')
end

local function client_for(bufnr)
  local client = vim.lsp.get_clients({ bufnr = bufnr, name = NAME })[1]
  if not client then
    local hint = 'infill: no infill-lsp attached to this buffer (see :checkhealth vim.lsp)'
    vim.notify(hint, level('WARN'))
  end
  return client
end

local function line_at(bufnr, row)
  return vim.api.nvim_buf_get_lines(bufnr, row - 1, row, false)[1] or ''
end

--- The LSP range of lines l1..l2 (1-based), or of the charwise visual selection when the
--- last selection was charwise and spans exactly those lines.
local function selection_range(bufnr, l1, l2, encoding)
  local s = vim.api.nvim_buf_get_mark(bufnr, '<')
  local e = vim.api.nvim_buf_get_mark(bufnr, '>')
  local first, last = line_at(bufnr, l1), line_at(bufnr, l2)
  local start_byte, end_byte = 0, #last
  if vim.fn.visualmode() == 'v' and s[1] == l1 and e[1] == l2 then
    start_byte = math.min(s[2], #first)
    -- '> marks the first byte of the last selected character: take all of its bytes
    local tail = vim.o.selection == 'exclusive' and 0 or #vim.fn.strpart(last, e[2], 1, true)
    end_byte = math.min(e[2] + tail, #last)
  end
  return {
    start = { line = l1 - 1, character = vim.str_utfindex(first, encoding, start_byte, false) },
    ['end'] = { line = l2 - 1, character = vim.str_utfindex(last, encoding, end_byte, false) },
  }
end

local function execute(bufnr, command, arguments, on_result)
  local client = client_for(bufnr)
  if not client then
    return
  end
  local lsp_command = { title = command, command = command, arguments = arguments }
  client:exec_cmd(lsp_command, { bufnr = bufnr }, function(err, result)
    if err then
      local why = err.message or vim.inspect(err)
      vim.notify(('infill: %s failed: %s'):format(command, why), level('ERROR'))
    elseif on_result then
      on_result(result or {})
    end
  end)
end

--- Rewrite lines l1..l2 (or the charwise selection on them) with the model.
---@param bufnr? integer
---@param l1 integer first line, 1-based
---@param l2 integer last line, 1-based
function M.rewrite(bufnr, l1, l2)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local client = client_for(bufnr)
  if not client then
    return
  end
  local range = selection_range(bufnr, l1, l2, client.offset_encoding)
  execute(bufnr, 'infill.rewriteSelection', { vim.uri_from_bufnr(bufnr), range }, function(result)
    if not result.applied then
      vim.notify('infill: nothing to rewrite (the model gave no usable text)', level('INFO'))
    end
  end)
end

--- Fill every hole marker (e.g. `# <fill>`) of a buffer.
---@param bufnr? integer
function M.fill_holes(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  execute(bufnr, 'infill.fillHoles', { vim.uri_from_bufnr(bufnr) }, function(result)
    if result.applied then
      vim.notify(('infill: filled %d hole(s)'):format(result.holes or 0), level('INFO'))
    elseif (tonumber(result.left) or 0) == 0 then
      -- holes left as they were (`left`) the server has already named, with why
      local why = 'infill: no hole filled (no marker, or nothing usable from the model)'
      vim.notify(why, level('INFO'))
    end
  end)
end

--- Ask the server for its state and show it.
---@param bufnr? integer
function M.show_status(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  execute(bufnr, 'infill.status', {}, function(result)
    M.status = result
    vim.notify(M.describe(result), level('INFO'))
  end)
end

local function is_rewrite(action)
  return action.kind == 'refactor.rewrite'
    and type(action.data) == 'table'
    and action.data.kind == 'rewrite'
end

--- The "Rewrite selection (infill)" code action on the visual selection, applied directly.
function M.rewrite_action()
  -- code_action() reads the selection now; leave visual mode after, as other actions do
  vim.lsp.buf.code_action({
    apply = true,
    context = { only = { 'refactor.rewrite' } },
    filter = is_rewrite,
  })
  if vim.api.nvim_get_mode().mode:match('^[vV\22]') then
    vim.api.nvim_feedkeys(vim.keycode('<Esc>'), 'nx', false)
  end
end

--- Turn suggestions on or off (the server's `enable` setting) for every infill client.
function M.toggle()
  local enable = options.settings.enable == false
  options.settings.enable = enable
  vim.lsp.config(NAME, { settings = { infill = { enable = enable } } })
  for _, client in ipairs(vim.lsp.get_clients({ name = NAME })) do
    local change = { infill = { enable = enable } }
    client.settings = vim.tbl_deep_extend('force', client.settings or {}, change)
    client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  end
  vim.notify('infill: suggestions ' .. (enable and 'on' or 'off'), level('INFO'))
end

--- The part of a suggestion that one accept-word or accept-line takes: its spaces, then
--- one word (a run of letters, digits and `_`, or of other non-space characters); or
--- its first line (a suggestion that starts with a line break: that and the next line).
---@param text string the suggestion's text
---@param unit 'word'|'line'
---@return string
function M.next_part(text, unit)
  if unit == 'line' then
    return text:match('^\r?\n[^\n]*') or text:match('^[^\n]*')
  end
  local space = text:match('^%s*')
  local rest = text:sub(#space + 1)
  local word = rest:match('^[%w_]+') or rest:match('^[^%w_%s]+') or ''
  return space .. word
end

--- Accept the next word or line of the ghost text in `bufnr`; false if none is shown.
--- The server answers the next request at the cursor with the rest of the suggestion.
---@param bufnr integer
---@param unit 'word'|'line'
---@return boolean
function M.accept_part(bufnr, unit)
  return vim.lsp.inline_completion.get({
    bufnr = bufnr,
    on_accept = function(item)
      if type(item.insert_text) ~= 'string' then
        return item -- a snippet goes in whole
      end
      item.insert_text = M.next_part(item.insert_text, unit)
      return item
    end,
  })
end

local function map(mode, lhs, rhs, bufnr, desc, expr)
  if type(lhs) == 'string' and lhs ~= '' then
    local opts = { buffer = bufnr, desc = desc, expr = expr or false, silent = true }
    vim.keymap.set(mode, lhs, rhs, opts)
  end
end

-- 'completeopt' flags that put text in the buffer before CTRL-Y accepts it.
local INSERTS_UNASKED = { longest = true, preinsert = true }

--- Insert-mode completion in `bufnr` shows even a lone item in the menu and inserts
--- nothing until it is accepted (CTRL-Y): 'completeopt' gains menuone and noinsert, and
--- loses longest and preinsert, for this buffer only. With the default "menu,popup", a
--- single item (the server sends one) would go straight into the buffer.
local function ask_before_inserting(bufnr)
  local current = vim.bo[bufnr].completeopt
  if current == '' then
    current = vim.go.completeopt
  end
  local flags = vim.tbl_filter(function(flag)
    return flag ~= '' and not INSERTS_UNASKED[flag]
  end, vim.split(current, ','))
  for _, flag in ipairs({ 'menuone', 'noinsert' }) do
    if not vim.tbl_contains(flags, flag) then
      table.insert(flags, flag)
    end
  end
  vim.bo[bufnr].completeopt = table.concat(flags, ',')
end

local function on_attach(client, bufnr)
  local keys = options.keymaps or {}
  if options.completion then
    ask_before_inserting(bufnr)
  end
  if options.ghost_text and M.has_ghost_text() then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    map('i', keys.accept, function()
      if not vim.lsp.inline_completion.get({ bufnr = bufnr }) then
        return keys.accept
      end
    end, bufnr, 'infill: accept the suggestion', true)
    for unit, lhs in pairs({ word = keys.accept_word, line = keys.accept_line }) do
      map('i', lhs, function()
        if not M.accept_part(bufnr, unit) then
          return lhs
        end
      end, bufnr, 'infill: accept the next ' .. unit .. ' of the suggestion', true)
    end
    map('i', keys.next, function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = 1 })
    end, bufnr, 'infill: next suggestion')
    map('i', keys.prev, function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = -1 })
    end, bufnr, 'infill: previous suggestion')
  else
    if options.ghost_text then
      say_once(
        'ghost',
        'infill: ghost text needs Neovim 0.12+; on this version use completion items '
          .. '(<C-x><C-o>) and code actions (:InfillRewrite, :InfillFillHoles)'
      )
    end
    if options.completion and vim.lsp.completion then
      local autotrigger = type(options.completion) == 'table' and options.completion.autotrigger
      vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = autotrigger or false })
    end
  end
  map('x', keys.rewrite, M.rewrite_action, bufnr, 'infill: rewrite the selection')
  map('n', keys.fill_holes, function()
    M.fill_holes(bufnr)
  end, bufnr, 'infill: fill hole markers')
end

local function create_commands()
  local command = vim.api.nvim_create_user_command
  command('InfillRewrite', function(c)
    M.rewrite(0, c.line1, c.line2)
  end, { range = true, desc = 'infill: rewrite the selected lines (or the current line)' })
  command('InfillFillHoles', function()
    M.fill_holes(0)
  end, { desc = 'infill: fill every hole marker in the buffer' })
  command('InfillStatus', function()
    M.show_status(0)
  end, { desc = 'infill: show model state, device and last latency' })
  command('InfillToggle', M.toggle, { desc = 'infill: turn suggestions on or off' })
end

--- Configure and enable the `infill` language server; see `:help infill-setup`.
---@param opts? table overrides of `M.defaults`
---@return boolean started whether the client was enabled
function M.setup(opts)
  if not has('0.11') then
    local why = 'infill: needs Neovim 0.11+ (vim.lsp.config); nothing was set up'
    say_once('version', why, level('WARN'))
    return false
  end
  options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  local config = {
    cmd = options.cmd,
    filetypes = options.filetypes,
    handlers = { ['infill/status'] = on_status },
  }
  if next(options.settings) then -- an empty table would be sent as a JSON array
    config.settings = { infill = options.settings }
    config.init_options = { infill = options.settings }
  end
  vim.lsp.config(NAME, config)

  local cmd = vim.lsp.config[NAME] and vim.lsp.config[NAME].cmd
  if type(cmd) == 'table' and cmd[1] and vim.fn.executable(cmd[1]) == 0 then
    local fix = "infill: server command '%s' not found. Install the project so `infill-lsp` "
      .. 'is on PATH (`pip install -e .` in its checkout, or `make setup` and add .venv/bin '
      .. "to PATH), or pass cmd = { '/path/to/infill-lsp' } to require('infill').setup()"
    say_once('cmd', fix:format(cmd[1]), level('ERROR'))
    return false
  end

  local group = vim.api.nvim_create_augroup('infill', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == NAME then
        on_attach(client, args.buf)
      end
    end,
  })
  create_commands()
  vim.lsp.enable(NAME)
  return true
end

return M
