--- d:fetch: read-through on a shm.dict with one filler among all processes
-- (lua/shm.lua installs it as a method of every dict).
--
-- A miss takes a shm.lock on a key derived from the key ("shm.fetch " ..
-- key), then looks again: the first process in runs the callback and stores
-- its result, the others, woken by its unlock one after another, find the
-- value ("shared").  The callback runs with no dict lock held (the per-key
-- lock is a dict entry, not a lock of the dict); it runs under pcall, so an
-- error releases the per-key lock; a filler that dies releases it to the next
-- waiter at once (the lock's "owner died").  A remembered miss (neg_ttl) is
-- the value NEG with the flags NEGFLAGS.
-- @module shm
local lock = require "shm.lock"

local type, error, pcall, tostring, format = type, error, pcall, tostring, string.format
local newlock = lock.new

local NEG, NEGFLAGS = "\0shm.fetch: nil\0", 0x6e696c -- a remembered miss
local PREFIX = "shm.fetch "                           -- the per-key lock: PREFIX .. key

local M = { NEG = NEG, NEGFLAGS = NEGFLAGS, PREFIX = PREFIX }

-- The value stored as v with flags f, as fetch returns it.
local function decode(v, f)
  if v == NEG and f == NEGFLAGS then return nil end
  return v
end

local function opt(opts, name, def)
  local v = opts[name]
  if v == nil then return def end
  if type(v) ~= "number" or v ~= v or v < 0 then
    error(format("bad option '%s' to 'fetch' (a number >= 0 expected, got %s)", name,
      type(v) == "number" and tostring(v) or type(v)), 3)
  end
  return v
end

-- Serve the stale value sv (flags sf) of key again for ttl seconds (the
-- callback failed, or another process's callback outlived lock_timeout):
-- value, state ("stale"; "shared" when another process stored a value
-- meanwhile: only a missing key is resurrected), or nil when there was none.
local function resurrect(d, key, ttl, sv, sf)
  if sv == nil then return nil end
  local ok, err = d:add(key, sv, ttl, sf or 0)
  if not ok and err == "exists" then
    local v, f = d:get(key)
    if v ~= nil then return decode(v, f), "shared" end
  end
  return decode(sv, sf), "stale"
end

-- The miss path: under the per-key lock, look again, else run the callback.
local function fill(d, key, opts, cb, ...)
  local ttl = opt(opts, "ttl", 0)
  local neg_ttl = opt(opts, "neg_ttl", ttl)
  local resurrect_ttl = opt(opts, "resurrect_ttl", nil)
  local lk = newlock(d, { timeout = opt(opts, "lock_timeout", 5), exptime = opt(opts, "lock_exptime", 30) })
  -- the stale value, read before any write (the lock's add may free an expired item)
  local sv, sf
  if resurrect_ttl then sv, sf = d:get_stale(key) end
  local elapsed, lerr = lk:lock(PREFIX .. key)
  local v, f = d:get(key)
  if v ~= nil then -- filled by another process (while we waited, or just before)
    if elapsed then lk:unlock() end
    return decode(v, f), nil, "shared"
  end
  if not elapsed then
    lerr = "could not acquire callback lock: " .. tostring(lerr)
    if resurrect_ttl then
      local v2, state = resurrect(d, key, resurrect_ttl, sv, sf)
      if state then return v2, state == "stale" and lerr or nil, state end
    end
    return nil, lerr
  end
  -- (results: ok, value, err, ttl)
  local ok, value, err, vttl = pcall(cb, ...)
  if ok and value == nil and err ~= nil then ok, value = false, err end -- a soft error
  if not ok then
    err = value
    if resurrect_ttl then
      local v2, state = resurrect(d, key, resurrect_ttl, sv, sf)
      if state then
        lk:unlock()
        return v2, state == "stale" and err or nil, state
      end
    end
    lk:unlock()
    return nil, err
  end
  local stored, serr
  if value == nil then
    stored, serr = d:set(key, NEG, neg_ttl, NEGFLAGS)
  else
    if type(vttl) ~= "number" or vttl ~= vttl or vttl < 0 then vttl = ttl end
    stored, serr = d:set(key, value, vttl)
  end
  lk:unlock()
  if not stored then return nil, "could not store the value: " .. tostring(serr) end
  return value, nil, "miss"
end

--- Read-through: the value of `key` when present; otherwise one process among
-- all those asking runs `callback(...)` and stores what it returns, and the
-- others get that value without running it (after Rails' `cache.fetch` and
-- lua-resty-mlcache's `get`).
--
-- The callback returns `value [, err [, ttl]]`: a value is stored for `ttl`
-- (default `opts.ttl`); `nil` is remembered as a miss for `opts.neg_ttl`;
-- `nil, err` and an error raised are failures: nothing is stored, the error is
-- returned (or, with `opts.resurrect_ttl`, the stale value is served and kept
-- that long).  The callback runs with no lock of the dict held: it may take
-- seconds and use the dict.  Only the other processes asking for the same key
-- wait for it, at most `opts.lock_timeout`; if its process dies, the next one
-- runs the callback at once.  A hit costs one `get` (and looks at nothing
-- else: `opts` and `callback` are checked on a miss).
-- @function dict:fetch
-- @tparam string key
-- @tparam[opt] table opts `ttl` (seconds a value is kept, default 0: no expiry),
-- `neg_ttl` (seconds a `nil` result is remembered, default `ttl`), `resurrect_ttl`
-- (when the callback fails, serve the stale value and keep it that long; default
-- none), `lock_timeout` (seconds to wait for another process's callback, default 5),
-- `lock_exptime` (seconds the per-key lock lives at most: the bound for a callback
-- that hangs, default 30)
-- @tparam function callback called as `callback(...)`
-- @param ... its arguments
-- @return the value (`nil` for a remembered miss)
-- @return `nil`, or the callback's error (with `"stale"`)
-- @treturn string state: `"hit"` (it was there), `"miss"` (the callback ran here),
-- `"shared"` (another process's callback filled it), `"stale"` (the callback
-- failed and the stale value is served)
-- @error `nil, err`: the callback's error; `"could not acquire callback lock: timeout"`
-- (after `lock_timeout`); the dict's errors (`"empty key"`, `"value is a list"`...)
-- @usage local user, err = d:fetch("user:" .. id, { ttl = 60, neg_ttl = 5 }, db.load_user, id)
function M.fetch(d, key, opts, cb, ...)
  local v, f = d:get(key)
  if v ~= nil then -- (the hit path: one C call; opts and cb are checked on a miss)
    if f == NEGFLAGS and v == NEG then return nil, nil, "hit" end
    return v, nil, "hit"
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(format("bad argument #2 to 'fetch' (table expected, got %s)", type(opts)), 2)
  end
  if type(cb) ~= "function" then
    local mt = debug.getmetatable(cb)
    if not (mt and mt.__call) then
      error(format("bad argument #3 to 'fetch' (function expected, got %s)", type(cb)), 2)
    end
  end
  if f ~= nil then return nil, f end -- "empty key", "value is a list"...
  if type(key) == "number" then key = tostring(key) end
  return fill(d, key, opts or {}, cb, ...)
end

return M
