-- Shared by the benchmark scripts: a monotonic clock, the messages, medians.
local M = {}

local ok, system = pcall(require, "system") -- lua-system, installed with busted
if ok and system.monotime then
  M.now = system.monotime
else
  io.stderr:write("bench: lua-system not found, timing with os.clock (CPU time)\n")
  M.now = os.clock
end

--- 1024 distinct messages of `size` bytes: a 4-byte index, then a fill byte
-- that depends on it.  Writers send messages[i % 1024] as message i; readers
-- compare every byte, so a lost, duplicated, reordered or torn message shows.
function M.messages(size)
  local t = {}
  for i = 0, 1023 do
    t[i] = string.format("%04d", i) .. string.rep(string.char(32 + i % 90), size - 4)
  end
  return t
end

function M.median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

--- The median of field i (default 1) of the values measured for case `name`
-- (cases[name].values: one array of numbers per round); nil if not measured.
function M.case_median(cases, name, i)
  local c = cases[name]
  if not c then return nil end
  local xs = {}
  for r, v in ipairs(c.values) do xs[r] = v[i or 1] end
  return M.median(xs)
end

--- Print a report's lines, and (unless quick) write them to `path`.
function M.report(lines, path, quick)
  local report = table.concat(lines, "\n") .. "\n"
  io.write(report)
  io.stdout:flush()
  if quick then return end
  local f = assert(io.open(path, "w"))
  f:write(report)
  f:close()
  io.stderr:write("bench: written to " .. path .. "\n")
end

--- A string quoted for the shell.
function M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- A command's output (stdout and stderr) and whether it succeeded (as far
-- as the Lua version tells: 5.1 and LuaJIT's pipe:close() does not).
function M.sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local status = p:close()
  return out, status == true or status == 0
end

--- os.execute's success, whatever the Lua version (5.1 returns the status).
function M.exec(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

return M
