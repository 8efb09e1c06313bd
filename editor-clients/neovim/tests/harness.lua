-- What the headless drivers (e2e.lua, scripted.lua) share: a coroutine that yields to the
-- event loop between checks, so keys fed with nvim_feedkeys are processed as if typed and
-- LSP replies arrive, and a JSON report written when it ends.
--
-- A driver loads it relative to its own path:
--   local harness = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/harness.lua')

local M = {}
local started = vim.uv.hrtime()
local co
local finish

--- Milliseconds since this harness was loaded.
function M.ms()
  return math.floor((vim.uv.hrtime() - started) / 1e6)
end

local function resume()
  local ok, err = coroutine.resume(co)
  if not ok then
    finish(debug.traceback(co, err))
  end
end

--- Yield to the event loop for `delay` ms (only inside `M.run`'s body).
function M.sleep(delay)
  vim.defer_fn(resume, delay)
  coroutine.yield()
end

--- Poll `cond` every 20 ms until true or `timeout` ms pass; returns whether it became true.
function M.wait_for(timeout, cond)
  local deadline = M.ms() + timeout
  while not cond() do
    if M.ms() > deadline then
      return false
    end
    M.sleep(20)
  end
  return true
end

function M.feed(keys)
  vim.api.nvim_feedkeys(vim.keycode(keys), 'mt', false)
end

function M.lines(buf)
  return vim.api.nvim_buf_get_lines(buf or 0, 0, -1, false)
end

--- Stop every LSP client and wait up to `timeout` ms for them to exit; returns whether
--- they did. Neovim 0.11 quits without waiting for the reply to `shutdown`.
function M.stop_clients(timeout)
  for _, client in ipairs(vim.lsp.get_clients()) do
    client:stop()
  end
  return M.wait_for(timeout, function()
    return #vim.lsp.get_clients() == 0
  end)
end

--- Run `body` in a coroutine started from the event loop. When it returns, or raises (then
--- `report.error` holds the traceback), `on_finish(report)` runs if given, `report` is
--- written as JSON to `path`, and Neovim quits.
function M.run(report, path, body, on_finish)
  finish = function(err)
    report.error = err
    if on_finish then
      on_finish(report)
    end
    vim.fn.writefile({ vim.json.encode(report) }, path)
    vim.cmd('qa!')
  end
  co = coroutine.create(function()
    body()
    finish(nil)
  end)
  vim.schedule(resume)
end

return M
