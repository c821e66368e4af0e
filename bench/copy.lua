-- Item 1: bulk copy into (write) or out of (read) a System V segment.
-- usage: copy.lua write|read|sub SIZE ITER   -> nanoseconds per copy
--   sub: the interpreter's own floor for making a new SIZE-byte string from
--        bytes it already has (s:sub(2, SIZE + 1) of a longer string: LuaJIT
--        gives back s itself for s:sub(1, #s)), for read
--        to be compared with: seg:read must allocate a fresh string just the
--        same, and at 1 MiB and more the allocator's page faults dominate both
local shm = require "shm"
local lib = require "lib"

local mode, size, iter = arg[1], tonumber(arg[2]), tonumber(arg[3])
local seg = assert(shm.create(shm.PRIVATE, size))
seg:remove()
seg:fill(0x79) -- fault the pages in, as the C baseline does
local data = string.rep("x", size)
local t0, t1
if mode == "write" then
  t0 = lib.now()
  for _ = 1, iter do seg:write(data, 0) end
  t1 = lib.now()
  assert(seg:read(size - 1, 1) == "x")
elseif mode == "sub" then
  -- the same sizes as read: the same allocator path; kept in a table, so
  -- that LuaJIT can neither hoist nor sink the string out of the loop
  local src, keep = data .. "x", {}
  t0 = lib.now()
  for i = 1, iter do keep[i % 2] = src:sub(2, size + 1) end
  t1 = lib.now()
  assert(#keep[iter % 2] == size)
else
  local keep = {} -- as the floor keeps its strings
  t0 = lib.now()
  for i = 1, iter do keep[i % 2] = seg:read(0, size) end
  t1 = lib.now()
  assert(#keep[iter % 2] == size)
end
seg:detach()
print(string.format("%.3f", (t1 - t0) * 1e9 / iter))
