--- shm.lock: lua-resty-lock's API over a shm.dict, for any set of processes.
--
-- A lock is a key of the dict whose value is a token naming its holder:
-- `"shm.lock PID TAG ID N"`, the holder's pid and the tag of its start time
-- (as the robust lock of src/lock.c records them, shm.core._self), the
-- address of the lock object's state (two Lua states of one process differ)
-- and a serial number per lock object of this state (an address is reused
-- once its object is collected).  One token per object and process: an
-- object holds one lock at a time.  So:
--
--  * taking it is `add(key, token, exptime)`;
--  * a waiter sleeps on the dict's wake word for the key (a futex:
--    d:_wake_offset, seg:wait), which `unlock` bumps (and notifies, when a
--    waiter is counted there) after deleting its token: a release is noticed
--    at once, not polled;
--  * a waiter also wakes every POLL seconds to look at the holder: a holder
--    whose process is dead (shm.core._dead: gone, a zombie, its pid reused)
--    is replaced by a compare-and-set from its token to ours ("owner died");
--    an expired one is gone by itself (add succeeds);
--  * unlock and expire act only on the caller's own token (a compare-and-set),
--    never on a lock another holder took after an expiry.
-- A value that is not a token (written by other code) is a live holder until
-- it expires.
-- @module shm
local core = require "shm.core"

local self_id, dead, now = core._self, core._dead, core._now
local type, tostring, tonumber, error, pcall = type, tostring, tonumber, error, pcall
local setmetatable, getmetatable, select = setmetatable, getmetatable, select
local format, min = string.format, math.min
local newproxy = rawget(_G, "newproxy")

-- seconds a waiter sleeps at most before it looks at the holder again
local POLL = 0.025

local M = {}

-- the metatable of dicts (to check the argument of new)
local dictmt = debug.getregistry()["shm.dict"]

-- Compare-and-set on key with flags 0: value (nil: delete) if the current
-- value is old (a string: a token).  true, or false.
local function cas(d, key, value, exptime, old)
  return (d:cas(key, value, exptime, 0, old, 0))
end

-- pid and tag of a holder's token, or nil when it is not a token
local function holder_of(v)
  if type(v) ~= "string" then return nil end
  local pid, tag = v:match("^shm%.lock (%d+) (%d+) ")
  return tonumber(pid), tonumber(tag)
end

-- The wake word of a key (d:_wake_offset): its low 32 bits count releases
-- (the futex half: a waiter sleeps while they are what it saw), its high bits
-- count the waiters that may sleep on it, so that a release with nobody
-- waiting makes no system call.  A waiter killed while registered leaves the
-- count high: releases then wake (and cost a futex call) in vain, nothing worse.
local WAITER = 4294967296 -- 2^32

-- Wake the waiters of the key whose wake word is at off (all of them: each
-- tries again).
local function wake(seg, off)
  local v = seg:add(off, 1)
  if v % WAITER == 0 then seg:add(off, -WAITER) end -- the low half wrapped: undo the carry
  if v >= WAITER then seg:notify(off) end
end

-- Release what st holds (unlock, __close and the finalizer): true if it was
-- still ours.
local function release(st)
  local key, token = st.key, st.token
  if key == nil then return false end
  st.key, st.token = nil, nil
  if st.pid ~= (self_id()) then return false end -- a fork's child: the parent's lock
  if not cas(st.dict, key, nil, 0, token) then return false end
  wake(st.seg, st.off)
  return true
end

-- The state's finalizer: unlock a lock forgotten by its object.  A finalizer
-- must not raise (the dict may have been detached meanwhile).
local function finalize(st)
  pcall(release, st)
end

-- A value that collects with the lock object and then releases st: a table
-- with __gc on 5.2+, a userdata (newproxy) on 5.1 and LuaJIT, where tables
-- take no finalizer.
local function guard(st)
  if newproxy then
    local p = newproxy(true)
    getmetatable(p).__gc = function() finalize(st) end
    return p
  end
  return setmetatable({}, { __gc = function() finalize(st) end })
