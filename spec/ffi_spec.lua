-- LuaJIT's FFI fast paths (lua/shm/ffi.lua): taken under LuaJIT, compiled
-- by the JIT, the same results and errors as the Lua C API methods, forged
-- objects refused, and a compiled loop that survives a detach (it raises).
local shm = require "shm"
local H = require "helpers"

if not rawget(_G, "jit") then
  describe("the FFI fast paths", function()
    pending("need LuaJIT (this is " .. _VERSION .. ")")
  end)
  return
end

local noffi = os.getenv("SHM_NO_FFI") == "1"

-- The methods the FFI replaces, per class.
local HOT = {
  segment = { "read", "write", "fill", "load", "store", "add", "cas" },
  dict = { "get", "get_stale", "set", "safe_set", "add", "safe_add", "replace", "delete", "incr",
           "ttl", "expire" },
  queue = { "push", "pop" },
}

local function methods(obj)
  local _ = obj.read -- (an attached segment gets its own metatable at its first index)
  return debug.getmetatable(obj).__index
end

-- One line per call: what it returned or raised.  The same script runs with
-- and without SHM_NO_FFI and must print the same lines.
local BATTERY = [==[
local shm = require "shm"
local N = 0
local function show(v)
  if type(v) == "string" and #v > 200 then return #v .. ":" .. string.format("%q", v:sub(1, 64)) end
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "number" then return string.format("%.17g", v) end
  if type(v) == "userdata" then return "<" .. (getmetatable(v) or "?") .. ">" end
  if type(v) == "table" then return "table" end
  return tostring(v)
end
local function pack(...) return { n = select("#", ...), ... } end
local function id(...) return ... end -- (the method calls are no tail calls: errors name them)
local function try(name, f, ...)
  N = N + 1
  local r = pack(pcall(f, ...))
  local out = {}
  for i = 1, r.n do out[i] = show(r[i]) end
  print(N .. " " .. name .. ": " .. table.concat(out, ", "))
end
local key = tonumber(...)
local seg = assert(shm.create(key, 4096))
seg:remove()
local ro = assert(shm.attach(seg.id, "r"))
local proxy = newproxy(true)
getmetatable(proxy).__metatable = "shm.segment"
local fake = setmetatable({}, { __metatable = "shm.segment", __index = seg })
for _, s in ipairs({ seg, ro }) do
  try("read", function() return id(s:read()) end)
  try("read", function() return id(s:read(4090)) end)
  try("read", function() return id(s:read(4096)) end)
  try("read", function() return id(s:read(4097)) end)
  try("read", function() return id(s:read(0, 4097)) end)
  try("read", function() return id(s:read(10, 0)) end)
  try("read", function() return id(s:read(-1)) end)
  try("read", function() return id(s:read(0, -1)) end)
  try("read", function() return id(s:read(1.5)) end)
  try("read", function() return id(s:read(0, 0/0)) end)
  try("read", function() return id(s:read("8", "2")) end)
  try("read", function() return id(s:read(0, nil)) end)
  try("read", function() return id(s:read(nil, 3)) end)
  try("read", function() return id(s:read(2^63)) end)
  try("read", function() return id(s:read({})) end)
  try("write", function() return id(s:write("abc", 4093)) end)
  try("write", function() return id(s:write("abcd", 4093)) end)
  try("write", function() return id(s:write("abc")) end)
  try("write", function() return id(s:write(123, 8)) end)
  try("write", function() return id(s:write(nil)) end)
  try("write", function() return id(s:write("x", -1)) end)
  try("write", function() return id(s:write("x", 0.5)) end)
  try("fill", function() return id(s:fill(65, 100, 10)) end)
  try("fill", function() return id(s:fill("B", 100)) end)
  try("fill", function() return id(s:fill("BC")) end)
  try("fill", function() return id(s:fill(256)) end)
  try("fill", function() return id(s:fill(-1)) end)
  try("fill", function() return id(s:fill(1.5)) end)
  try("fill", function() return id(s:fill(0, 4096, 1)) end)
  try("fill", function() return id(s:fill(0, 0, 4097)) end)
  try("fill", function() return id(s:fill()) end)
  try("read", function() return id(s:read(0, 120)) end)
  try("store", function() return id(s:store(0, 42)) end)
  try("store", function() return id(s:store(8, -2^53)) end)
  try("store", function() return id(s:store(8, 2^63)) end)
  try("store", function() return id(s:store(8, 1.5)) end)
  try("store", function() return id(s:store(4, 1)) end)
  try("store", function() return id(s:store(4088, 7)) end)
  try("store", function() return id(s:store(4096, 7)) end)
  try("store", function() return id(s:store(0, "5")) end)
  try("store", function() return id(s:store(0)) end)
  try("load", function() return id(s:load(0)) end)
  try("load", function() return id(s:load(8)) end)
  try("load", function() return id(s:load(4088)) end)
  try("load", function() return id(s:load(4089)) end)
  try("load", function() return id(s:load(12)) end)
  try("load", function() return id(s:load(-8)) end)
  try("load", function() return id(s:load(0/0)) end)
  try("load", function() return id(s:load()) end)
  try("load", function() return id(s:load(1e300)) end)
  try("add", function() return id(s:add(0, 1)) end)
  try("add", function() return id(s:add(0, -43)) end)
  try("add", function() return id(s:add(0, 0.25)) end)
  try("add", function() return id(s:add(16, 2^62)) end)
  try("add", function() return id(s:add(16, 2^62)) end)
  try("add", function() return id(s:add(16, 2^62)) end)
  try("cas", function() return id(s:cas(0, -1, 5)) end)
  try("cas", function() return id(s:cas(0, 0, 5)) end)
  try("cas", function() return id(s:cas(0, 0, 5)) end)
  try("cas", function() return id(s:cas(0, 5)) end)
  try("cas", function() return id(s:cas(3, 5, 6)) end)
  try("load", function() return id(s:load(0)) end)
end
-- foreign and forged selves
for _, o in ipairs({ { "proxy", proxy }, { "fake", fake }, { "stdout", io.stdout }, { "number", 1 } }) do
  local name, other = o[1], o[2]
  for _, m in ipairs({ "read", "write", "fill", "load", "store", "add", "cas" }) do
    try(name .. "." .. m, function() return id(seg[m](other, 0, 0, 0)) end)
  end
end
-- dicts
local d = assert(shm.dict.create(key + 1, 65536))
d:remove()
local q = assert(shm.queue.create(key + 2, 256))
q:remove()
local dm = { "get", "get_stale", "set", "safe_set", "add", "safe_add", "replace", "delete",
             "incr", "ttl", "expire" }
for _, o in ipairs({ { "segment", seg }, { "queue", q }, { "proxy", proxy }, { "table", {} }, { "nothing" } }) do
  local name, other = o[1], o[2]
  for _, m in ipairs(dm) do try("dict:" .. m .. "(" .. name .. ")", function() return d[m](other, "k", 1) end) end
  for _, m in ipairs({ "push", "pop" }) do
    try("queue:" .. m .. "(" .. name .. ")", function() return id(q[m](other, "k", 1)) end)
  end
end
try("set", function() return id(d:set("s", "str")) end)
try("set", function() return id(d:set("n", 1.5, 0, 7)) end)
try("set", function() return id(d:set("i", 2^53)) end)
try("set", function() return id(d:set("b", true, nil, -5)) end)
try("set", function() return id(d:set("f", false, false, false)) end)
try("set", function() return id(d:set("t", { a = 1, { 2 } })) end)
try("set", function() return id(d:set("x", "v", -1)) end)
try("set", function() return id(d:set("x", "v", "1")) end)
try("set", function() return id(d:set("x", "v", 0, "1")) end)
try("set", function() return id(d:set("x", "v", 0, 1.5)) end)
try("set", function() return id(d:set("x", "v", 0, 2^32)) end)
try("set", function() return id(d:set("x", "v", 0, -2^31)) end)
try("set", function() return id(d:set("x", "v", 0, -2^31 - 1)) end)
try("set", function() return id(d:set("x", print)) end)
try("set", function() return id(d:set("", 1)) end)
try("set", function() return id(d:set(nil, 1)) end)
try("set", function() return id(d:set(string.rep("k", 65536), 1)) end)
try("set", function() return id(d:set(12, "twelve")) end)
try("set", function() return id(d:set("big", string.rep("v", 70000))) end)
for _, k in ipairs({ "s", "n", "i", "b", "f", "t", "x", 12, "12", "big", "missing", "", false }) do
  try("get " .. tostring(k), function() return id(d:get(k)) end)
  try("get_stale " .. tostring(k), function() return id(d:get_stale(k)) end)
end
try("get t", function() return id(d:get("t")[1][1]) end)
try("add", function() return id(d:add("s", 1)) end)
try("add", function() return id(d:add("new", 1)) end)
try("add", function() return id(d:add("new2", nil)) end)
try("safe_add", function() return id(d:safe_add("new3", "v")) end)
try("safe_set", function() return id(d:safe_set("new3", "w")) end)
try("replace", function() return id(d:replace("nope", 1)) end)
try("replace", function() return id(d:replace("new3", 2)) end)
try("replace", function() return id(d:replace("new3", nil)) end)
try("delete", function() return id(d:delete("new3")) end)
try("delete", function() return id(d:delete("nope")) end)
try("delete", function() return id(d:delete()) end)
try("incr", function() return id(d:incr("n", 1)) end)
try("incr", function() return id(d:incr("c", 1)) end)
try("incr", function() return id(d:incr("c", 1, 0)) end)
try("incr", function() return id(d:incr("c", 2.5, 0)) end)
try("incr", function() return id(d:incr("c", "3")) end)
try("incr", function() return id(d:incr("c", "x")) end)
try("incr", function() return id(d:incr("c2", 1, "10")) end)
try("incr", function() return id(d:incr("c3", 1, 0, 10)) end)
try("incr", function() return id(d:incr("c4", 1, nil, 10)) end)
try("incr", function() return id(d:incr("c4", 1, 0, -1)) end)
try("incr", function() return id(d:incr("c4", 1, 0, false)) end)
try("incr", function() return id(d:incr("s", 1)) end)
try("incr", function() return id(d:incr("i", 1)) end)
try("ttl", function() return id(d:ttl("c3") > 9) end)
try("ttl", function() return id(d:ttl("s")) end)
try("ttl", function() return id(d:ttl("nope")) end)
try("ttl", function() return id(d:ttl("")) end)
try("expire", function() return id(d:expire("s", 100)) end)
try("expire", function() return id(d:ttl("s") > 99) end)
try("expire", function() return id(d:expire("s", 0)) end)
try("expire", function() return id(d:expire("nope", 1)) end)
try("expire", function() return id(d:expire("s")) end)
try("expire", function() return id(d:expire("s", "5")) end)
try("lpush", function() return id(d:lpush("list", "a")) end)
try("get list", function() return id(d:get("list")) end)
try("set list", function() return id(d:set("list", 1)) end)
try("incr list", function() return id(d:incr("s", 1)) end)
-- queues
try("push", function() return id(q:push("hello")) end)
try("push", function() return id(q:push("")) end)
try("push", function() return id(q:push(42, 0)) end)
try("push", function() return id(q:push(string.rep("x", 300))) end)
try("push", function() return id(q:push("x", -1)) end)
try("push", function() return id(q:push("x", "0")) end)
try("push", function() return id(q:push(nil)) end)
try("pop", function() return id(q:pop()) end)
try("pop", function() return id(q:pop(0)) end)
try("pop", function() return id(q:pop(0)) end)
try("pop", function() return id(q:pop(0)) end)
try("pop", function() return id(q:pop(-1)) end)
try("pop", function() return id(q:pop("x")) end)
for i = 1, 20 do q:push(string.rep("m", 10), 0) end
try("push full", function() return id(q:push(string.rep("y", 20), 0.01)) end)
try("pop", function() return id(q:pop(0.5)) end)
try("close", function() return id(q:close()) end)
try("push closed", function() return id(q:push("z")) end)
while q:pop(0) do end
try("pop closed", function() return id(q:pop()) end)
-- detached
q:detach()
d:detach()
seg:detach()
for _, m in ipairs({ "read", "write", "fill", "load", "store", "add", "cas" }) do
  try("detached " .. m, function() return id(seg[m](seg, 0, 0, 0)) end)
end
for _, m in ipairs(dm) do try("detached dict:" .. m, function() return d[m](d, "k", 1) end) end
try("detached push", function() return id(q:push("x")) end)
try("detached pop", function() return id(q:pop(0)) end)
ro:detach()
local ffi = package.loaded["shm.ffi"]
io.write("fallbacks:")
for _, m in ipairs({ "segment:read", "segment:load", "dict:set", "dict:get", "dict:incr", "queue:push",
                    "queue:pop" }) do
  io.write(" ", m, "=", ffi and ffi.fallbacks[m] or "-")
end
print()
]==]

