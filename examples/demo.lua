-- make demo: a writer and a reader process talking through shared memory.
--   reader.lua makes a message queue (key from shm.ftok) and blocks in pop;
--   writer.lua attaches, sends the lines it reads, then "quit";
--   stat() shows nattch rising and falling.
-- Then two counters.lua processes share a shm.dict: counters moved with incr
-- and a cached entry that expires.  Then two guard.lua processes guard a
-- segment with a semaphore (undo = true); the holder is killed with kill -9
-- while it holds it, and the waiter gets it back.  Everything is removed at
-- the end.
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
  -- (the shell's own stderr is quiet: a killed child is no news, its status says it)
  local p = assert(io.popen("exec 3>&2 2>/dev/null; (exec " .. table.concat(cmd, " ") .. " 2>&3); echo $? > "
    .. q(status), "w"))
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

-- The dict scenario: two processes count into one dict at once.
local name = string.format("/lshm-demo-%d", math.floor(os.time() % 100000))
local d = assert(shm.dict.create(name, 1024 * 1024))
print(string.format("demo: made %s", tostring(d)))
io.stdout:flush()
local counters = { start("counters.lua", name, "a"), start("counters.lua", name, "b") }
for _, c in ipairs(counters) do -- (their standard input: nothing to say)
  if not finish(c) then ok = false end
end
print(string.format("demo: hits = %d (a: %d, b: %d): no increment lost", d:get("hits"),
  d:get("hits:a"), d:get("hits:b")))
local greeting = d:get("greeting")
print(string.format("demo: cached %q, ttl %.2f s", tostring(greeting), d:ttl("greeting") or -1))
local timer = assert(shm.create(shm.PRIVATE, 8)) -- a futex wait nobody notifies: 0.6 s
timer:remove()
timer:wait(0, 0, 0.6)
timer:detach()
local stale, _, expired = d:get_stale("greeting")
print(string.format("demo: 0.6 s later get gives %s; get_stale gives %q, stale = %s", tostring(d:get("greeting")),
  tostring(stale), tostring(expired)))
if d:get("hits") ~= 2000 or d:get("greeting") ~= nil or not greeting then ok = false end
d:remove()
d:detach()

-- The semaphore scenario: a lock (System V, value 1) guarding a segment.
local skey = assert(shm.ftok(path, "S"))
local lock = assert(shm.sem.create(skey, 1))
local guarded = assert(shm.create(skey, 64))
print(string.format("demo: %s guards %s", tostring(lock), tostring(guarded)))
io.stdout:flush()
local holder = start("guard.lua", path, "holder")
while guarded:load(56) == 0 do guarded:wait(56, 0, 10) end -- its pid, once it holds the lock
local pid = guarded:load(56)
local waiter = start("guard.lua", path, "waiter")
for _ = 1, 1000 do -- until the waiter sleeps in acquire (ncnt: processes waiting)
  if lock:stat().ncnt > 0 then break end
  guarded:wait(48, 0, 0.01) -- (a futex wait nobody notifies: 10 ms)
end
print(string.format("demo: kill -9 %d while it holds the lock (value %d)", pid, lock.value))
io.stdout:flush()
os.execute("kill -9 " .. pid)
finish(holder)                              -- (killed: its status is not 0)
if not finish(waiter) then ok = false end
print(string.format("demo: value back to %d; the segment says %q", lock.value,
  guarded:read(0, 32):match("^[^%z]*")))
if lock.value ~= 1 then ok = false end
lock:remove()
guarded:remove()
guarded:detach()
if shm.sem.open(skey) then
  print(string.format("demo: semaphore 0x%08x is still there!", skey))
  ok = false
end

os.remove(path)
if shm.open(name) then
  print("demo: " .. name .. " is still there!")
  ok = false
end
for _, key in ipairs(keys) do
  local left = shm.open(key)
  if left then
    print(string.format("demo: 0x%08x is still there!", key))
    left:detach()
    ok = false
  end
end
if ok then print("demo: ipcs -m, ipcs -s and /dev/shm hold nothing of ours: everything was removed") end
os.exit(ok and 0 or 1)
