--- LuaJIT's FFI fast paths for the hot methods (lua/shm.lua installs them
-- under LuaJIT unless the environment has SHM_NO_FFI=1).
--
-- A method implemented as a lua_CFunction is never compiled by LuaJIT's JIT;
-- an FFI call is.  Each method here replaces the C API one in its class's
-- methods table (found once, with the debug library, in the registry) and
-- keeps the C API one for everything it does not handle itself:
--
--  * The type check rests on what the C check rests on: the first call with
--    an object compares its metatable (debug.getmetatable) with the class's
--    (queues, dicts), or for a segment looks in it for the light-userdata key
--    that only segment metatables hold; an object that passes is remembered in a weak-keyed
--    table, so later calls cost one table lookup.  Lua code cannot forge
--    those metatables (__metatable hides them); anything not recognised goes
--    to the C API method, which raises its usual error.
--  * The state is never cached on the Lua side: each call passes the
--    userdata to a C entry point (src/ffi.c, and the ones in dict.c and
--    queue.c) that reads the segment's address, size and access from its
--    struct and checks them, so no compiled trace can keep using a mapping
--    after a detach.
--  * Arguments of an unusual type (a numeric string, a table value, a
--    negative length...) and every call a C entry point declines (a
--    detached or read-only object, an offset out of range: it returns
--    "fallback" having done nothing) go to the C API method with the same
--    arguments, by a tail call: its error message (with the method's name,
--    as LuaJIT finds it at the call site) is the one the C API gives.
--  * Failures found once the work is under way (a corrupted dict or queue)
--    raise the C API's message, at level 2: the caller's position, where
--    luaL_error puts it.
-- @module shm.ffi
local ffi = require "ffi"

local M = {}

local cast, ffi_string = ffi.cast, ffi.string
local type, error, tonumber = type, error, tonumber
local floor = math.floor
local getmetatable = debug.getmetatable

-- Keep in step with src/ffi.c, src/dict.c and src/queue.c.  (The names carry
-- the layout's version: a process that also loaded an older copy of this file,
-- with an older layout declared under the old names, cannot mix the two.)
if not pcall(ffi.typeof, "shm_seg_ffi_v2") then
  ffi.cdef [[
typedef struct shm_seg_ffi_v2 {
  int version;
  double (*read)(void *, double, double, const char **);
  int (*write)(void *, const char *, size_t, double);
  int (*fill)(void *, double, double, double);
  int (*load)(void *, double, double *);
  int (*store)(void *, double, double);
  int (*add)(void *, double, double, double *);
  int (*cas)(void *, double, double, double, double *);
  void (*done)(void *);
} shm_seg_ffi_v2;
typedef struct shm_dict_ffi_v2 {
  int version;
  int (*get)(void *, const char *, size_t, int, int *, const char **, uint32_t *, uint32_t *, int *);
  int (*store)(void *, int, int, const char *, size_t, int, const char *, size_t, uint32_t, double,
               int *);
  int (*incr)(void *, const char *, size_t, int *, char *, int, const char *, double, int *);
  int (*ttl)(void *, const char *, size_t, double *);
  int (*expire)(void *, const char *, size_t, double);
  const char *(*why)(void *);
  void (*done)(void *);
} shm_dict_ffi_v2;
typedef struct shm_queue_ffi_v2 {
  int version;
  int (*push)(void *, const char *, size_t, double, const char **);
  int (*pop)(void *, double, const char **, double *, const char **);
  void (*done)(void *);
} shm_queue_ffi_v2;
]]
end

-- shm_status (src/shm.h); the entry points' SHM_FFI_FALLBACK (-1) and any
-- other code go to the C API method
local ST_OK, ST_TIMEOUT, ST_CLOSED, ST_INTERRUPTED, ST_CORRUPT, ST_ERRNO = 0, 1, 2, 3, 4, 5

-- calls each method handed to its C API counterpart ("segment:read",
-- "dict:get", ...), for specs
M.fallbacks = {}
local fallbacks = M.fallbacks