describe("the FFI fast paths #luajit", function()
  after_each(H.cleanup)

  if noffi then
    it("are not installed with SHM_NO_FFI=1: every hot method is the C API one", function()
      assert.is_nil(package.loaded["shm.ffi"])
      local seg = assert(shm.create(shm.PRIVATE, 64))
      seg:remove()
      for _, m in ipairs(HOT.segment) do
        assert.equal("C", debug.getinfo(methods(seg)[m], "S").what, m)
      end
      seg:detach()
    end)
    return
  end

  local ffi_mod = require "shm.ffi"

  -- a segment, a dict and a queue, already removed (they go with detach)
  local function objects()
    local seg = assert(shm.create(shm.PRIVATE, 4096))
    seg:remove()
    local d = assert(shm.dict.create(H.key(), 65536))
    d:remove()
    local q = assert(shm.queue.create(H.key(), 1024))
    q:remove()
    return seg, d, q
  end

  it("replace the hot methods by Lua functions of shm/ffi.lua", function()
    assert.is_true(ffi_mod.active)
    local seg, d, q = objects()
    for class, obj in pairs({ segment = seg, dict = d, queue = q }) do
      for _, m in ipairs(HOT[class]) do
        local info = debug.getinfo(methods(obj)[m], "S")
        assert.equal("Lua", info.what, class .. ":" .. m)
        assert.truthy(info.source:find("shm/ffi.lua", 1, true), info.source)
      end
    end
    -- the others stay the C API's
    assert.equal("C", debug.getinfo(methods(seg).stat, "S").what)
    assert.equal("C", debug.getinfo(methods(d).lpush, "S").what)
    q:detach() d:detach() seg:detach()
  end)

  it("handle ordinary calls without the C API, and hand it the others", function()
    local fb = ffi_mod.fallbacks
    local seg, d, q = objects()
    local before = {}
    for k, v in pairs(fb) do before[k] = v end
    for i = 1, 100 do
      seg:write("abc", 300 + i):store(8, i):fill(0, 200, 8)
      assert.equal(i, seg:load(8))
      assert.equal(i + 1, seg:add(8, 1))
      assert.same({ true, i + 1 }, { seg:cas(8, i + 1, 0) })
      assert.equal("abc", seg:read(300 + i, 3))
      assert.same({ true, nil, false }, { d:set("k" .. i, i, 0, i) })
      assert.same({ i, i }, { d:get("k" .. i) })
      assert.equal(i, d:incr("n", 1, 0))
      assert.is_true(q:push("m" .. i))
      assert.equal("m" .. i, q:pop(0))
    end
    for k, v in pairs(before) do assert.equal(v, fb[k], k .. " went to the C API") end
    -- a table value, a numeric string: the C API's
    d:set("t", { 1 })
    assert.equal(before["dict:set"] + 1, fb["dict:set"])
    assert.equal(3, seg:load("0") + 3)
    assert.equal(before["segment:load"] + 1, fb["segment:load"])
    assert.equal(before["segment:add"], fb["segment:add"])
    q:detach() d:detach() seg:detach()
  end)

  it("give the C API's results and errors, call by call", function()
    local key = H.key()
    H.key() H.key()
    local with, rc1 = H.run(BATTERY, { key })
    local env = { SHM_NO_FFI = "1" }
    for k, v in pairs(H.env) do env[k] = v end
    local without, rc2 = H.run(BATTERY, { key }, { env = env })
    assert.equal(0, rc1, with)
    assert.equal(0, rc2, without)
    local a, b = {}, {}
    -- (each run has its own script file: positions are compared by line)
    for l in with:gmatch("[^\n]+") do a[#a + 1] = l:gsub("\"/[^\"]-:(%d+):", "\"script:%1:") end
    for l in without:gmatch("[^\n]+") do b[#b + 1] = l:gsub("\"/[^\"]-:(%d+):", "\"script:%1:") end
    assert.is_true(#a > 300, #a .. " lines")
    local last = table.remove(a)
    assert.equal("fallbacks: segment:read=- segment:load=- dict:set=- dict:get=- dict:incr=- queue:push=-"
      .. " queue:pop=-", table.remove(b))
    assert.matches("^fallbacks: segment:read=%d+ segment:load=%d+", last)
    assert.same(b, a)
    -- errors of every kind are in there, and the C API's own wording
    assert.truthy(with:find("attempt to use a detached segment", 1, true))
    assert.truthy(with:find("attempt to use a detached dict", 1, true))
    assert.truthy(with:find("attempt to use a detached queue", 1, true))
    assert.truthy(with:find("attempt to write to a read-only segment", 1, true))
    assert.truthy(with:find("bad argument #1 to 'segment:load' (offset 4089 out of range (segment size 4096))", 1,
      true))
    assert.truthy(with:find("bad argument #1 to 'segment:load' (offset 12 is not 8-byte aligned)", 1, true))
    assert.truthy(with:find("(shm.segment expected, got userdata)", 1, true))
    assert.truthy(with:find("can never fit", 1, true))
  end)

  it("refuse forged objects: a userdata or table posing as a segment, dict or queue", function()
    local seg = assert(shm.create(shm.PRIVATE, 4096))
    seg:remove()
    local proxy = rawget(_G, "newproxy")(true)
    getmetatable(proxy).__metatable = "shm.segment"
    assert.equal(getmetatable(seg), getmetatable(proxy))
    local fakes = { proxy, setmetatable({}, { __metatable = "shm.segment" }), io.stdout }
    for _, fake in ipairs(fakes) do
      for class, obj in pairs({ segment = seg }) do
        for _, m in ipairs(HOT[class]) do
          local ok, err = pcall(methods(obj)[m], fake, 0, 0, 0)
          assert.is_false(ok, m)
          assert.matches("shm%.segment expected", err)
        end
      end
    end
    -- a dict's segment is a segment, a queue is not a dict
    local d = assert(shm.dict.create(H.key(), 65536))
    d:remove()
    assert.equal(0, seg.read(d:segment(), 0, 0):len())
    local q = assert(shm.queue.create(H.key(), 64))
    q:remove()
    local ok, err = pcall(methods(d).get, q, "k")
    assert.is_false(ok)
    assert.matches("shm%.dict expected", err)
    ok, err = pcall(methods(q).push, d, "x")
    assert.is_false(ok)
    assert.matches("shm%.queue expected", err)
    q:detach() d:detach() seg:detach()
  end)

  it("compile into one looping trace (no call to a C API function in it)", function()
    local jutil = require "jit.util"
    local seg = assert(shm.create(shm.PRIVATE, 4096))
    seg:remove()
    local d = assert(shm.dict.create(H.key(), 65536))
    d:remove()
    -- the traces made while f runs: how many loops, and the "stitch" ones (a
    -- trace that ends at a C function it cannot compile, as the C API's are)
    local function traces(f)
      local links, loops = {}, 0
      jit.flush()
      local function record(what, tr)
        if what == "stop" then
          local link = jutil.traceinfo(tr).linktype
          if link == "loop" then loops = loops + 1 end
          if link == "stitch" then links[#links + 1] = link end
        end
      end
      jit.attach(record, "trace")
      f()
      jit.attach(record)
      return links, loops
    end
    -- (the JIT's heuristics may abort a trace now and then: a few tries, and
    -- never a stitch in any of them)
    local function compiles(f)
      local total = 0
      for _ = 1, 3 do
        local links, loops = traces(f)
        assert.same({}, links)
        total = total + loops
        if total >= 1 then return true end
      end
      return false
    end
    assert.is_true(compiles(function()
      local x = 0
      for _ = 1, 20000 do x = x + seg:load(0) + seg:add(8, 1) + #seg:read(0, 16) end
      seg:store(16, x)
    end))
    assert.is_true(compiles(function()
      for i = 1, 20000 do d:set("k", i) assert(d:get("k") == i) d:incr("n", 1, 0) end
    end))
    d:detach() seg:detach()
  end)

  it("keep working in a compiled loop across a detach: it raises, never crashes", function()
    local out, rc = H.run([[
      local shm = require "shm"
      local seg = assert(shm.create(shm.PRIVATE, 1048576)); seg:remove()
      local d = assert(shm.dict.create(shm.PRIVATE, 1048576)); d:remove()
      local q = assert(shm.queue.create(shm.PRIVATE, 4096)); q:remove()
      local function loop(n, at)
        local x = 0
        for i = 1, n do
          if i == at then seg:detach() end
          x = x + seg:load(0) + seg:add(8, 1) + #seg:read(0, 64)
          seg:write("abc", 100):fill(1, 200, 8):store(16, i)
        end
        return x
      end
      local function dloop(n, at)
        for i = 1, n do
          if i == at then d:detach() end
          d:set("k", i) assert(d:get("k") == i) d:incr("c", 1, 0)
        end
      end
      local function qloop(n, at)
        for i = 1, n do
          if i == at then q:detach() end
          q:push("job", 0) assert(q:pop(0) == "job")
        end
      end
      assert(loop(200000))                  -- compiled
      print(pcall(loop, 200000, 150000))    -- detached from inside the trace's loop
      print(pcall(loop, 200000))            -- the compiled trace, entered detached
      dloop(200000)
      print(pcall(dloop, 200000, 150000))
      print(pcall(dloop, 10))
      qloop(200000)
      print(pcall(qloop, 200000, 150000))
      print(pcall(qloop, 10))
      print("survived")
    ]])
    assert.equal(0, rc, out)
    local _, n = out:gsub("false\t[^\n]*attempt to use a detached segment", "")
    assert.equal(2, n, out)
    _, n = out:gsub("false\t[^\n]*attempt to use a detached dict", "")
    assert.equal(2, n, out)
    _, n = out:gsub("false\t[^\n]*attempt to use a detached queue", "")
    assert.equal(2, n, out)
    assert.matches("survived\n$", out)
  end)
end)
