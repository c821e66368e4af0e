-- Section 4: the dict loops, one shape for every implementation measured:
-- shm.dict and ngx.shared.DICT (the same methods, so the same code runs in a
-- plain Lua process and inside an nginx worker) and a plain Lua table (the
-- floor).  Every value read is checked in the loop (an identity compare, or a
-- length for 1 KiB values, so the check costs the same everywhere) and every
-- write is read back after it, so no loop can be optimised away.
-- No dependencies and no 5.3+ syntax: this file also runs inside nginx.
local M = {}

M.NKEYS = 10000
M.CAPACITY = 16 * 1024 * 1024 -- bytes, for shm.dict and lua_shared_dict alike
M.OPS = { "get16", "set16", "get1k", "set1k", "get10k", "set10k", "incr" }

local V16 = { string.rep("a", 16), string.rep("b", 16) }
local V1K = { string.rep("c", 1024), string.rep("d", 1024) }
local KEYS, VALS = {}, {}
for i = 1, M.NKEYS do
  KEYS[i] = "key:" .. i
  VALS[i] = string.format("%016d", i)
end

local function fail(op, what)
  error("bench " .. op .. ": " .. what, 0)
end

--- The loops for `d`, anything with ngx.shared.DICT's get/set/incr.
-- Each entry: prep() (untimed), loop(n) (n operations, then a check).
function M.dict(d)
  local function set(k, v)
    local ok, err = d:set(k, v)
    if not ok then fail("set", tostring(err)) end
  end
  -- set one key to each of two values in turn
  local function set_hot(op, k, vals)
    return {
      prep = function() end,
      loop = function(n)
        for i = 1, n do
          if not d:set(k, vals[i % 2 + 1]) then fail(op, "set failed") end
        end
        if d:get(k) ~= vals[n % 2 + 1] then fail(op, "wrong value read back") end
      end }
  end
  return {
    get16 = {
      prep = function() set("hot", V16[1]) end,
      loop = function(n)
        local s = V16[1]
        for _ = 1, n do
          if d:get("hot") ~= s then fail("get16", "wrong value") end
        end
      end },
    set16 = set_hot("set16", "hot", V16),
    get1k = {
      prep = function() set("big", V1K[1]) end,
      loop = function(n)
        for _ = 1, n do
          local v = d:get("big")
          if #v ~= 1024 then fail("get1k", "wrong length") end
        end
        if d:get("big") ~= V1K[1] then fail("get1k", "wrong value") end
      end },
    set1k = set_hot("set1k", "big", V1K),
    get10k = {
      prep = function() for i = 1, M.NKEYS do set(KEYS[i], VALS[i]) end end,
      loop = function(n)
        local nk = M.NKEYS
        for i = 1, n do
          local j = i % nk + 1
          if d:get(KEYS[j]) ~= VALS[j] then fail("get10k", "wrong value for " .. KEYS[j]) end
        end
      end },
    set10k = {
      prep = function() end,
      loop = function(n)
        local nk = M.NKEYS
        for i = 1, n do
          local j = i % nk + 1
          if not d:set(KEYS[j], VALS[j]) then fail("set10k", "set failed") end
        end
        local j = n % nk + 1
        if d:get(KEYS[j]) ~= VALS[j] then fail("set10k", "wrong value read back") end
      end },
    incr = {
      prep = function() set("ctr", 0) end,
      loop = function(n)
        local v0, v = d:get("ctr"), nil
        for _ = 1, n do v = d:incr("ctr", 1) end
        if v ~= v0 + n or d:get("ctr") ~= v then fail("incr", "wrong count") end
      end },
  }
end