end

local Lock = {}
Lock.__index = Lock
local serial = 0 -- lock objects made by this Lua state
Lock.__metatable = "shm.lock"

local function checklock(lk, fn)
  if getmetatable(lk) ~= "shm.lock" or type(lk) ~= "table" or type(rawget(lk, "_st")) ~= "table" then
    error(format("bad argument #1 to '%s' (shm.lock expected, got %s)", fn, type(lk)), 3)
  end
  return lk._st
end

local function optnumber(opts, name, def, least)
  local v = opts[name]
  if v == nil then return def end
  if type(v) ~= "number" or v ~= v or v < least then
    error(format("bad option '%s' to 'new' (a number >= %s expected, got %s)", name, least,
      type(v) == "number" and tostring(v) or type(v)), 3)
  end
  return v
end

--- Locks: lua-resty-lock's API over a `shm.dict`.
-- `shm.lock.new(dict [, opts])` gives a process-local lock object; its lock
-- is a key of `dict` whose value names the holding process, so that a waiter
-- takes the lock of a holder that died (`kill -9`) at once, not after
-- `exptime`, and a holder never frees a lock another one took after an
-- expiry.  Waiters sleep until the lock is released (a futex woken by
-- `unlock`), they do not poll with growing sleeps.
-- @type lock

