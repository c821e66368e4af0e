-- A loop to profile shm.dict's hot paths under valgrind's callgrind (issue
-- 17): one key, 16-byte values, nothing else in the loop.
-- usage: dictprof.lua get|set|pushpop|delete|floor|none N
--   get: d:get("hot"); set: d:set("hot", v) of two values in turn;
--   pushpop: N rpush of 16 bytes onto one list, then N lpop; delete: N
--   rpush, then one delete of the list (see l_delete's inclusive cost);
--   floor: seg:read(0, 16) of a small segment (section 5's floor); none: the
--   empty loop (what the interpreter costs alone)
-- e.g. (make first; add CFLAGS="-O2 -gdwarf-4" for source lines):
--   LUA_PATH="bench/?.lua;lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" \
--     valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=cg.get \
--     lua5.4 bench/dictprof.lua get 200000
--   callgrind_annotate --inclusive=yes cg.get | grep core.so
--   /usr/bin/python3 bench/cglines.py cg.get build/lua5.4/shm/core.so 200000
local shm = require "shm"

local what, n = arg[1], tonumber(arg[2] or "200000")
local pid = io.open("/proc/self/stat"):read("*n")
local d = assert(shm.dict.create("/lshm-bench-prof-" .. pid, 16 * 1024 * 1024))
d:remove()
local seg = assert(shm.create(shm.PRIVATE, 4096))
seg:remove()
local a, b = string.rep("a", 16), string.rep("b", 16)
assert(d:set("hot", a))
seg:write(a, 0)
local loops = {
  get = function() for _ = 1, n do if d:get("hot") ~= a then error("wrong value") end end end,
  set = function()
    local v = { a, b }
    for i = 1, n do if not d:set("hot", v[i % 2 + 1]) then error("set failed") end end
  end,
  pushpop = function()
    for i = 1, n do if d:rpush("l", a) ~= i then error("rpush failed") end end
    for _ = 1, n do if d:lpop("l") ~= a then error("wrong element") end end
  end,
  delete = function()
    for i = 1, n do if d:rpush("l", a) ~= i then error("rpush failed") end end
    d:delete("l")
    if d:llen("l") ~= 0 then error("not deleted") end
  end,
  floor = function() for _ = 1, n do if seg:read(0, 16) ~= a then error("wrong value") end end end,
  none = function() for _ = 1, n do end end,
}
local ok, err = pcall(assert(loops[what], "usage: dictprof.lua get|set|pushpop|delete|floor|none N"))
d:detach()
seg:detach()
if not ok then error(err, 0) end
