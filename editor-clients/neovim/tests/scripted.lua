-- Scripted driver: headless Neovim + this plugin + a server whose model always gives
-- the same text, so what reaches the buffer and the user can be checked exactly.
--
-- Run as `nvim --headless --clean -c "luafile scripted.lua"` with:
--   INFILL_E2E_PLUGIN  this plugin's directory (put on 'runtimepath')
--   INFILL_E2E_CMD     the server command, a JSON list (tests/scripted_server.py)
--   INFILL_E2E_FILE    the file to edit
--   INFILL_E2E_DO      what to do there:
--                      "accept": on line INFILL_E2E_LINE (1-based), `A`, <C-x><C-o>, <C-y>
--                      "fill_holes": :InfillFillHoles
--                      "ghost" (0.12+): on line INFILL_E2E_LINE, `A`, then accept the
--                      ghost text a word (<M-Right>), a line (<M-C-Right>), and the
--                      next line's suggestion that follows (<Tab>)
--                      "quiet" (0.12+): on line INFILL_E2E_LINE, `A`, and wait: was
--                      ghost text shown?
--   INFILL_E2E_SETTINGS  server settings, a JSON object (optional)
--   INFILL_E2E_REPORT  where to write the JSON report
--
-- The plugin is set up with its defaults, so Neovim 0.11 completes through
-- vim.lsp.completion and 0.12 (ghost text on) through its omnifunc. The report holds the
-- buffer after <C-y>, and the messages the user was shown; the Python test compares them
-- with what the server was scripted to answer.

local harness = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/harness.lua')
local sleep, wait_for, feed, lines = harness.sleep, harness.wait_for, harness.feed, harness.lines
local env = vim.env
local report = { said = {} }

-- What the user is told: the plugin's vim.notify and the server's window/showMessage
-- (recorded here instead of shown; 0.12's handler would pass it to vim.notify too).
vim.notify = function(message)
  table.insert(report.said, tostring(message))
end
vim.lsp.handlers['window/showMessage'] = function(_, params)
  table.insert(report.said, params.message)
end

local function accept()
  vim.api.nvim_win_set_cursor(0, { tonumber(env.INFILL_E2E_LINE), 0 })
  feed('A')
  wait_for(1000, function()
    return vim.api.nvim_get_mode().mode == 'i'
  end)
  feed('<C-x><C-o>')
  report.shown = wait_for(10000, function()
    return #vim.fn.complete_info({ 'items' }).items > 0
  end)
  local asked = lines()
  feed('<C-y>')
  wait_for(2000, function()
    return not vim.deep_equal(lines(), asked)
  end)
  sleep(200) -- anything done on CompleteDone after the word went in
  feed('<Esc>')
  wait_for(2000, function()
    return vim.api.nvim_get_mode().mode == 'n'
  end)
end

local GHOST = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')

--- The ghost text shown now, its lines joined with line breaks ('' if none).
local function ghost()
  local marks = vim.api.nvim_buf_get_extmarks(0, GHOST, 0, -1, { details = true })
  local mark = marks[1]
  if not mark then
    return ''
  end
  local function join(chunks)
    local out = {}
    for _, chunk in ipairs(chunks or {}) do
      table.insert(out, chunk[1])
    end
    return table.concat(out)
  end
  local text = { join(mark[4].virt_text) }
  for _, line in ipairs(mark[4].virt_lines or {}) do
    table.insert(text, join(line))
  end
  return table.concat(text, '\n')
end

local function insert_at_end()
  vim.api.nvim_win_set_cursor(0, { tonumber(env.INFILL_E2E_LINE), 0 })
  feed('A')
  wait_for(1000, function()
    return vim.api.nvim_get_mode().mode == 'i'
  end)
end

--- Feed `keys` once ghost text is shown; the ghost text and the buffer after them.
local function take(keys)
  local shown = wait_for(10000, function()
    return ghost() ~= ''
  end)
  local step = { ghost = ghost(), shown = shown }
  local before = lines()
  feed(keys)
  wait_for(2000, function()
    return not vim.deep_equal(lines(), before)
  end)
  step.lines = lines()
  table.insert(report.steps, step)
end

local function ghost_parts()
  report.steps = {}
  insert_at_end()
  take('<M-Right>')
  take('<M-C-Right>')
  take('<Tab>')
end

local function quiet()
  insert_at_end()
  report.shown = wait_for(1500, function()
    return ghost() ~= ''
  end)
end

local function fill_holes()
  local answered = false
  vim.api.nvim_create_autocmd('LspRequest', {
    callback = function(args)
      local request = args.data and args.data.request or {}
      if request.method == 'workspace/executeCommand' and request.type == 'complete' then
        answered = true
      end
    end,
  })
  report.said = {}
  vim.cmd('InfillFillHoles')
  report.answered = wait_for(10000, function()
    return answered
  end)
  sleep(300) -- the plugin's own message follows the answer
end

local function run()
  vim.opt.rtp:prepend(env.INFILL_E2E_PLUGIN)
  local infill = require('infill')
  local settings = env.INFILL_E2E_SETTINGS and vim.json.decode(env.INFILL_E2E_SETTINGS) or {}
  infill.setup({ cmd = vim.json.decode(env.INFILL_E2E_CMD), settings = settings })
  vim.cmd.edit(env.INFILL_E2E_FILE)
  report.ready = wait_for(30000, function()
    return infill.status ~= nil and infill.status.state == 'ready'
  end)
  if not report.ready then
    return
  end

  if env.INFILL_E2E_DO == 'fill_holes' then
    fill_holes()
  elseif env.INFILL_E2E_DO == 'ghost' then
    ghost_parts()
  elseif env.INFILL_E2E_DO == 'quiet' then
    quiet()
  else
    accept()
  end
  report.version = tostring(vim.version())
  report.errmsg = vim.v.errmsg
  report.lines = lines()
end

harness.run(report, env.INFILL_E2E_REPORT, function()
  run()
  harness.stop_clients(5000)
end)
