-- Section 5 (issue 17): the dict at scale, one shape for shm.dict (in this
-- interpreter, bench/dictscale.lua) and ngx.shared.DICT (inside an nginx
-- worker, bench/ngx_dict.lua): get and set over many keys, lists, and how
-- many values of a size fill a dict of a fixed capacity.  Every value read
-- is checked.  No dependencies and no 5.3+ syntax: this file also runs
-- inside nginx.
local M = {}

M.NKEYS = { 1e4, 1e5, 1e6, 4e6 }
M.QUICK_NKEYS = { 1e4 }
M.OPS = 1e6                     -- timed gets (and sets) per key count
M.LIST = 1e5                    -- elements pushed, popped, and in the list deleted
M.LIST_CAPACITY = 32 * 1024 * 1024
M.FILL_CAPACITY = 8 * 1024 * 1024
M.VSIZES = { 16, 64, 256, 1024, 4096 }

--- The capacity (bytes) of the dict (shm.dict and lua_shared_dict alike)
-- for n keys of 16 bytes with 16-byte values: room for all of them (256
-- bytes a key; both take about half that) and never less than 8 MiB.
function M.capacity(nkeys)
  return math.max(8 * 1024 * 1024, math.ceil(nkeys * 256 / 1048576) * 1048576)
end

local function fail(op, what)
  error("bench scale " .. op .. ": " .. what, 0)
end

-- the seconds f(...) takes
local function timed(now, f, ...)
  local t0 = now()
  f(...)
  return now() - t0
end

-- nkeys distinct 16-byte keys: `ins` in order (the order they are stored
-- in, so that memory is laid out in that order), `walk` the same strings
-- shuffled by a fixed generator (the same order in every interpreter), the
-- order they are read and written in: random keys over the key set, each
-- once per pass.  The last one built is kept (nginx: per worker).
local cache = {}
function M.keys(nkeys)
  if cache.n ~= nkeys then
    cache = {}
    collectgarbage()
    local ins, walk = {}, {}
    for i = 1, nkeys do
      local k = string.format("%016d", i)
      ins[i], walk[i] = k, k
    end
    local x = 1
    for i = nkeys, 2, -1 do -- Fisher-Yates, with minstd (x * 48271 < 2^53: exact as a double)
      x = (x * 48271) % 2147483647
      local j = x % i + 1
      walk[i], walk[j] = walk[j], walk[i]
    end
    cache = { n = nkeys, ins = ins, walk = walk }
  end
  return cache.ins, cache.walk
end

--- get and set over nkeys keys (each key its own value): ns per get and
-- per set, over `n` of each, after a warm-up of a tenth as many.  The dict
-- `d` is empty (or flushed) and has room for every key (safe_set: no
-- eviction hides a dict too small).
function M.getset(d, nkeys, n, now)
  local ins, walk = M.keys(nkeys)
  for i = 1, nkeys do
    local ok, err = d:safe_set(ins[i], ins[i])
    if not ok then fail("fill", "key " .. i .. " of " .. nkeys .. ": " .. tostring(err)) end
  end
  local j = 0 -- where the walk is: the timed loops go on from the warm-up
  local function get(m)
    for _ = 1, m do
      j = j + 1
      if j > nkeys then j = 1 end
      local k = walk[j]
      if d:get(k) ~= k then fail("get", "wrong value for " .. k) end
    end
  end
  local function set(m)
    for _ = 1, m do
      j = j + 1
      if j > nkeys then j = 1 end
      local k = walk[j]
      if not d:set(k, k) then fail("set", "set failed") end
    end
    if d:get(walk[j]) ~= walk[j] then fail("set", "wrong value read back") end
  end
  local w = math.floor(n / 10) + 1
  get(w)
  local tg = timed(now, get, n)
  set(w)
  return tg * 1e9 / n, timed(now, set, n) * 1e9 / n
end

--- rpush n 16-byte elements onto one list, lpop them all (ns per call),
-- then push n again and time the delete of the n-element list (µs).
function M.list(d, n, now)
  local v = string.rep("e", 16)
  local function push(m)
    for i = 1, m do
      local len, err = d:rpush("l", v)
      if len ~= i then fail("rpush", tostring(err or len)) end
    end
  end
  local function pop(m)
    for _ = 1, m do
      if d:lpop("l") ~= v then fail("lpop", "wrong element") end
    end
    if d:llen("l") ~= 0 then fail("lpop", "list not empty") end
  end
  local w = math.floor(n / 10) + 1
  d:delete("l")
  push(w)
  pop(w)
  local tpush, tpop = timed(now, push, n), timed(now, pop, n)
  push(n)
  local tdel = timed(now, d.delete, d, "l")
  if d:llen("l") ~= 0 then fail("delete", "the list is still there") end
  return tpush * 1e9 / n, tpop * 1e9 / n, tdel * 1e6
end

--- How many values of `size` bytes safe_set stores in the empty dict `d`
-- before "no memory" (keys "f:1", "f:2", ...).
function M.fill(d, size, capacity)
  local v = string.rep("v", size)
  for i = 1, math.floor(capacity / size) + 1 do
    local ok, err = d:safe_set("f:" .. i, v)
    if not ok then
      if err ~= "no memory" then fail("fill", tostring(err)) end
      if d:get("f:" .. (i - 1)) ~= (i > 1 and v or nil) then fail("fill", "wrong value read back") end
      return i - 1
    end
  end
  fail("fill", "more values than bytes")
end

--- The zones nginx needs (lua_shared_dict name, bytes) for the scale rows.
function M.zones()
  local z = {}
  for _, nk in ipairs(M.NKEYS) do z[#z + 1] = { "scale_" .. string.format("%d", nk), M.capacity(nk) } end
  z[#z + 1] = { "scale_list", M.LIST_CAPACITY }
  for _, sz in ipairs(M.VSIZES) do z[#z + 1] = { "scale_fill" .. sz, M.FILL_CAPACITY } end
  return z
end

return M
