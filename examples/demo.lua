-- make demo: a writer and a reader process talking through shared memory.
--   reader.lua makes a message queue (key from shm.ftok) and blocks in pop;
--   writer.lua attaches, sends the lines it reads, then "quit";
--   stat() shows nattch rising and falling; everything is removed at the end.
local shm = require "shm"

local lua = arg[-1] or "lua5.4"
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- the path shm.ftok derives the keys from: ours, removed at the end
local path = os.tmpname()
local keys = { assert(shm.ftok(path, "Q")), assert(shm.ftok(path, "C")) }
print(string.format("demo: keys 0x%08x (queue) and 0x%08x (control) from shm.ftok(%q, ...)",
  keys[1], keys[2], path))
io.stdout:flush()

-- The reader says "ready" through a FIFO once its queue exists (opening a
-- FIFO blocks until the other end opens it: a real wait, no polling).
local fifo = path .. ".ready"
local made = os.execute("mkfifo -m 0600 " .. q(fifo))
assert(made == true or made == 0, "mkfifo failed")

-- Start a script with its standard input from us.  Its exit status goes to a
-- file: pipe:close() does not give it in Lua 5.1 and LuaJIT.
local function start(script, ...)
  local status = os.tmpname()
  local cmd = { lua, q(dir .. "/" .. script) }
  for _, a in ipairs({ ... }) do cmd[#cmd + 1] = q(a) end
  local p = assert(io.popen(table.concat(cmd, " ") .. "; echo $? > " .. q(status), "w"))
  return { p = p, status = status }
end
local function finish(child)
  child.p:close()
  local f = io.open(child.status)
  local rc = f and f:read("*n")
  if f then f:close() end
  os.remove(child.status)
  return rc == 0
end

local reader = start("reader.lua", path, fifo)
local ready = assert(io.open(fifo, "r"))
local ok = ready:read("*l") == "ready"
ready:close()
os.remove(fifo)

local writer = start("writer.lua", path)
for _, line in ipairs({
  "hello from the writer",
  "shared memory, done right",
  string.rep("a long line ", 20),
}) do
  writer.p:write(line, "\n")
end
if not finish(writer) then ok = false end

if not finish(reader) then ok = false end

os.remove(path)
for _, key in ipairs(keys) do
  local left = shm.open(key)
  if left then
    print(string.format("demo: 0x%08x is still there!", key))
    left:detach()
    ok = false
  end
end
if ok then print("demo: ipcs -m has neither key: everything was removed") end
os.exit(ok and 0 or 1)
