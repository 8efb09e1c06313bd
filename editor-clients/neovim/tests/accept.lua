-- Accept driver: headless Neovim + this plugin + a server with a fixed suggestion.
--
-- Run as `nvim --headless --clean -c "luafile accept.lua"` with:
--   INFILL_E2E_PLUGIN  this plugin's directory (put on 'runtimepath')
--   INFILL_E2E_CMD     the server command, a JSON list (tests/scripted_server.py)
--   INFILL_E2E_FILE    the file to edit
--   INFILL_E2E_LINE    the line (1-based) to append to: `A`, <C-x><C-o>, <C-y>
--   INFILL_E2E_REPORT  where to write the JSON report
--
-- The plugin is set up with its defaults, so Neovim 0.11 completes through
-- vim.lsp.completion and 0.12 (ghost text on) through its omnifunc. The report holds the
-- buffer after <C-y>; the Python test compares it with the text the server suggested.

local env = vim.env
local report = { notifications = {} }
local co

local function finish(err)
  report.error = err
  vim.fn.writefile({ vim.json.encode(report) }, env.INFILL_E2E_REPORT)
  vim.cmd('qa!')
end

local function resume()
  local ok, err = coroutine.resume(co)
  if not ok then
    finish(debug.traceback(co, err))
  end
end

local function sleep(delay)
  vim.defer_fn(resume, delay)
  coroutine.yield()
end

--- Poll `cond` every 20 ms until true or `timeout` ms pass; returns whether it became true.
local function wait_for(timeout, cond)
  local deadline = vim.uv.now() + timeout
  while not cond() do
    if vim.uv.now() > deadline then
      return false
    end
    sleep(20)
  end
  return true
end

local function feed(keys)
  vim.api.nvim_feedkeys(vim.keycode(keys), 'mt', false)
end

local function lines()
  return vim.api.nvim_buf_get_lines(0, 0, -1, false)
end

vim.notify = function(message, lvl)
  table.insert(report.notifications, { message = tostring(message), level = lvl })
end

local function run()
  vim.opt.rtp:prepend(env.INFILL_E2E_PLUGIN)
  local infill = require('infill')
  infill.setup({ cmd = vim.json.decode(env.INFILL_E2E_CMD) })
  vim.cmd.edit(env.INFILL_E2E_FILE)
  report.ready = wait_for(30000, function()
    return infill.status ~= nil and infill.status.state == 'ready'
  end)
  if not report.ready then
    return
  end

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
  report.version = tostring(vim.version())
  report.errmsg = vim.v.errmsg
  report.lines = lines()
end

co = coroutine.create(function()
  run()
  for _, client in ipairs(vim.lsp.get_clients()) do
    client:stop()
  end
  wait_for(5000, function()
    return #vim.lsp.get_clients() == 0
  end)
  finish(nil)
end)
vim.schedule(resume)