--- A lock object over a dict (as lua-resty-lock's `new`; `shm.lock:new(...)`
-- works too, for code written for it).
-- @function lock.new
-- @tparam dict dict the `shm.dict` holding the locks (its keys are the locks' names)
-- @tparam[opt] table opts `exptime` (seconds a lock lives at most: the bound for a
-- holder that is alive but hung; default 30; 0: never expires), `timeout` (seconds
-- `lock` waits at most, default 5; 0: try once); `step`, `ratio`, `max_step`:
-- accepted for code written for lua-resty-lock (a waiter here sleeps until woken)
-- @treturn lock
-- @usage local lk = shm.lock.new(d, { timeout = 2 })
-- local elapsed, err = lk:lock("config")
-- if elapsed then --[[ ... ]] lk:unlock() end
function M.new(dict, opts, ...)
  if dict == M then dict, opts = opts, ... end -- shm.lock:new(dict, opts)
  if debug.getmetatable(dict) ~= dictmt or dictmt == nil then
    error(format("bad argument #1 to 'new' (shm.dict expected, got %s)", type(dict)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(format("bad argument #2 to 'new' (table expected, got %s)", type(opts)), 2)
  end
  opts = opts or {}
  local st = { dict = dict, seg = dict:segment() }
  st.id = tostring(st):match("0x%x+") or tostring(st):match("%x+$")
  serial = serial + 1
  st.serial = serial -- (an address may be reused once st is collected)
  local lk = setmetatable({
    _st = st,
    _guard = guard(st),
    exptime = optnumber(opts, "exptime", 30, 0),
    timeout = optnumber(opts, "timeout", 5, 0),
  }, Lock)
  optnumber(opts, "step", 0.001, 0)
  optnumber(opts, "ratio", 2, 0)
  optnumber(opts, "max_step", 0.5, 0)
  return lk
end

-- Wait for key to be free, then take it: true, or nil and the dict's error
-- or "timeout"; true, nil, "owner died" when taken from a dead holder.
-- Registered as a waiter on the wake word at off.
local function await(d, seg, off, key, token, exptime, deadline)
  while true do
    local seen = seg:load(off) -- (before the add: a release after it changes the word)
    local ok, err = d:add(key, token, exptime)
    if ok or err ~= "exists" then return ok, err end
    local holder = d:get(key)
    local hpid, htag = holder_of(holder)
    -- a dead holder: swap its token for ours (any flags); a failed swap
    -- means another waiter took it first: wait as for a live holder
    if hpid and dead(hpid, htag) and d:cas(key, token, exptime, 0, holder) then
      return true, nil, "owner died"
    end
    local left = deadline - now()
    if left <= 0 then return nil, "timeout" end
    seg:wait(off, seen, min(left, POLL))
  end
end

--- Take the lock named `key`, waiting up to `timeout` seconds.
-- @function lock:lock
-- @tparam string key the lock's name: a key of the dict (numbers are converted)
-- @tparam[opt] number exptime this lock's `exptime` (as lua-resty-lock's second argument)
-- @treturn number seconds waited (0 when it was free)
-- @treturn[opt] string `"owner died"` when the lock was taken from a holder that died
-- @error `nil, "timeout"`; `nil, err` for the dict's errors (`"no memory"`, `"empty key"`...);
-- raises when this object already holds a lock
-- @usage local elapsed, err = lk:lock("job:42")
-- if not elapsed then return nil, err end
function Lock:lock(key, exptime)
  local st = checklock(self, "lock")
  if st.key ~= nil then
    error(format("shm.lock: this lock object already holds %q (unlock it first)", st.key), 2)
  end
  if key == nil then return nil, "nil key" end
  if type(key) == "number" then key = tostring(key) end
  if exptime == nil then exptime = self.exptime
  elseif type(exptime) ~= "number" or exptime ~= exptime or exptime < 0 then
    error(format("bad argument #2 to 'lock' (a number >= 0 expected, got %s)",
      type(exptime) == "number" and tostring(exptime) or type(exptime)), 2)
  end
  local d = st.dict
  local pid = self_id()
  local token = st.mine
  if pid ~= st.minepid then -- (this object's first lock, or the first in a fork's child)
    token = format("shm.lock %d %d %s %d", pid, select(2, self_id()), st.id, st.serial)
    st.mine, st.minepid = token, pid
  end
  local ok, err = d:add(key, token, exptime)
  local off = st.off
  if key ~= st.offkey then -- (the same key again: its wake word is known)
    off = d:_wake_offset(key)
    st.off, st.offkey = off, key
  end
  local start, died
  if not ok and err == "exists" then -- held: wait
    start = now()
    local seg = st.seg
    seg:add(off, WAITER) -- (a raise below leaves it counted: wakes in vain later)
    ok, err, died = await(d, seg, off, key, token, exptime, start + self.timeout)
    seg:add(off, -WAITER)
  end
  if not ok then return nil, err end
  st.key, st.token, st.pid = key, token, pid
  if start == nil then return 0 end
  return now() - start, died
end

--- Release this object's lock, and wake its waiters.
-- @function lock:unlock
-- @treturn boolean true
-- @error `nil, "unlocked"` when this object holds no lock, or its lock expired (it
-- never frees a lock another holder took after the expiry)
-- @usage lk:unlock()
function Lock:unlock()
  local st = checklock(self, "unlock")
  if release(st) then return true end
  return nil, "unlocked"
end

--- Renew this object's lock: it now expires `t` seconds from now.
-- @function lock:expire
-- @tparam[opt] number t seconds (default: the object's `exptime`; 0: never expires)
-- @treturn boolean true
-- @error `nil, "unlocked"` when this object holds no lock, or it expired (the
-- object then holds none)
-- @usage while working do assert(lk:expire(10)) --[[ ... ]] end
function Lock:expire(t)
  local st = checklock(self, "expire")
  if t == nil then t = self.exptime end
  if type(t) ~= "number" or t ~= t or t < 0 then
    error(format("bad argument #1 to 'expire' (a number >= 0 expected, got %s)",
      type(t) == "number" and tostring(t) or type(t)), 2)
  end
  if st.key == nil or st.pid ~= (self_id()) then return nil, "unlocked" end
  if cas(st.dict, st.key, st.token, t, st.token) then return true end
  st.key, st.token = nil, nil
  return nil, "unlocked"
end

function Lock:__close()
  release(self._st)
end

function Lock:__tostring()
  local key = self._st.key
  return key and format("shm.lock(%q held)", key) or "shm.lock(unlocked)"
end

return M
