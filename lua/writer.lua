-- writer.lua KEY FIFO: the seeds' writer done right. Creates the segment
-- (0600, fails if it exists), writes a message, waits on a FIFO for the
-- reader, then removes the segment.
local shm = require "shm"

local key, fifo = tonumber(arg[1]), arg[2]
local function say(fmt, ...) print(string.format("writer: " .. fmt, ...)) io.stdout:flush() end

local seg <close>, msg = shm.create(key, 4096)
if not seg then
  io.stderr:write("writer: ", msg, "\n")
  os.exit(1)
end
say("created %s", tostring(seg))
local text = "hello from the writer, pid " .. io.open("/proc/self/stat"):read("n")
local nxt = seg:pack(0, "s4", text)
say("wrote %d bytes: %q", nxt, text)
say("nattch=%d, waiting for the reader", seg:stat().nattch)
io.open(fifo):read("l") -- blocks until released
say("reader gone: nattch=%d", seg:stat().nattch)
assert(seg:remove())
say("removed (marked for destruction: %s), detaching", tostring(seg:stat().removed))
