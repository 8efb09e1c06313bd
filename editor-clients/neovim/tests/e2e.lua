-- End-to-end driver: headless Neovim + this plugin + the real infill-lsp.
--
-- Run as `nvim --headless --clean -c "luafile e2e.lua"` with:
--   INFILL_E2E_PLUGIN  this plugin's directory (put on 'runtimepath')
--   INFILL_E2E_CMD     the server command, a JSON list
--   INFILL_E2E_DIR     a directory holding sample.py and holes.py (see tests/test_neovim.py)
--   INFILL_E2E_REPORT  where to write the JSON report
--   INFILL_E2E_GHOST   "1" to also exercise ghost text (Neovim 0.12+)
--
-- The steps run in harness.lua's coroutine, which yields to the event loop between checks,
-- so keys fed with nvim_feedkeys are processed as if typed and LSP replies arrive. Every
-- step records what it saw in the report; the Python test makes the assertions. Any Lua
-- error ends the run with `error` set in the report.

local harness = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/harness.lua')
local ms, sleep, wait_for = harness.ms, harness.sleep, harness.wait_for
local feed, lines = harness.feed, harness.lines
local env = vim.env
local report = { steps = {}, notifications = {} }

local function step(name, fields)
  fields.at_ms = ms()
  report.steps[name] = fields
end

-- Record notifications instead of showing them (there is no UI to show them on).
vim.notify = function(message, lvl)
  table.insert(report.notifications, { message = tostring(message), level = lvl })
end

-- Record the server's window/showMessage too, then show it as Neovim does (a save under
-- :silent keeps it off the message history).
report.shown = {}
local show_message = vim.lsp.handlers['window/showMessage']
vim.lsp.handlers['window/showMessage'] = function(err, params, ctx)
  table.insert(report.shown, { type = params.type, message = params.message })
  return show_message(err, params, ctx)
end

local function count_requests(method)
  local counts = { [method] = 0 }
  vim.api.nvim_create_autocmd('LspRequest', {
    callback = function(args)
      local request = args.data and args.data.request
      if request and request.method == method and request.type == 'complete' then
        counts[method] = counts[method] + 1
      end
    end,
  })
  return counts
end

