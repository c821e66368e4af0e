-- Numbers in a shm.dict between interpreters with and without an integer
-- subtype.  The rule, both ways:
--  * from LuaJIT, 5.1 and 5.2 (numbers are doubles), a whole number exactly
--    representable (|x| < 2^53; not -0.0, which stays a float with its sign,
--    as ngx keeps it) is stored as an integer: Lua 5.3+ reads it back as one,
--    and `incr` of it with an integer step stays one; fractions (and 2^53 and beyond, infinities) stay floats;
--  * from 5.3+, integers and floats are stored as they are: a float (3.0)
--    stays a float, also after an `incr` from LuaJIT or 5.1.
-- Writers and readers are child processes of each interpreter (the module
-- built for each, as make LUA=... builds it).
local H = require "helpers"
local shm = require "shm"


local WRITE = [[
local shm = require "shm"
local d = assert(shm.dict.open(arg[1]))
local what = arg[2]
if what == "set" then
  assert(d:set("whole", 3)) assert(d:set("neg", -42)) assert(d:set("exact", 2 ^ 53 - 1))
  assert(d:set("beyond", 2 ^ 53)) assert(d:set("frac", 2.5)) assert(d:set("inf", math.huge))
  for _ = 1, 3 do assert(d:incr("count", 1, 0)) end
  assert(d:incr("fcount", 0.5, 1))
  -- (made at run time: 5.1 keeps one constant for 0 and -0.0 in a function)
  local zero = tonumber("0")
  assert(d:set("negzero", -zero))
elseif what == "nested" then
  assert(d:set("t", { n = 5, f = 0.5 }))
  assert(d:rpush("l", 7)) assert(d:rpush("l", 7.5))
elseif what == "incr" then -- on 5.3's values: an integer and a float
  assert(d:incr("i", 1)) assert(d:incr("f", 1))
end
print("ok " .. (jit and "LuaJIT" or _VERSION))
]]

-- prints "key type value" for each key asked
local READ = [[
local shm = require "shm"
local d = assert(shm.dict.open(arg[1]))
for i = 2, #arg do
  local k, v = arg[i]:match("^([^.]+)%.?(.*)$")
  local x = d:get(k)
  if v == "lpop" then x = d:lpop(k) elseif v ~= "" then x = x[v] end
  print(arg[i], math.type and math.type(x) or type(x), string.format("%.17g", x))
end
]]

local function run(lua, code, args, env)
  local e = { LUA_PATH = H.env.LUA_PATH, LUA_CPATH = H.root .. "/build/" .. lua .. "/?.so;;" }
  for k, v in pairs(env or {}) do e[k] = v end
  local out, rc = H.run(code, args, { interpreter = lua, env = e })
  assert.equal(0, rc, lua .. ": " .. out)
  return out
end

-- { key = "integer 3" ...} as lua5.4 reads them
local function read54(name, keys)
  local got = {}
  for line in run("lua5.4", READ, { name, H.unpack(keys) }):gmatch("[^\n]+") do
    local k, t, v = line:match("^(%S+)\t(%S+)\t(%S+)$")
    got[k] = t .. " " .. v
  end
  return got
end

describe("numbers across interpreters", function()
  local name, d
  setup(function()
    for _, lua in ipairs({ "lua5.4", "lua5.1", "luajit" }) do
      local out, rc = H.sh(H.make .. " -C " .. H.shellquote(H.root) .. " LUA=" .. lua)
      assert.equal(0, rc, out)
    end
  end)
  before_each(function()
    name = H.name()
    d = assert(shm.dict.create(name, 65536))
  end)
  after_each(function()
    d:remove()
    d:detach()
    H.cleanup()
  end)

  local SET = {
    whole = "integer 3", neg = "integer -42", exact = "integer 9007199254740991",
    beyond = "float 9007199254740992", frac = "float 2.5", negzero = "float -0", inf = "float inf",
    count = "integer 3", fcount = "float 1.5",
  }
  local function keys(t)
    local r = {}
    for k in pairs(t) do r[#r + 1] = k end
    return r
  end

  local writers = {
    { "LuaJIT (FFI)", "luajit", it, { SHM_NO_FFI = "0" } }, -- (whatever the suite runs with)
    { "LuaJIT without the FFI (SHM_NO_FFI=1)", "luajit", it, { SHM_NO_FFI = "1" } },
    { "Lua 5.1", "lua5.1", it },
  }
  for _, w in ipairs(writers) do
    local label, lua, test, env = w[1], w[2], w[3], w[4]
    test("whole numbers written by " .. label .. " read back as integers in 5.4, fractions as floats", function()
      run(lua, WRITE, { name, "set" }, env)
      assert.same(SET, read54(name, keys(SET)))
      -- and incr from 5.4 keeps the integer an integer
      assert.equal(103, d:incr("count", 100))
      if math.type then assert.equal("integer", math.type(d:get("count"))) end
    end)
    it("numbers inside table values and lists written by " .. label .. " too", function()
      run(lua, WRITE, { name, "nested" }, env)
      assert.same({ ["t.n"] = "integer 5", ["t.f"] = "float 0.5", ["l.lpop"] = "integer 7" },
        read54(name, { "t.n", "t.f", "l.lpop" }))
    end)
  end

  for _, w in ipairs(writers) do
    local label, lua, test, env = w[1], w[2], w[3], w[4]
    test("a float written by 5.4 stays a float after " .. label .. "'s incr, an integer an integer", function()
      run("lua5.4", [[
        local shm = require "shm"
        local d = assert(shm.dict.open(arg[1]))
        assert(d:set("i", 7)) assert(d:set("f", 3.0))
      ]], { name })
      run(lua, WRITE, { name, "incr" }, env)
      assert.same({ i = "integer 8", f = "float 4" }, read54(name, { "i", "f" }))
    end)
  end

  it("LuaJIT and 5.1 read 5.4's integers and floats as their numbers", function()
    run("lua5.4", [[
      local shm = require "shm"
      local d = assert(shm.dict.open(arg[1]))
      assert(d:set("i", 7)) assert(d:set("f", 3.0)) assert(d:set("h", 2.5))
    ]], { name })
    for _, lua in ipairs({ "luajit", "lua5.1" }) do
      local out = run(lua, READ, { name, "i", "f", "h" })
      assert.equal("i\tnumber\t7\nf\tnumber\t3\nh\tnumber\t2.5\n", out)
    end
  end)
end)