--- The same loops on a plain Lua table: the floor.
function M.table(t)
  local function set_hot(op, k, vals)
    return {
      prep = function() end,
      loop = function(n)
        for i = 1, n do t[k] = vals[i % 2 + 1] end
        if t[k] ~= vals[n % 2 + 1] then fail(op, "wrong value read back") end
      end }
  end
  return {
    get16 = {
      prep = function() t.hot = V16[1] end,
      loop = function(n)
        local s = V16[1]
        for _ = 1, n do
          if t.hot ~= s then fail("get16", "wrong value") end
        end
      end },
    set16 = set_hot("set16", "hot", V16),
    get1k = {
      prep = function() t.big = V1K[1] end,
      loop = function(n)
        for _ = 1, n do
          local v = t.big
          if #v ~= 1024 then fail("get1k", "wrong length") end
        end
        if t.big ~= V1K[1] then fail("get1k", "wrong value") end
      end },
    set1k = set_hot("set1k", "big", V1K),
    get10k = {
      prep = function() for i = 1, M.NKEYS do t[KEYS[i]] = VALS[i] end end,
      loop = function(n)
        local nk = M.NKEYS
        for i = 1, n do
          local j = i % nk + 1
          if t[KEYS[j]] ~= VALS[j] then fail("get10k", "wrong value for " .. KEYS[j]) end
        end
      end },
    set10k = {
      prep = function() end,
      loop = function(n)
        local nk = M.NKEYS
        for i = 1, n do
          local j = i % nk + 1
          t[KEYS[j]] = VALS[j]
        end
        local j = n % nk + 1
        if t[KEYS[j]] ~= VALS[j] then fail("set10k", "wrong value read back") end
      end },
    incr = {
      prep = function() t.ctr = 0 end,
      loop = function(n)
        local v0, v = t.ctr, nil
        for _ = 1, n do
          v = t.ctr + 1
          t.ctr = v
        end
        if v ~= v0 + n then fail("incr", "wrong count") end
      end },
  }
end

--- The C API's own floor for `get16` (issue 17's goal under Lua 5.4): the
-- same loop with `seg:read(0, 16)` of a segment holding the value in place
-- of `d:get("hot")`, i.e. a method call on a userdata (checked, as every
-- lua-shm method) that makes a 16-byte result string and does nothing else.
function M.floor(seg)
  return {
    get16 = {
      prep = function() seg:write(V16[1], 0) end,
      loop = function(n)
        local s = V16[1]
        for _ = 1, n do
          if seg:read(0, 16) ~= s then fail("floor get16", "wrong value") end
        end
      end },
  }
end

--- Nanoseconds per operation of `op` (from M.dict or M.table), after a
-- warm-up of a tenth of the count (so LuaJIT has compiled the loop).
function M.time(op, n, now)
  op.prep()
  op.loop(math.floor(n / 10) + 1)
  local t0 = now()
  op.loop(n)
  return (now() - t0) * 1e9 / n
end

--- Wait until `count` processes have called this with the same `key` (the
-- start of the two-process rows, coordinated through the dict itself).
function M.barrier(d, key, count, timeout, now)
  local _, err = d:incr(key, 1, 0)
  if err then fail("barrier", tostring(err)) end
  local deadline = now() + timeout
  while (d:get(key) or 0) < count do
    if now() > deadline then fail("barrier", "the other process did not come") end
  end
end

M.PAIR_KEY = "pair"
function M.pair_prep(d)
  local ok, err = d:set(M.PAIR_KEY, V16[1])
  if not ok then fail("pair", tostring(err)) end
end

--- Hammer the pair key for `dur` seconds, as a getter ("get") or a setter
-- ("set"); operations per second.  The getter checks every value it sees.
function M.hammer(d, role, dur, now)
  local k, a, b = M.PAIR_KEY, V16[1], V16[2]
  local n, t0 = 0, now()
  local t_end = t0 + dur
  local t1
  repeat
    if role == "set" then
      for i = 1, 256 do
        if not d:set(k, V16[i % 2 + 1]) then fail("pair", "set failed") end
      end
    else
      for _ = 1, 256 do
        local v = d:get(k)
        if v ~= a and v ~= b then fail("pair", "torn or missing value") end
      end
    end
    n = n + 256
    t1 = now()
  until t1 >= t_end
  return n / (t1 - t0)
end

return M