-- A C function's methods table entry, or nil when it is not a C function
-- (already replaced by an earlier install).
local function cfunction(methods, name)
  local f = rawget(methods, name)
  if type(f) == "function" and debug.getinfo(f, "S").what == "C" then return f end
  return nil
end

-- A checker for one class: true if obj is one of its objects (remembered).
local function checker(test)
  local known = setmetatable({}, { __mode = "k" })
  return known, function(obj)
    if type(obj) ~= "userdata" or not test(obj) then return false end
    known[obj] = true
    return true
  end
end

-- The checker for a class whose metatable, and each object's own one, hold
-- mt[key] = true for a light-userdata key no Lua code can make (segments,
-- semaphores); nothing when the class has no such key.
local function keyed(class)
  local key
  for k, v in pairs(class) do
    if type(k) == "userdata" and v == true then key = k end
  end
  if key == nil then return nil end
  return checker(function(obj)
    local mt = getmetatable(obj)
    return mt ~= nil and rawget(mt, key) == true
  end)
end

-- Replace methods[name] by make(c), c being the C API method it falls back
-- on, when methods[name] is still the C function.
local function install(methods, class, name, make)
  local c = cfunction(methods, name)
  if c == nil then return end
  fallbacks[class .. ":" .. name] = fallbacks[class .. ":" .. name] or 0
  rawset(methods, name, make(c))
end