local function run()
  vim.opt.rtp:prepend(env.INFILL_E2E_PLUGIN)
  local infill = require('infill')
  local dir = env.INFILL_E2E_DIR
  local resolved = count_requests('codeAction/resolve')

  -- 1. setup, attach, model ready
  local enabled = infill.setup({
    cmd = vim.json.decode(env.INFILL_E2E_CMD),
    settings = { maxSteps = 8, saveDeadlineMs = 900 },
  })
  vim.cmd.edit(dir .. '/sample.py')
  local buf = vim.api.nvim_get_current_buf()
  local ready = wait_for(45000, function()
    return infill.status ~= nil and infill.status.state == 'ready'
  end)
  local client = vim.lsp.get_clients({ bufnr = buf, name = 'infill' })[1]
  step('ready', {
    enabled = enabled,
    ready = ready,
    attached = client ~= nil,
    status = infill.status,
    statusline = infill.statusline(),
    version = tostring(vim.version()),
    ghost_text = infill.has_ghost_text(),
    commands = vim.tbl_map(function(name)
      return vim.fn.exists(':' .. name) == 2
    end, { 'InfillRewrite', 'InfillFillHoles', 'InfillStatus', 'InfillToggle' }),
  })
  if not (ready and client) then
    return
  end

  -- 2. :InfillStatus asks the server (workspace/executeCommand infill.status)
  local before = #report.notifications
  vim.cmd('InfillStatus')
  wait_for(5000, function()
    return #report.notifications > before
  end)
  step('status_command', { message = (report.notifications[before + 1] or {}).message })

  -- 3. completion items in insert mode (<C-x><C-o>): the menu shows the item and the
  -- buffer keeps what was typed until <C-y> accepts it
  local original = lines(buf)
  vim.api.nvim_win_set_cursor(0, { 5, 0 })
  feed('o')
  wait_for(1000, function()
    return vim.api.nvim_get_mode().mode == 'i'
  end)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local typed = vim.api.nvim_get_current_line()
  feed('<C-x><C-o>')
  local shown = wait_for(10000, function()
    return #vim.fn.complete_info({ 'items' }).items > 0
  end)
  local asked = vim.api.nvim_get_current_line()
  local menu = vim.fn.pumvisible() == 1
  local info = vim.fn.complete_info({ 'selected', 'items' })
  local selected = info.items[info.selected + 1] -- what <C-y> accepts
  local edits = {}
  for _, item in ipairs(vim.fn.complete_info({ 'items' }).items) do
    local lsp_item = vim.tbl_get(item, 'user_data', 'nvim', 'lsp', 'completion_item') or {}
    table.insert(edits, {
      word = item.word,
      text_edit = lsp_item.textEdit or vim.NIL,
      format = lsp_item.insertTextFormat or vim.NIL,
      documentation = vim.tbl_get(lsp_item, 'documentation', 'value') or vim.NIL,
    })
  end
  feed('<C-y>')
  wait_for(2000, function()
    return vim.api.nvim_get_current_line() ~= asked
  end)
  local accepted = lines(buf)
  feed('<Esc>')
  wait_for(2000, function()
    return vim.api.nvim_get_mode().mode == 'n'
  end)
  step('completion', {
    shown = shown,
    cursor = { line = cursor[1] - 1, character = cursor[2] },
    items = edits,
    typed = typed,
    asked = asked,
    menu = menu,
    selected_word = selected and selected.word or vim.NIL,
    accepted = accepted,
    expandtab = vim.bo[buf].expandtab,
    shiftwidth = vim.fn.shiftwidth(),
    lines = lines(buf),
  })
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, original)

  -- 3b. typing never inserts a suggestion, even for a user who turns on Neovim's
  -- completion autotrigger on LspAttach as its docs show, with the default 'completeopt'
  -- and without setup(): the server offers no trigger characters to start it
  local completions = count_requests('textDocument/completion')
  vim.lsp.completion.enable(false, client.id, buf)
  vim.bo[buf].completeopt = ''
  vim.lsp.completion.enable(true, client.id, buf, { autotrigger = true })
  vim.api.nvim_win_set_cursor(0, { 5, 0 })
  feed('o')
  wait_for(1000, function()
    return vim.api.nvim_get_mode().mode == 'i'
  end)
  local indent = vim.api.nvim_get_current_line()
  for _, key in ipairs(vim.split('prices.get(name)', '')) do
    feed(key)
    sleep(50)
  end
  sleep(1500) -- time for a completion the typing triggered to come back
  step('autotrigger', {
    completeopt = vim.o.completeopt,
    typed = indent .. 'prices.get(name)',
    line = vim.api.nvim_get_current_line(),
    requests = completions['textDocument/completion'],
  })
  feed('<Esc>')
  wait_for(2000, function()
    return vim.api.nvim_get_mode().mode == 'n'
  end)
  vim.lsp.completion.enable(false, client.id, buf)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, original)

  -- 4. the rewrite code action, listed instantly and resolved lazily
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(buf) },
    range = { start = { line = 2, character = 0 }, ['end'] = { line = 3, character = 22 } },
    context = { diagnostics = {}, only = { 'refactor.rewrite' } },
  }
  local listed = client:request_sync('textDocument/codeAction', params, 5000, buf)
  local actions = (listed and listed.result) or {}
  local titles = vim.tbl_map(function(a)
    return { title = a.title, has_edit = a.edit ~= nil }
  end, actions)
  local direct = actions[1] and client:request_sync('codeAction/resolve', actions[1], 10000, buf)
  local has_edit = direct ~= nil and direct.result ~= nil and direct.result.edit ~= nil

  -- ... then through the plugin's visual-mode keymap (<leader>ir) on lines 3-4
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  local resolves = resolved['codeAction/resolve']
  vim.api.nvim_win_set_cursor(0, { 3, 0 })
  feed('Vj\\ir')
  local resolved_ok = wait_for(10000, function()
    return resolved['codeAction/resolve'] > resolves
  end)
  local changed = wait_for(2000, function()
    return vim.api.nvim_buf_get_changedtick(buf) ~= tick
  end)
  step('rewrite_action', {
    listed = titles,
    resolves_to_edit = has_edit,
    resolved = resolved_ok,
    changed = changed,
    mode = vim.api.nvim_get_mode().mode,
    before = original,
    lines = lines(buf),
  })
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, original)

  -- 5. :InfillRewrite on one line: workspace/executeCommand, then workspace/applyEdit
  tick = vim.api.nvim_buf_get_changedtick(buf)
  before = #report.notifications
  vim.cmd('2InfillRewrite')
  local answered = wait_for(10000, function()
    return vim.api.nvim_buf_get_changedtick(buf) ~= tick or #report.notifications > before
  end)
  step('rewrite_command', { answered = answered, before = original, lines = lines(buf) })
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, original)
  vim.cmd('silent write')

  -- 6. ghost text (0.12+): type, wait past the 200 ms debounce, accept with <Tab>
  if env.INFILL_E2E_GHOST == '1' then
    local ns = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')
    vim.api.nvim_win_set_cursor(0, { 5, 0 })
    feed('oresult = ')
    local seen = wait_for(10000, function()
      return #vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, {}) > 0
    end)
    local marks = vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
    local ghost = marks[1] and marks[1][4].virt_text or {}
    local ghost_text = table.concat(vim.tbl_map(function(chunk)
      return chunk[1]
    end, ghost))
    local typed = vim.api.nvim_get_current_line()
    feed('<Tab>')
    wait_for(2000, function()
      return vim.api.nvim_get_current_line() ~= typed
    end)
    local accepted = vim.api.nvim_get_current_line()
    feed('<Esc>')
    wait_for(2000, function()
      return vim.api.nvim_get_mode().mode == 'n'
    end)
    step('ghost_text', {
      seen = seen,
      mark_row = marks[1] and marks[1][2],
      ghost = ghost_text,
      typed = typed,
      accepted = accepted,
      left = #vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, {}),
      lines = lines(buf),
    })
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, original)
    vim.cmd('silent write')
  end

  -- 7. :w fills the hole marker (textDocument/willSaveWaitUntil); check the file on disk
  vim.cmd.edit(dir .. '/holes.py')
  local holes = vim.api.nvim_get_current_buf()
  wait_for(5000, function()
    return #vim.lsp.get_clients({ bufnr = holes, name = 'infill' }) > 0
  end)
  local t = ms()
  local said_before = #report.shown
  vim.cmd('silent write')
  local save_ms = ms() - t
  -- a fill that missed the save deadline arrives as workspace/applyEdit: save it too
  local late = wait_for(1500, function()
    return vim.bo[holes].modified
  end)
  if late then
    vim.cmd('silent write')
  end
  -- a hole left as it was is said (window/showMessage)
  if table.concat(lines(holes), '\n'):find('<fill>') then
    wait_for(1500, function()
      return #report.shown > said_before
    end)
  end
  step('fill_on_save', {
    save_ms = save_ms,
    late = late,
    shown = vim.list_slice(report.shown, said_before + 1),
    status_message = infill.status and infill.status.message or vim.NIL,
    buffer = lines(holes),
    disk = vim.fn.readfile(dir .. '/holes.py'),
  })
end

harness.run(report, env.INFILL_E2E_REPORT, function()
  run()
  -- stop the server and wait for it to exit: the test reads the server's log once Neovim
  -- is gone
  report.stopped = harness.stop_clients(5000)
end, function()
  report.total_ms = ms()
end)
