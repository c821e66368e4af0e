-- make demo: the seeds' writer/reader scenario, run for real in two processes.
-- The writer makes a segment (key from shm.ftok) and writes; a separate reader
-- attaches and reads; stat() shows nattch rising and falling; the segment is
-- removed and nothing is left in `ipcs -m`.
local shm = require "shm"

local lua = arg[-1] or "lua5.4"
local dir = arg[0]:match("^(.*)/[^/]*$") or "."

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local tmp = os.tmpname() -- the path ftok derives the key from, and a FIFO beside it
local fifo = tmp .. ".fifo"
assert(os.execute("mkfifo -m 0600 " .. q(fifo)))
local key = assert(shm.ftok(tmp, "L"))
print(string.format("demo: key 0x%08x from shm.ftok(%q, 'L')", key, tmp))

local function start(script, ...)
  local args = { lua, q(dir .. "/" .. script) }
  for _, a in ipairs({ ... }) do args[#args + 1] = q(a) end
  return assert(io.popen(table.concat(args, " "), "r"))
end

local ok = true
local function relay(p, upto)
  for line in p:lines() do
    print(line)
    if upto and line:find(upto, 1, true) then return end
  end
  local _, _, rc = p:close()
  if rc ~= 0 then ok = false end
end

local writer = start("writer.lua", key, fifo)
relay(writer, "waiting for the reader") -- the writer has created and written
relay(start("reader.lua", key))           -- the reader attaches, reads, detaches
local f = assert(io.open(fifo, "w"))      -- release the writer
f:write("reader done\n")
f:close()
relay(writer)

os.remove(fifo)
os.remove(tmp)
local left = shm.open(key)
if left then
  print("demo: the segment is still there!")
  left:detach()
  ok = false
else
  print(string.format("demo: ipcs -m has no segment with key 0x%08x; done", key))
end
os.exit(ok and 0 or 1)