-- The scratch cells the C entry points write their results to.
local p_ptr = ffi.new("const char *[1]")
local p_num = ffi.new("double[1]")
local p_type = ffi.new("int[1]")
local p_flags = ffi.new("uint32_t[1]")
local p_stale = ffi.new("int[1]")
local p_forcible = ffi.new("int[1]")
local p_len = ffi.new("uint32_t[1]") -- (read as a number: no cdata made)
local p_qlen = ffi.new("double[1]") -- (a popped message's length: the same)
local p_why = ffi.new("const char *[1]")
local valbuf = ffi.new("union { double d; int64_t i; uint8_t b[8]; char c[8]; }[2]")
local valptr = cast("char *", valbuf)              -- value / step
local initptr = cast("const char *", valbuf + 1)   -- incr's init
local dblptr = ffi.typeof("const double *")
local i64ptr = ffi.typeof("const int64_t *")

---------------------------------------------------------------- segments

local function segments(core, reg)
  local api = cast("const shm_seg_ffi_v2 *", core._ffi)
  if api.version ~= 2 then return end
  local class = reg["shm.segment"]
  local index = class and rawget(class, "__index")
  if type(index) ~= "function" then return end
  local _, methods = debug.getupvalue(index, 1)
  -- (the class's metatable and every attached segment's own one hold the key)
  local known, check = keyed(class)
  if type(methods) ~= "table" or known == nil then return end
  local a_read, a_write, a_fill = api.read, api.write, api.fill
  local a_load, a_store, a_add, a_cas, a_rdone = api.load, api.store, api.add, api.cas, api.done

  install(methods, "segment", "read", function(c)
    return function(...)
      local self, off, len = ...
      if (known[self] or check(self)) and (off == nil or type(off) == "number")
          and (len == nil or (type(len) == "number" and len >= 0)) then
        local n = a_read(self, off or 0, len or -1, p_ptr)
        if n >= 0 then
          -- (the segment stays pinned until a_rdone: a finalizer run while
          -- the pointer or the string is made may detach it; a big string
          -- can fail, and the pin must not outlive that)
          if n < 65536 then
            local s = ffi_string(p_ptr[0], n)
            a_rdone(self)
            return s
          end
          local ok, s = pcall(ffi_string, p_ptr[0], n)
          a_rdone(self)
          if not ok then error(s, 0) end
          return s
        end
      end
      fallbacks["segment:read"] = fallbacks["segment:read"] + 1
      return c(...)
    end
  end)

  install(methods, "segment", "write", function(c)
    return function(...)
      local self, data, off = ...
      if (known[self] or check(self)) and type(data) == "string"
          and (off == nil or type(off) == "number")
          and a_write(self, data, #data, off or 0) == 0 then
        return self
      end
      fallbacks["segment:write"] = fallbacks["segment:write"] + 1
      return c(...)
    end
  end)

  install(methods, "segment", "fill", function(c)
    return function(...)
      local self, byte, off, len = ...
      if type(byte) == "string" and #byte == 1 then byte = byte:byte() end
      if (known[self] or check(self)) and type(byte) == "number"
          and (off == nil or type(off) == "number")
          and (len == nil or (type(len) == "number" and len >= 0))
          and a_fill(self, byte, off or 0, len or -1) == 0 then
        return self
      end
      fallbacks["segment:fill"] = fallbacks["segment:fill"] + 1
      return c(...)
    end
  end)

  install(methods, "segment", "load", function(c)
    return function(...)
      local self, off = ...
      if (known[self] or check(self)) and type(off) == "number" and a_load(self, off, p_num) == 0 then
        return p_num[0]
      end
      fallbacks["segment:load"] = fallbacks["segment:load"] + 1
      return c(...)
    end
  end)

  install(methods, "segment", "store", function(c)
    return function(...)
      local self, off, v = ...
      if (known[self] or check(self)) and type(off) == "number" and type(v) == "number"
          and a_store(self, off, v) == 0 then
        return self
      end
      fallbacks["segment:store"] = fallbacks["segment:store"] + 1
      return c(...)
    end
  end)

  install(methods, "segment", "add", function(c)
    return function(...)
      local self, off, d = ...
      if (known[self] or check(self)) and type(off) == "number" and type(d) == "number"
          and a_add(self, off, d, p_num) == 0 then
        return p_num[0]
      end
      fallbacks["segment:add"] = fallbacks["segment:add"] + 1
      return c(...)
    end
  end)

  install(methods, "segment", "cas", function(c)
    return function(...)
      local self, off, e, d = ...
      if (known[self] or check(self)) and type(off) == "number" and type(e) == "number"
          and type(d) == "number" then
        local r = a_cas(self, off, e, d, p_num)
        if r >= 0 then return r == 1, p_num[0] end
      end
      fallbacks["segment:cas"] = fallbacks["segment:cas"] + 1
      return c(...)
    end
  end)
  return true
end

---------------------------------------------------------------- dicts

local function dicts(core, reg)
  local api = cast("const shm_dict_ffi_v2 *", core.dict._ffi)
  local K = core.dict._ffi_codes
  if api.version ~= 2 or type(K) ~= "table" then return end
  local class = reg["shm.dict"]
  local methods = class and rawget(class, "__index")
  if type(methods) ~= "table" then return end
  local known, check = checker(function(obj) return getmetatable(obj) == class end)
  local a_get, a_store, a_incr, a_ttl, a_expire, a_why, a_done =
    api.get, api.store, api.incr, api.ttl, api.expire, api.why, api.done
  local OK, NOTFOUND, EXISTS, NOMEM, NOTNUM, ISLIST, CORRUPT =
    K.OK, K.NOTFOUND, K.EXISTS, K.NOMEM, K.NOTNUM, K.ISLIST, K.CORRUPT
  local DETACHED, OOM, TIMEOUT = K.DETACHED, K.OOM, K.TIMEOUT
  local T_NIL, T_BOOL, T_NUM, T_INT, T_STR, T_TABLE = K.NIL, K.BOOL, K.NUM, K.INT, K.STR, K.TABLE
  local SET, ADD, REPLACE = K.SET, K.ADD, K.REPLACE

  -- a key the C API takes as it is (numbers and others are converted there)
  local function goodkey(k)
    if type(k) ~= "string" then return false end
    local n = #k
    return n > 0 and n <= 65535
  end

  -- the C API's error message for a status that is not a result (dict.c:
  -- fail), raised at level 2 by the method (luaL_error's position: the caller)
  local function failure(self, r)
    if r == CORRUPT then return "shm.dict: corrupted dict (" .. ffi_string(a_why(self)) .. ")" end
    return "shm.dict: unexpected status " .. r
  end

  -- a number into valbuf[i], as the C API stores it where numbers are
  -- doubles: a whole number below 2^53 as an integer (Lua 5.3+ reads it back
  -- as one), anything else as a double; returns its type
  local function numcell(i, v)
    if v == floor(v) and v > -9007199254740992 and v < 9007199254740992 and (v ~= 0 or 1 / v > 0) then
      valbuf[i].i = v
      return T_INT
    end
    valbuf[i].d = v
    return T_NUM
  end

  local function int32(f)
    if f >= 2147483648 then return f - 4294967296 end
    return f
  end

  -- the value get found (pushvalue); nil for a table (the C API decodes it)
  local function value(t, p, n)
    if t == T_STR then return ffi_string(p, n) end
    if t == T_NUM then return n == 8 and cast(dblptr, p)[0] or 0 end
    if t == T_INT then return n == 8 and tonumber(cast(i64ptr, p)[0]) or 0 end
    if t == T_BOOL then return n > 0 and p[0] ~= 0 end
    if t == T_TABLE then return nil end
    return ffi_string(p, n)
  end

  local function getter(stale, name)
    return function(c)
      return function(...)
        local self, key = ...
        if (known[self] or check(self)) and goodkey(key) then
          local r = a_get(self, key, #key, stale, p_type, p_ptr, p_len, p_flags, p_stale)
          if r == OK then
            -- every cell read before any cdata or string is made (making one
            -- may run a finalizer that calls a dict and overwrites the cells);
            -- the handle's buffer stays lent to us until a_done
            local t, f, st, n = p_type[0], p_flags[0], p_stale[0], p_len[0]
            if t ~= T_TABLE then
              local v = value(t, p_ptr[0], n)
              a_done(self)
              if stale == 1 then return v, f ~= 0 and int32(f) or nil, st ~= 0 end
              if f == 0 then return v end
              return v, int32(f)
            end
          elseif r == NOTFOUND then
            return nil
          elseif r == ISLIST then
            return nil, "value is a list"
          elseif r == TIMEOUT then
            return nil, "timeout"
          end
        end
        fallbacks[name] = fallbacks[name] + 1
        return c(...)
      end
    end
  end
  install(methods, "dict", "get", getter(0, "dict:get"))
  install(methods, "dict", "get_stale", getter(1, "dict:get_stale"))

  -- The store: ok, err, forcible; or nothing when the C API must answer; or
  -- nil, nil, nil, the message of the error to raise.
  local function store(op, safe, self, key, v, exptime, flags)
    if not ((known[self] or check(self)) and goodkey(key)) then return end
    if exptime == nil or exptime == false then exptime = 0
    elseif type(exptime) ~= "number" or exptime ~= exptime or exptime < 0 then return end
    if flags == nil or flags == false then flags = 0
    elseif type(flags) ~= "number" or flags ~= floor(flags) then return
    elseif flags < 0 and flags >= -2147483648 then flags = flags + 4294967296
    elseif flags >= 2147483648 and flags < 4294967296 then flags = 2147483648 -- (as ngx: -2^31)
    elseif not (flags >= 0 and flags < 4294967296) then return end
    local t, p, n = type(v), valptr, 8
    if t == "string" then
      t, p, n = T_STR, v, #v
    elseif t == "number" then
      t = numcell(0, v)
    elseif t == "boolean" then
      t, n = T_BOOL, 1
      valbuf[0].b[0] = v and 1 or 0
    elseif t == "nil" and op == SET then
      t, n = T_NIL, 0
    else
      return -- tables; nil for add/replace: the C API answers
    end
    local r = a_store(self, op, safe, key, #key, t, p, n, flags, exptime, p_forcible)
    local forcible = p_forcible[0] ~= 0
    if r == OK then return true, nil, forcible end
    if r == EXISTS then return false, "exists", forcible end
    if r == NOTFOUND then return false, "not found", forcible end
    if r == NOMEM then return false, "no memory", forcible end
    if r == TIMEOUT then return false, "timeout", false end
    if r == DETACHED or r == OOM then return end
    return nil, nil, nil, failure(self, r)
  end

  local function storer(op, safe, name)
    return function(c)
      return function(...)
        local ok, err, forcible, raise = store(op, safe, ...)
        if ok ~= nil then return ok, err, forcible end
        if raise then error(raise, 2) end
        fallbacks[name] = fallbacks[name] + 1
        return c(...)
      end
    end
  end
  install(methods, "dict", "set", storer(SET, 0, "dict:set"))
  install(methods, "dict", "safe_set", storer(SET, 1, "dict:safe_set"))
  install(methods, "dict", "add", storer(ADD, 0, "dict:add"))
  install(methods, "dict", "safe_add", storer(ADD, 1, "dict:safe_add"))
  install(methods, "dict", "replace", storer(REPLACE, 0, "dict:replace"))
  install(methods, "dict", "delete", function(c)
    return function(...)
      local self, key = ...
      local ok, err, forcible, raise = store(SET, 0, self, key, nil, nil, nil)
      if ok ~= nil then return ok, err, forcible end
      if raise then error(raise, 2) end
      fallbacks["dict:delete"] = fallbacks["dict:delete"] + 1
      return c(...)
    end
  end)

  install(methods, "dict", "incr", function(c)
    return function(...)
      local self, key, step, init, init_ttl = ...
      local hasinit = init ~= nil and init ~= false
      if (known[self] or check(self)) and goodkey(key) and type(step) == "number"
          and (not hasinit or type(init) == "number")
          and (init_ttl == nil or (type(init_ttl) == "number" and init_ttl >= 0 and hasinit)) then
        p_type[0] = numcell(0, step)
        local it = hasinit and numcell(1, init) or 0
        local r = a_incr(self, key, #key, p_type, valptr, it, initptr,
                         init_ttl or 0, p_forcible)
        if r == OK then
          local v
          if p_type[0] == T_INT then v = tonumber(valbuf[0].i) else v = valbuf[0].d end
          if not hasinit then return v end
          return v, nil, p_forcible[0] ~= 0
        end
        if r == NOTFOUND then return nil, "not found" end
        if r == NOTNUM then return nil, "not a number" end
        if r == NOMEM then return nil, "no memory" end
        if r == TIMEOUT then return nil, "timeout" end
        if r ~= DETACHED then error(failure(self, r), 2) end
      end
      fallbacks["dict:incr"] = fallbacks["dict:incr"] + 1
      return c(...)
    end
  end)

  install(methods, "dict", "ttl", function(c)
    return function(...)
      local self, key = ...
      if (known[self] or check(self)) and goodkey(key) then
        local r = a_ttl(self, key, #key, p_num)
        if r == OK then
          local t = p_num[0]
          if t == 0 then return 0 end -- (never -0: the C API pushes an integer)
          return t
        end
        if r == NOTFOUND then return nil, "not found" end
        if r == TIMEOUT then return nil, "timeout" end
        if r ~= DETACHED then error(failure(self, r), 2) end
      end
      fallbacks["dict:ttl"] = fallbacks["dict:ttl"] + 1
      return c(...)
    end
  end)

  install(methods, "dict", "expire", function(c)
    return function(...)
      local self, key, exptime = ...
      if (known[self] or check(self)) and type(exptime) == "number" and goodkey(key) then
        local r = a_expire(self, key, #key, exptime)
        if r == OK then return true end
        if r == NOTFOUND then return nil, "not found" end
        if r == TIMEOUT then return nil, "timeout" end
        if r ~= DETACHED then error(failure(self, r), 2) end
      end
      fallbacks["dict:expire"] = fallbacks["dict:expire"] + 1
      return c(...)
    end
  end)
  return true
end

---------------------------------------------------------------- queues

-- a timeout the C API takes as it is; -1: none (wait forever)
local function timeout(t)
  if t == nil then return -1 end
  if type(t) == "number" and t >= 0 then return t end
  return nil
end

local function queues(core, reg)
  local api = cast("const shm_queue_ffi_v2 *", core.queue._ffi)
  if api.version ~= 2 then return end
  local class = reg["shm.queue"]
  local methods = class and rawget(class, "__index")
  if type(methods) ~= "table" then return end
  local known, check = checker(function(obj) return getmetatable(obj) == class end)
  local a_push, a_pop, a_done = api.push, api.pop, api.done

  -- failure(): the reasons, and the error for a corrupted queue
  local reasons = { [ST_TIMEOUT] = "timeout", [ST_CLOSED] = "closed", [ST_INTERRUPTED] = "interrupted" }
  local function corrupt()
    return "shm.queue: corrupted queue (" .. ffi_string(p_why[0]) .. ")"
  end

  install(methods, "queue", "push", function(c)
    return function(...)
      local self, msg, t = ...
      t = timeout(t)
      if t and (known[self] or check(self)) and type(msg) == "string" then
        local r = a_push(self, msg, #msg, t, p_why)
        if r == ST_OK then return true end
        local why = reasons[r]
        if why then return false, why end
        if r == ST_CORRUPT then error(corrupt(), 2) end
      end
      fallbacks["queue:push"] = fallbacks["queue:push"] + 1
      return c(...)
    end
  end)

  install(methods, "queue", "pop", function(c)
    return function(...)
      local self, t = ...
      t = timeout(t)
      if t and (known[self] or check(self)) then
        local r = a_pop(self, t, p_ptr, p_qlen, p_why)
        if r == ST_OK then
          -- the length (a number: no cdata made) before the pointer; the
          -- handle's buffer stays lent to us until a_done
          local n = p_qlen[0]
          local s = ffi_string(p_ptr[0], n)
          a_done(self)
          return s
        end
        local why = reasons[r]
        if why then return nil, why end
        if r == ST_CORRUPT then error(corrupt(), 2) end
      end
      fallbacks["queue:pop"] = fallbacks["queue:pop"] + 1
      return c(...)
    end
  end)
  return true
end

---------------------------------------------------------------- events
-- (shm.events: publish and a subscriber's next)

-- (the name carries the layout's version, as above)
if not pcall(ffi.typeof, "shm_events_ffi_v3") then
  ffi.cdef [[
typedef struct shm_events_ffi_v3 {
  int version;
  int lost;
  int toobig;
  int (*publish)(void *, const char *, size_t, double, const char **);
  int (*next)(void *, double, const char **, double *, const char **);
  void (*done)(void *);
} shm_events_ffi_v3;
]]
end

local function events(core, reg)
  local api = core.events and cast("const shm_events_ffi_v3 *", core.events._ffi)
  if not api or api.version ~= 3 then return end
  local class, subclass = reg["shm.events"], reg["shm.subscriber"]
  local methods = class and rawget(class, "__index")
  local submethods = subclass and rawget(subclass, "__index")
  if type(methods) ~= "table" or type(submethods) ~= "table" then return end
  local known, check = checker(function(obj) return getmetatable(obj) == class end)
  local subknown, subcheck = checker(function(obj) return getmetatable(obj) == subclass end)
  local a_publish, a_next, a_nextdone, LOST = api.publish, api.next, api.done, api.lost
  local p_evnum = ffi.new("double[2]") -- next's results: the length, the sequence number or count
  local reasons = { [ST_TIMEOUT] = "timeout", [ST_INTERRUPTED] = "interrupted" }
  local function corrupt()
    return "shm.events: corrupted events (" .. ffi_string(p_why[0]) .. ")"
  end

  install(methods, "events", "publish", function(c)
    return function(...)
      local self, msg, t = ...
      t = timeout(t)
      if t and (known[self] or check(self)) and type(msg) == "string" then
        local r = a_publish(self, msg, #msg, t, p_why)
        if r == ST_OK then return true end
        if r == ST_TIMEOUT then return false, "timeout" end
        if r == ST_CORRUPT then error(corrupt(), 2) end
      end
      fallbacks["events:publish"] = fallbacks["events:publish"] + 1
      return c(...)
    end
  end)

  install(submethods, "subscriber", "next", function(c)
    return function(...)
      local self, t = ...
      t = timeout(t)
      if t and (subknown[self] or subcheck(self)) then
        local r = a_next(self, t, p_ptr, p_evnum, p_why)
        -- the numbers read before any cdata or string is made (a finalizer
        -- run by an allocation may call next and write the cells again)
        local len, seq = p_evnum[0], p_evnum[1]
        if r == ST_OK then
          -- (the subscriber's buffer stays lent to us until a_nextdone)
          local ev = ffi_string(p_ptr[0], len)
          a_nextdone(self)
          return ev, seq
        end
        if r == LOST then return nil, "lost", seq end
        local why = reasons[r]
        if why then return nil, why end
        if r == ST_CORRUPT then error(corrupt(), 2) end
      end
      fallbacks["subscriber:next"] = fallbacks["subscriber:next"] + 1
      return c(...)
    end
  end)
  return true
end



---------------------------------------------------------------- sems
-- (shm.sem: acquire and release.)  The C entry points (src/sem.c) do what the C
-- API methods do once their arguments are checked, waits and signals
-- included, and format the C API's message for an errno; a call they decline
-- (a closed handle, several POSIX units released at once) and any argument
-- not plainly valid go to the C API method, which answers or raises.

if not pcall(ffi.typeof, "shm_sem_ffi_api") then
  ffi.cdef [[
typedef struct shm_sem_ffi_api {
  int version;
  int semvmx;
  int msgmax;
  int (*acquire)(void *, int, double, int *);
  int (*release)(void *, int, int *);
  void (*message)(void *, const char *, int, char *, size_t);
} shm_sem_ffi_api;
]]
end

local function sems(core, reg)
  local api = core.sem and cast("const shm_sem_ffi_api *", core.sem._ffi)
  if not api or api.version ~= 2 then return end
  local class = reg["shm.sem"]
  local methods = class and rawget(class, "__index")
  if type(methods) ~= "table" then return end
  -- (every semaphore has a metatable of its own, src/sem.c: personalize;
  -- each, and the class's, holds the key)
  local known, check = keyed(class)
  if known == nil then return end
  local a_acquire, a_release, a_message = api.acquire, api.release, api.message
  local SEMVMX, MSGMAX = api.semvmx, api.msgmax
  local p_en = ffi.new("int[1]")
  local msgbuf = ffi.new("char[?]", MSGMAX)

  -- nil, the C API's message, errno
  local function failure(self, call, en)
    a_message(self, call, en, msgbuf, MSGMAX)
    return nil, ffi_string(msgbuf), en
  end

  -- n as the C API takes it without converting: nil (1) or a whole number
  -- in range; nil for anything else (the C API answers)
  local function units(n)
    if n == nil then return 1 end
    if type(n) == "number" and n >= 1 and n <= SEMVMX and n == floor(n) then return n end
    return nil
  end

  install(methods, "sem", "acquire", function(c)
    return function(...)
      local self, t, n = ...
      n = units(n)
      if n and (t == nil or (type(t) == "number" and t >= 0)) and (known[self] or check(self)) then
        local r = a_acquire(self, n, t or -1, p_en)
        if r == ST_OK then return true end
        if r == ST_TIMEOUT then return false, "timeout" end
        if r == ST_INTERRUPTED then return false, "interrupted" end
        if r == ST_ERRNO then return failure(self, "acquire", p_en[0]) end
      end
      fallbacks["sem:acquire"] = fallbacks["sem:acquire"] + 1
      return c(...)
    end
  end)

  install(methods, "sem", "release", function(c)
    return function(...)
      local self, n = ...
      n = units(n)
      if n and (known[self] or check(self)) then
        local r = a_release(self, n, p_en)
        if r == ST_OK then return true end
        if r == ST_ERRNO then return failure(self, "release", p_en[0]) end
      end
      fallbacks["sem:release"] = fallbacks["sem:release"] + 1
      return c(...)
    end
  end)
  return true
end

--- Replace the hot methods of segments, dicts, queues, event rings and
-- semaphores by their FFI versions (each class only if its entry points are
-- the expected version).  Harmless to repeat: a method that is no longer the
-- C function stays.
-- @param core the shm.core module
-- @treturn boolean whether every class got its fast paths
function M.install(core)
  local reg = debug.getregistry()
  local a = segments(core, reg)
  local b = dicts(core, reg)
  local c = queues(core, reg)
  local d = events(core, reg)
  local e = sems(core, reg)
  M.active = (a and b and c and d and e) or false
  return M.active
end

return M
