-- Seeded random sequences of every shm.dict / ngx.shared.DICT method, as data;
-- a small pure-Lua model of the documented semantics (API.md "Shared
-- dictionary", README); a runner that plays a sequence on a dict (a shm.dict,
-- an ngx.shared.DICT inside nginx, or the model) and writes each call's
-- results in one canonical form; the comparison of two runs, with the
-- documented differences between ngx.shared.DICT and shm.dict listed ONCE
-- (S.DIFFERENCES) and excused only there.
--
-- Plain Lua 5.1-5.4 and LuaJIT, no module needed: nginx loads this file too
-- (spec/dict_oracle_spec.lua). Deterministic on every interpreter: its own
-- generator (Park-Miller), integers below 2^53, numbers written with %.17g.
--
-- Time: the model has no clock. Expiry times are either far longer than any
-- run (>= 1000 s; `ttl` compared within S.TTL_SLACK seconds) or 1 ms followed at
-- once by a `sleep` op (5 ms) before anything else touches those keys: every
-- side then sees them expired. What an expired key still shows (`get_stale`,
-- `ttl`) depends on when each side frees it: such calls are marked `loose`.
local S = {}

local unpack = table.unpack or unpack
local floor, huge = math.floor, math.huge

S.TTL_SLACK = 5 -- seconds: nginx's cached time against the real-time clock
S.SHORT = 0.001 -- the TTL of the "expire now" ops
S.PAUSE = 0.005 -- the sleep that follows them (any wait longer than the TTL will do)

-- Bugs of today's shm.dict (issue 17) the generator steers around unless
-- told otherwise (opts.known = {} turns them all back on): each one has a
-- reproduction in spec/dict_model_spec.lua, tagged #known.
S.KNOWN = {
  -- Those of issue 17, fixed since (each keeps its spec); and `negzero`: where
  -- numbers are doubles (5.1, 5.2, LuaJIT), -0.0 was stored as the integer 0
  -- and read back as 0 (1/x: inf; nginx and 5.3+: -inf), as a value and in lists.
  -- `longlist`: deleting, overwriting, expiring, flushing or evicting a list
  -- longer than ~64 elements overflowed the undo journal; `flags31`: flags
  -- above 2^31 read back as themselves minus 2^32, 2^32 and above raised (nginx:
  -- -2^31); `maxfloat`: get_keys(0.5) and flush_expired(1.5) raised (nginx
  -- truncates). The generator steers around an entry of this table, e.g.
  -- `longlist = 60` (the list length it must not free at once) or `flags31 = true`.
}

-- S.KNOWN without the bugs named in SHM_KNOWN (e.g. SHM_KNOWN=flags31,longlist):
-- to see whether one is fixed, or what else it hides
function S.known_env()
  local t, back = {}, os.getenv("SHM_KNOWN") or ""
  for k, v in pairs(S.KNOWN) do
    if not back:find(k, 1, true) then t[k] = v end
  end
  return t
end

---------------------------------------------------------------------------
-- the generator's random numbers: Park-Miller, exact in doubles and integers

