-- Item 2: per-call cost of small operations, and the interpreter's floor
-- (string.sub of a 64-byte string) in the same loop.
-- usage: small.lua OP ITER   -> nanoseconds per call
local shm = require "shm"
local lib = require "lib"

local op, iter = arg[1], tonumber(arg[2])
local seg = assert(shm.create(shm.PRIVATE, 4096))
seg:remove()
local s64 = string.rep("s", 64)
local ops = {
  floor = function(n) for _ = 1, n do local _ = s64:sub(1, 64) end end,
  read64 = function(n) for _ = 1, n do local _ = seg:read(0, 64) end end,
  write64 = function(n) for _ = 1, n do seg:write(s64, 0) end end,
  pack = function(n) for i = 1, n do seg:pack(0, "j", i) end end,
  unpack = function(n) for _ = 1, n do local _ = seg:unpack(0, "j") end end,
  load = function(n) for _ = 1, n do local _ = seg:load(8) end end,
  add = function(n) for _ = 1, n do seg:add(8, 1) end end,
}
local f = assert(ops[op], "unknown op " .. tostring(op))
f(math.floor(iter / 10) + 1) -- warm up
local t0 = lib.now()
f(iter)
local t1 = lib.now()
seg:detach()
print(string.format("%.3f", (t1 - t0) * 1e9 / iter))