function S.rng(seed)
  local x = floor(seed) % 2147483646 + 1
  local r = {}
  function r.int(n) -- 1..n
    x = x * 16807 % 2147483647
    return x % n + 1
  end
  function r.range(a, b) return a + r.int(b - a + 1) - 1 end
  function r.chance(pct) return r.int(100) <= pct end
  function r.pick(t) return t[r.int(#t)] end
  return r
end

---------------------------------------------------------------------------
-- canonical text of values and results (the same on every interpreter)

local function cstr(s)
  return '"' .. s:gsub('[%c"\\\128-\255]', function(c) return string.format("\\%03d", c:byte()) end) .. '"'
end

local function cnum(x)
  if x ~= x then return "nan"
  elseif x == huge then return "inf"
  elseif x == -huge then return "-inf"
  elseif x == floor(x) and x > -2 ^ 53 and x < 2 ^ 53 then return string.format("%.0f", x)
  end
  return string.format("%.17g", x)
end

local canon
local function ctable(t, seen)
  if seen[t] then return "<cycle>" end
  seen[t] = true
  local ks = {}
  for k, v in pairs(t) do ks[#ks + 1] = canon(k, seen) .. "=" .. canon(v, seen) end
  table.sort(ks)
  seen[t] = nil
  return "{" .. table.concat(ks, ",") .. "}"
end

function canon(v, seen)
  local t = type(v)
  if t == "string" then return cstr(v)
  elseif t == "number" then return cnum(v)
  elseif t == "table" then return ctable(v, seen or {})
  end
  return tostring(v)
end
S.canon = canon

-- an op's arguments, short (long strings by their length and a digest)
local function short(v)
  if type(v) == "string" and #v > 24 then
    local h = 0
    for i = 1, #v, math.max(1, floor(#v / 64)) do h = (h * 31 + v:byte(i)) % 1000003 end
    return string.format("<%d bytes #%d>", #v, h)
  end
  return canon(v)
end

function S.opstr(op)
  local a = {}
  for i = 2, op.n do a[#a + 1] = short(op[i]) end
  return op[1] .. "(" .. table.concat(a, ", ") .. ")" .. (op.loose and (" [" .. op.loose .. "]") or "")
end

-- one call's results: "n:v1,v2,..." (the count matters: ngx returns one nil, not two)
local function results(op, ok, ...)
  if not ok then
    local msg = tostring((...)):gsub("^[^\n]-:%d+: ", "")
    return "error:" .. msg
  end
  local n, parts = select("#", ...), {}
  for i = 1, n do
    local v = select(i, ...)
    if op[1] == "get_keys" and i == 1 and type(v) == "table" then
      local ks = {}
      for j = 1, #v do ks[j] = short(v[j]) end
      table.sort(ks)
      parts[i] = "keys" .. #ks .. "[" .. table.concat(ks, ",") .. "]"
    else
      parts[i] = short(v)
    end
  end
  return n .. ":" .. table.concat(parts, ",")
end
S.results = results

---------------------------------------------------------------------------
-- the runner: play `ops` on `d` (anything with the dict's methods);
-- sleep(s) waits (nginx: ngx.sleep). Returns the list of results.

function S.run(d, ops, sleep)
  local out = {}
  for i = 1, #ops do
    local op = ops[i]
    if op[1] == "sleep" then
      sleep(op[2])
      out[i] = "slept"
    else
      local f = d[op[1]]
      out[i] = results(op, pcall(f, d, unpack(op, 2, op.n)))
    end
  end
  return out
end

-- ops as a Lua chunk ("return {...}"), for nginx
local function lit(v)
  local t = type(v)
  if t == "string" then
    return '"' .. v:gsub("[%c\"\\\128-\255]", function(c) return string.format("\\%03d", c:byte()) end) .. '"'
  elseif t == "number" then
    if v == huge then return "(1/0)" elseif v == -huge then return "(-1/0)" end
    return cnum(v)
  elseif t == "table" then
    local p = {}
    for k, x in pairs(v) do p[#p + 1] = "[" .. lit(k) .. "]=" .. lit(x) end
    table.sort(p)
    return "{" .. table.concat(p, ",") .. "}"
  end
  return tostring(v)
end

function S.serialize(seqs)
  local b = { "return {" }
  for _, ops in ipairs(seqs) do
    b[#b + 1] = "{"
    for _, op in ipairs(ops) do
      local a = {}
      for i = 1, op.n do a[i] = lit(op[i]) end
      b[#b + 1] = "{n=" .. op.n .. "," .. table.concat(a, ",") .. "},"
    end
    b[#b + 1] = "},"
  end
  b[#b + 1] = "}"
  return table.concat(b, "\n")
end

---------------------------------------------------------------------------
-- the documented differences between ngx.shared.DICT and shm.dict: the ONE
-- place where a difference is excused. Each: why, and a test on the op and
-- both canonical results (a: ngx's or the model's, b: shm.dict's).

local function nums(r) -- the numbers of a "n:..." result, or nil
  local t = {}
  for x in (r:match("^%d+:(.*)$") or ""):gmatch("[^,]+") do t[#t + 1] = tonumber(x) end
  return t
end

S.DIFFERENCES = {
  { why = "tables as values are beyond ngx.shared.DICT (it says \"bad value type\")",
    generated = "never in oracle sequences (opts.ngx)" },
  { why = "integers beyond 2^53 and integer/float subtypes (5.3+) are beyond ngx",
    generated = "never: numbers stay below 2^53 and compare by value" },
  { why = "capacity() and free_space(): two allocators, two figures",
    ok = function(op, a, b)
      return (op[1] == "capacity" or op[1] == "free_space") and a:match("^1:%d+$") and b:match("^1:%d+$")
    end },
  { why = "ttl(): nginx's cached time against the clock read at each call",
    ok = function(op, a, b)
      if op[1] ~= "ttl" then return false end
      local x, y = nums(a)[1], nums(b)[1]
      return x and y and (x == 0) == (y == 0) and math.abs(x - y) <= S.TTL_SLACK
    end },
  { why = "get_keys(max) below the count: which max keys (LRU order approximated) ",
    ok = function(op, a, b)
      if op[1] ~= "get_keys" then return false end
      local m = math.floor(op[2] or 1024)
      local na, nb = a:match("^1:keys(%d+)"), b:match("^1:keys(%d+)")
      return m > 0 and na == nb and tonumber(na) == m
    end },
  { why = "what an expired key still shows until it is freed (get_stale, ttl, flush_expired's count): "
      .. "ngx frees one expired item per get, shm.dict frees them in writers only",
    ok = function(op, a, b)
      if op.loose ~= "stale" then return false end
      local function fine(r)
        if op[1] == "get_stale" then
          return r == "1:nil" or r == '2:nil,"value is a list"' or r:match(",true$") ~= nil
        end
        if op[1] == "ttl" then return r == '2:nil,"not found"' or (nums(r)[1] or 1) <= 0 end
        return op[1] == "flush_expired" and r:match("^1:%d+$") ~= nil
      end
      return fine(a) and fine(b)
    end },
  { why = "incr's bad step: shm.dict's argument error names the step",
    ok = function(op, a, b) return op[1] == "incr" and a:match("^error:") and b:match("^error:bad step") end },
  { why = "eviction: which items are evicted and when (forcible), in small dicts: what is left differs, "
      .. "but a set succeeds on both sides",
    ok = function(op, a, b)
      if op.loose ~= "evict" then return false end
      if op[1] ~= "set" then return true end
      local function norm(r) return (r:gsub(",[a-z]+$", "")) end -- forcible aside
      return norm(a) == norm(b)
    end },
}

-- nil when the results agree (or differ as documented); else a reason
function S.compare(ops, ra, rb)
  for i = 1, math.max(#ra, #rb) do
    local a, b, op = ra[i], rb[i], ops[i]
    if a ~= b then
      local excused = false
      if a and b and op then
        for _, d in ipairs(S.DIFFERENCES) do
          if d.ok and d.ok(op, a, b) then excused = true break end
        end
      end
      if not excused then return i end
    end
  end
end

-- every call of S.EDGES whose results differ (beyond S.DIFFERENCES): a
-- list of lines, and how many of them are today's known bugs
function S.edges(ra, rb, names)
  local lines, known = {}, 0
  local active = S.known_env()
  for i, op in ipairs(S.EDGES) do
    if S.compare({ op }, { ra[i] }, { rb[i] }) then
      local k = S.EDGES_KNOWN[tostring(op[2])]
      if k and active[k] then known = known + 1 end
      lines[#lines + 1] = string.format("  %s%s\n      %s: %s\n      %s: %s", S.opstr(op),
        k and active[k] and (" [known: " .. k .. "]") or "", names[1], ra[i], names[2], rb[i])
    end
  end
  return lines, known
end

-- the last few calls before call i, both sides' results
function S.trace(ops, ra, rb, i, names, count)
  local lines = {}
  for j = math.max(1, i - (count or 8)), i do
    lines[#lines + 1] = string.format("  #%d %s\n      %s: %s\n      %s: %s", j, S.opstr(ops[j]),
      names[1], tostring(ra[j]), names[2], tostring(rb[j]))
  end
  return table.concat(lines, "\n")
end

-- hand-picked edges, in one sequence (`known`: the bug of S.KNOWN they hit)
local function mkop(...) return { n = select("#", ...), ... } end
local function loosely(op) op.loose = "stale" return op end
S.EDGES = {
  mkop("set", "f1", "v", 0, 2 ^ 31 - 1), mkop("get", "f1"),
  mkop("set", "f2", "v", 0, 2 ^ 31), mkop("get", "f2"), mkop("delete", "f2"),
  mkop("set", "f3", "v", 0, 2 ^ 32 - 1), mkop("get", "f3"), mkop("delete", "f3"),
  mkop("set", "f4", "v", 0, 2 ^ 32), mkop("get", "f4"), mkop("delete", "f4"),
  mkop("set", "f5", "v", 0, -1), mkop("get", "f5"), mkop("delete", "f5"),
  mkop("set", "f6", "v", 0, 1.5), mkop("get", "f6"), mkop("delete", "f6"),
  mkop("set", "f7", "v", 0, -2.5), mkop("get", "f7"), mkop("delete", "f7"),
  mkop("set", "n1", 1e308), mkop("incr", "n1", 1e308), mkop("get", "n1"), mkop("incr", "n1", -1 / 0),
  mkop("incr", "n2", 0.1, 0.2), mkop("incr", "n2", 2 ^ 53), mkop("get", "n2"),
  mkop("set", "n3", -0.0), mkop("get", "n3"), mkop("incr", "n3", 0), mkop("incr", "n4", 1, 1 / 0),
  mkop("set", string.rep("K", 65535), "long"), mkop("get", string.rep("K", 65535)),
  mkop("lpush", string.rep("K", 65535), "x"), mkop("set", string.rep("K", 65536), "x"),
  mkop("lpush", string.rep("K", 65536), "x"), mkop("incr", "", 1), mkop("llen", ""), mkop("lpop", ""),
  mkop("ttl", ""), mkop("expire", "", 1), mkop("get_stale", ""), mkop("delete", ""), mkop("add", "", 1),
  mkop("set", "b", false), mkop("get", "b"), mkop("get_stale", "b"), mkop("set", "e", ""), mkop("get", "e"),
  mkop("rpush", "l", ""), mkop("rpush", "l", 0.5), mkop("rpush", "l", -0.0), mkop("lpop", "l"), mkop("lpop", "l"),
  mkop("lpop", "l"), mkop("llen", "l"), mkop("set", "z", "\0\1\255"), mkop("get", "z"),
  mkop("set", "x", 1, 1000), mkop("expire", "x", 0), mkop("ttl", "x"),
  mkop("incr", "x", 1, 0, -1), mkop("set", "t", "v", 1e9), mkop("ttl", "t"),
  mkop("get_keys", -1), mkop("get_keys", 0.5), mkop("get_keys", 1.5), mkop("flush_all"),
  loosely(mkop("flush_expired", 1.5)), loosely(mkop("flush_expired", -1)),
}
-- the edges today's known bugs hit, by their op's first argument
S.EDGES_KNOWN = { f2 = "flags31", f3 = "flags31", f4 = "flags31", f5 = "flags31", f6 = "flags31", f7 = "flags31",
  ["0.5"] = "maxfloat", ["1.5"] = "maxfloat", n3 = "negzero", l = "negzero" }

---------------------------------------------------------------------------
-- the model: the documented semantics, without a clock (expiry: "long"
-- never comes within a run; "short" comes at the next sleep op)

local M = {}
M.__index = M

function S.model(capacity)
  return setmetatable({ e = {}, cap = capacity or 1024 * 1024 }, M)
end

local function checkkey(k)
  if k == nil then return "nil key" end
  if type(k) == "number" then k = tostring(k) end
  if type(k) ~= "string" then return "bad key" end
  if k == "" then return "empty key" end
  if #k > 65535 then return "key too long" end
  return nil, k
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

local function goodvalue(v, depth, seen)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return true end
  if t ~= "table" or getmetatable(v) or depth > 100 or seen[v] then return false end
  seen[v] = true
  for k, x in pairs(v) do
    if type(k) == "table" or not goodvalue(k, depth + 1, seen) or not goodvalue(x, depth + 1, seen) then
      return false
    end
  end
  seen[v] = nil
  return true
end

function M:live(k)
  local e = self.e[k]
  if e and not e.expired then return e end
end

function M:get(key)
  local err, k = checkkey(key)
  if err then return nil, err end
  local e = self:live(k)
  if not e then return nil end
  if e.list then return nil, "value is a list" end
  if e.flags ~= 0 then return copy(e.value), e.flags end
  return copy(e.value)
end

function M:get_stale(key)
  local err, k = checkkey(key)
  if err then return nil, err end
  local e = self:live(k)
  if not e then return nil end -- (an expired one: excused as "stale", freed or not)
  if e.list then return nil, "value is a list" end
  return copy(e.value), e.flags ~= 0 and e.flags or nil, false
end

local function cint(x) return x < 0 and -floor(-x) or floor(x) end -- (C's conversion)

local function exptimeok(x) return x == nil or (type(x) == "number" and x >= 0) end

function M:store(op, key, value, exptime, flags)
  if not exptimeok(exptime) then error('bad "exptime" argument', 2) end
  if flags ~= nil and type(flags) ~= "number" then error('bad "flags" argument', 2) end
  local err, k = checkkey(key)
  if err then return nil, err end
  if value == nil then
    if op ~= "set" then return false, "attempt to add or replace nil values", false end
    self.e[k] = nil
    return true, nil, false
  end
  if not goodvalue(value, 1, {}) then return nil, "bad value type" end
  local e = self:live(k)
  if op == "add" and e then return false, "exists", false end
  if op == "replace" and not e then return false, "not found", false end
  -- (ngx passes flags as a C int: 2^31 and above become INT_MIN on x86-64)
  local f = flags and cint(flags) or 0
  if f >= 2 ^ 31 or f < -2 ^ 31 then f = -2 ^ 31 end
  self.e[k] = { value = copy(value), flags = f,
    exp = (exptime or 0) > 0 and (exptime < 1 and "short" or exptime) or 0 }
  return true, nil, false
end
function M:set(...) return self:store("set", ...) end
function M:safe_set(...) return self:store("set", ...) end
function M:add(...) return self:store("add", ...) end
function M:safe_add(...) return self:store("add", ...) end
function M:replace(...) return self:store("replace", ...) end
function M:delete(k) return self:store("set", k, nil) end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- compare-and-set (beyond ngx): store only if the key holds `old` (and
-- `old_flags` when given); old == nil: only if missing
function M:cas(key, value, exptime, flags, old, old_flags)
  if not exptimeok(exptime) then error('bad "exptime" argument', 2) end
  local err, k = checkkey(key)
  if err then return nil, err end
  if value ~= nil and not goodvalue(value, 1, {}) then return nil, "bad value type" end
  local e = self:live(k)
  if old ~= nil and not e then return false, "not found", false end
  if e and (old == nil or e.list or not same(e.value, old) or (old_flags ~= nil and e.flags ~= old_flags)) then
    if e.list then return false, "changed", false, nil, nil end
    return false, "changed", false, copy(e.value), e.flags ~= 0 and e.flags or nil
  end
  return self:store("set", k, value, exptime, flags)
end

function M:incr(key, step, init, init_ttl)
  local err, k = checkkey(key)
  if err then return nil, err end
  if type(step) ~= "number" then error("bad step arg: number expected, got " .. type(step), 2) end
  if init ~= nil and type(init) ~= "number" then error("bad init arg: number expected, got " .. type(init), 2) end
  if init_ttl ~= nil and init_ttl < 0 then error('bad "init_ttl" argument', 2) end
  local e = self:live(k)
  if not e then
    if init == nil then return nil, "not found" end
    local exp = (init_ttl or 0) > 0 and (init_ttl < 1 and "short" or init_ttl) or 0
    self.e[k] = { value = init + step, flags = 0, exp = exp }
    return init + step, nil, false
  end
  if e.list or type(e.value) ~= "number" then return nil, "not a number" end
  e.value = e.value + step
  if init == nil then return e.value end
  return e.value, nil, false
end

function M:push(left, key, value)
  local err, k = checkkey(key)
  if err then return nil, err end
  if type(value) ~= "string" and type(value) ~= "number" then return nil, "bad value type" end
  local e = self:live(k)
  if e and not e.list then return nil, "value not a list" end
  if not e then
    e = { list = {}, flags = 0, exp = 0 }
    self.e[k] = e
  end
  table.insert(e.list, left and 1 or #e.list + 1, value)
  return #e.list
end
function M:lpush(k, v) return self:push(true, k, v) end
function M:rpush(k, v) return self:push(false, k, v) end

function M:pop(left, key)
  local err, k = checkkey(key)
  if err then return nil, err end
  local e = self:live(k)
  if not e then return nil end
  if not e.list then return nil, "value not a list" end
  local v = table.remove(e.list, left and 1 or #e.list)
  if #e.list == 0 then self.e[k] = nil end
  return v
end
function M:lpop(k) return self:pop(true, k) end
function M:rpop(k) return self:pop(false, k) end

function M:llen(key)
  local err, k = checkkey(key)
  if err then return nil, err end
  local e = self:live(k)
  if not e then return 0 end
  if not e.list then return nil, "value not a list" end
  return #e.list
end

function M:ttl(key)
  local err, k = checkkey(key)
  if err then return nil, err end
  local e = self:live(k)
  if not e then return nil, "not found" end
  return e.exp == "short" and S.SHORT or e.exp
end

function M:expire(key, exptime)
  local err, k = checkkey(key)
  if err then return nil, err end
  if type(exptime) ~= "number" then error('bad "exptime" argument', 2) end
  local e = self:live(k)
  if not e then return nil, "not found" end -- (a negative exptime: as 0, as ngx)
  e.exp = exptime > 0 and (exptime < 1 and "short" or exptime) or 0
  return true
end

function M:flush_all()
  for _, e in pairs(self.e) do e.expired = true end
end

function M:flush_expired(max)
  local n = 0
  max = max and math.max(0, cint(max))
  for k, e in pairs(self.e) do
    if e.expired and (not max or max == 0 or n < max) then
      if not max or max == 0 then self.e[k] = nil end -- (else which ones: each side's choice)
      n = n + 1
    end
  end
  return n
end

function M:get_keys(max)
  local t = {}
  max = max and cint(max) or 1024
  if max < 0 then max = 0 end
  for k in pairs(self.e) do
    if self:live(k) and (max == 0 or #t < max) then t[#t + 1] = k end
  end
  return t
end

function M:capacity() return self.cap end
function M:free_space() return 0 end

-- the sleep op: what was given a short TTL has expired
function M:tick()
  for _, e in pairs(self.e) do
    if e.exp == "short" then e.expired = true end
  end
end

-- may key k be expired but not yet freed on some side?
function M:stale(k)
  local e = self.e[k]
  return e ~= nil and e.expired
end

function M:listlen(k)
  local e = self:live(k) or self.e[k]
  return e and e.list and #e.list or 0
end

---------------------------------------------------------------------------
-- the generator

local LONGKEY = string.rep("K", 65535)
local TOOLONG = string.rep("K", 65536)

-- opts: n (ops, default 200), ngx (no values beyond ngx), short (expiry
-- with sleeps), lists (bursts to thousands), evict (small dict: many big
-- values), known (S.KNOWN or {}). Returns ops, and the model's results.
function S.generate(seed, opts)
  opts = opts or {}
  local r = S.rng(seed)
  local known = opts.known or S.known_env()
  local m = S.model(opts.capacity)
  local ops, expect = {}, {}
  local keys = { "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "7", "l1", "l2", "l3", "a\0b\255" }
  if opts.evict then
    keys = {}
    for i = 1, 60 do keys[i] = "e" .. i end
  end

  local function key()
    if not opts.evict and r.chance(3) then
      return r.pick({ "", LONGKEY, TOOLONG, 7, nil, "l1", "k1" })
    end
    return r.pick(keys)
  end
  local function str(maxlen)
    local n = r.pick({ 0, 1, r.int(16), r.int(64), r.range(100, 300), r.int(maxlen or 40) })
    if not opts.evict and r.chance(3) then n = r.range(1000, 5000) end
    local b, binary = {}, r.chance(30)
    for i = 1, n do b[i] = binary and r.int(256) - 1 or 96 + r.int(26) end
    local parts = {}
    for i = 1, n, 4000 do parts[#parts + 1] = string.char(unpack(b, i, math.min(n, i + 3999))) end
    return table.concat(parts)
  end
  local function num()
    local c = r.int(8)
    if c <= 3 then return r.range(-1000, 1000) end
    if c == 4 then return r.range(-100000, 100000) / 8 end
    if c == 5 then return r.range(1, 1000) / 7 end
    if c == 6 then return 2 ^ r.pick({ 31, 32, 40, 52 }) end
    if c == 7 then return r.pick({ 0, 1, -1, 1e300, -1e-300, known.negzero and 0 or -0.0 }) end
    return r.range(-2 ^ 30, 2 ^ 30)
  end
  local function value()
    local c = r.int(20)
    if c <= 9 then return str() end
    if c <= 15 then return num() end
    if c <= 17 then return c == 16 end
    if c == 18 and not opts.ngx then
      return { name = str(8), n = num(), ok = true, list = { str(8), num(), { deep = r.chance(50) } } }
    end
    return nil
  end
  local function exptime()
    local c = r.int(10)
    if c <= 5 then return nil end
    if c <= 7 then return 0 end
    return r.pick({ 1000, 86400, 3600.5, 1e6 })
  end
  local function flags()
    local c = r.int(10)
    if c <= 6 then return nil end
    local f = r.pick({ 0, 1, 7, 65535, 2 ^ 31 - 1, 2 ^ 31, 2 ^ 32 - 1, -1, 1.5 })
    if known.flags31 and (f >= 2 ^ 31 or f < 0 or f ~= floor(f)) then f = 12345 end
    return f
  end
  -- would this op free or rewrite a list too long for today's journal?
  local function toolong(k)
    if not known.longlist then return false end
    if k == nil then
      for kk in pairs(m.e) do if m:listlen(kk) > known.longlist then return true end end
      return false
    end
    local _, kk = checkkey(k)
    return kk ~= nil and m:listlen(kk) > known.longlist
  end

  local function emit(name, ...)
    local op = { name, n = select("#", ...) + 1, ... }
    local k = op[2]
    local _, kk = checkkey(k)
    if (name == "get_stale" or name == "ttl") and kk and m:stale(kk) then op.loose = "stale" end
    if name == "flush_expired" then
      for x in pairs(m.e) do if m:stale(x) then op.loose = "stale" break end end
    end
    if opts.evict then op.loose = "evict" end
    ops[#ops + 1] = op
    if name == "sleep" then
      m:tick()
      expect[#ops] = "slept"
    else
      expect[#ops] = results(op, pcall(m[name], m, unpack(op, 2, op.n)))
    end
    return op
  end

  local function listval()
    local c = r.int(20)
    if c == 1 then return true end
    if c <= 8 then return num() end
    return str(24)
  end

  local n = opts.n or 200
  while #ops < n do
    local c = r.int(100)
    local k = key()
    local _, kk = checkkey(k)
    local stale = kk and m:stale(kk)
    if c <= 18 then
      local name = r.pick({ "set", "set", "safe_set", "add", "safe_add", "replace" })
      local v = value()
      if opts.evict then
        v = str(3000) .. string.rep("v", r.range(100, 2500))
        -- values of up to half the capacity, now and then
        if r.chance(5) then v = string.rep("V", r.range(20000, 120000)) end
      end
      if toolong(k) then name = "llen" end
      if name == "llen" then emit(name, k)
      else
        local e, f = exptime(), flags()
        if f ~= nil then emit(name, k, v, e or 0, f)
        elseif e ~= nil then emit(name, k, v, e)
        else emit(name, k, v) end
      end
    elseif c <= 22 then
      emit(toolong(k) and "llen" or "delete", k)
    elseif c <= 36 then
      emit(r.chance(80) and "get" or "get_stale", k)
    elseif c <= 46 then
      local step = r.pick({ 1, -1, 5, 1000, 0.5, -2.25, 1e308, -1e308 })
      local i = r.int(10)
      if i <= 5 then emit("incr", k, step)
      elseif i <= 8 then emit("incr", k, step, r.pick({ 0, 10, -3, 1.5 }))
      elseif i == 9 then emit("incr", k, step, 0, r.pick({ 0, 1000, 86400 }))
      else emit("incr", k, r.pick({ "x", true })) end
    elseif c <= 64 then
      local lk = r.chance(80) and r.pick({ "l1", "l2", "l3" }) or k
      local name = r.pick({ "lpush", "rpush", "lpush", "rpush", "lpop", "rpop", "llen" })
      if name:match("push") then
        local burst = 1
        if opts.lists ~= false and not opts.evict and r.chance(3) then burst = r.pick({ 50, 200, 1000, 3000 }) end
        for _ = 1, burst do emit(name, lk, listval()) end
      else
        local burst = r.chance(5) and r.range(10, 200) or 1
        for _ = 1, burst do emit(name, lk) end
      end
    elseif c <= 70 then
      emit("ttl", k)
    elseif c <= 74 then
      if stale or toolong(k) then emit("llen", k)
      else emit("expire", k, r.pick({ 0, 1000, 7200.25 })) end
    elseif c <= 78 then
      local max = r.pick({ 0, 0, 1, 3, 1024 })
      if max == 1024 then emit("get_keys") else emit("get_keys", max) end
    elseif c <= 80 then
      emit(r.pick({ "capacity", "free_space" }))
    elseif c <= 82 then
      if r.chance(50) then emit("flush_expired") else emit("flush_expired", r.pick({ 0, 1, 5 })) end
    elseif c <= 83 then
      if not toolong(nil) then emit("flush_all") end
    elseif c <= 85 and opts.short then
      -- expire now: 1 to 4 keys given a 1 ms TTL, then a pause before anything else
      local picked = {}
      for _ = 1, r.int(4) do
        local x = r.pick(keys)
        if not toolong(x) and not picked[x] then -- (each key once: a 1 ms TTL may pass at any time)
          picked[x] = true
          local how = r.int(4)
          if how == 1 then emit("set", x, value() or 1, S.SHORT)
          elseif how == 2 then emit("incr", x, 1, 0, S.SHORT)
          elseif how == 3 and not m:stale(x) then emit("expire", x, S.SHORT)
          else emit("add", x, "short", S.SHORT) end
        end
      end
      emit("sleep", S.PAUSE)
    elseif c >= 86 and c <= 88 and not opts.ngx and not opts.evict then
      -- compare-and-set (beyond ngx): with what is there (it succeeds), with
      -- something else (changed), or with nil (only if missing)
      local e = kk and m:live(kk)
      local i = r.int(3)
      local old = i == 1 and e and not e.list and copy(e.value) or i == 2 and value() or nil
      local f = flags()
      if toolong(k) then emit("llen", k)
      elseif r.chance(50) then emit("cas", k, value(), exptime() or 0, f or 0, old)
      else emit("cas", k, value(), exptime() or 0, f or 0, old, e and e.flags or r.pick({ 0, 7 })) end
    elseif c <= 90 then
      -- bad arguments: errors, and nothing changes
      local i = r.int(4)
      if i == 1 then emit("set", k, "v", -1)
      elseif i == 2 then
        if stale then emit("llen", k) else emit("expire", k, -5) end
      elseif i == 3 then emit("incr", k, 1, "x")
      else emit("lpush", k, { 1 }) end
    else
      emit("get", k)
    end
  end
  return ops, expect, m
end

return S
