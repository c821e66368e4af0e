-- Packaging: the rockspecs, make rock and its offline LuaRocks install, make install.
local shm = require "shm"
local H = require "helpers"

local function read(path)
  local f = assert(io.open(path))
  local text = f:read("*a")
  f:close()
  return text
end

local VERSION = shm._VERSION:match("^lua%-shm (.*)$")
local SCM = H.root .. "/rockspec/lua-shm-scm-1.rockspec"
local VERSIONED = H.root .. "/rockspec/lua-shm-" .. VERSION .. "-1.rockspec"

-- A scratch directory, removed when the test ends.
local function scratch()
  local dir = os.tmpname()
  os.remove(dir)
  assert(H.exec("mkdir -m 0755 " .. H.shellquote(dir)))
  finally(function() H.exec("rm -rf " .. H.shellquote(dir)) end)
  return dir
end

-- `luarocks` for the interpreter under test; LuaJIT's tree is a 5.1 tree
-- whose scripts run under luajit and whose C modules use LuaJIT's headers.
local function luarocks(dir)
  if not jit then return "luarocks --lua-version=" .. H.luaver end
  local config = dir .. "/luarocks-config.lua"
  local f = assert(io.open(config, "w"))
  f:write('lua_interpreter = "luajit"\n',
    'variables = { LUA_BINDIR = "/usr/bin", LUA_INCDIR = "/usr/include/luajit-2.1" }\n')
  f:close()
  return "LUAROCKS_CONFIG=" .. H.shellquote(config) .. " luarocks --lua-version=5.1"
end

-- lshm ls, run as installed (its shebang or LuaRocks' wrapper picks the interpreter)
local function lshm_ls(bin)
  local out, rc = H.sh("env -u LUA_PATH -u LUA_CPATH " .. H.shellquote(bin) .. " ls")
  assert.equal(0, rc, out)
  assert.matches("^KIND%s+KEY/NAME", out)
end

describe("packaging", function()
  it("the rockspecs list every C source file and what lua/ holds, nothing else", function()
    local scm, versioned = read(SCM), read(VERSIONED)
    for _, text in ipairs({ scm, versioned }) do
      local out = H.sh("cd " .. H.shellquote(H.root) .. " && ls src/*.c")
      local n = 0
      for file in out:gmatch("[^\n]+") do
        n = n + 1
        assert.truthy(text:find('\n        "' .. file .. '",\n', 1, true), file .. " missing from the rockspec")
      end
      assert.is_true(n > 0)
      -- lua/ is exactly what is installed: every file there is a module of the rockspec
      out = H.sh("cd " .. H.shellquote(H.root) .. " && find lua -type f | sort")
      for file in out:gmatch("[^\n]+") do
        assert.matches("%.lua$", file)
        assert.truthy(text:find('"' .. file .. '"', 1, true), file .. " is in lua/ but not installed")
      end
      assert.truthy(text:find('bin = { lshm = "bin/lshm" }', 1, true))
      assert.truthy(text:find('license = "MIT"', 1, true))
    end
    assert.matches("^MIT License\n", read(H.root .. "/LICENSE"))
  end)

  it("has a versioned rockspec, the one make rockspec writes from the scm one", function()
    local dir = scratch()
    local out, rc = H.sh("cd " .. H.shellquote(H.root) .. " && cp -R --parents Makefile src/shm.h rockspec "
      .. H.shellquote(dir) .. " && " .. H.make .. " -B -C " .. H.shellquote(dir) .. " rockspec")
    assert.equal(0, rc, out)
    assert.equal(read(dir .. "/rockspec/lua-shm-" .. VERSION .. "-1.rockspec"), read(VERSIONED),
      "rockspec/lua-shm-" .. VERSION .. "-1.rockspec is stale: run make rockspec")
    assert.truthy(read(VERSIONED):find('\nversion = "' .. VERSION .. '-1"\n', 1, true))
  end)

  it("make rock makes a source rock that luarocks installs offline, lshm included #slow", function()
    local dir = scratch()
    local out, rc = H.sh(H.make .. " -C " .. H.shellquote(H.root) .. " rock ROCK_DIR=" .. H.shellquote(dir))
    assert.equal(0, rc, out)
    local rock = dir .. "/lua-shm-" .. VERSION .. "-1.src.rock"
    assert.equal(rock .. "\n", out)
    local tree = dir .. "/tree"
    -- offline: no rocks server, no network (--only-server to nowhere)
    out, rc = H.sh("cd " .. H.shellquote(dir) .. " && " .. luarocks(dir) .. " install --only-server=" ..
      H.shellquote(dir .. "/no-server") .. " --tree=" .. H.shellquote(tree) .. " " .. H.shellquote(rock))
    assert.equal(0, rc, out)
    out, rc = H.run(H.SEARCHPATH .. [[
      local shm = require "shm"
      assert(searchpath("shm.core", package.cpath):find("/tree/", 1, true))
      local seg = assert(shm.create(shm.PRIVATE, 64))
      seg:write("rock")
      io.write(seg:read(0, 4), " ", shm._VERSION)
      seg:remove()
    ]], nil, { env = {
      LUA_PATH = tree .. "/share/lua/" .. H.luaver .. "/?.lua;;",
      LUA_CPATH = tree .. "/lib/lua/" .. H.luaver .. "/?.so;;",
    } })
    assert.equal(0, rc, out)
    assert.equal("rock " .. shm._VERSION, out)
    -- only the module is installed as Lua code: no demo, reader or writer modules
    out = H.sh("cd " .. H.shellquote(tree .. "/share/lua/" .. H.luaver) .. " && find . -type f | sort")
    assert.equal("./shm.lua\n./shm/fetch.lua\n./shm/ffi.lua\n./shm/lock.lua\n", out)
    -- lshm, wrapped by LuaRocks to run under this interpreter
    assert.truthy(read(tree .. "/bin/lshm"):find("/usr/bin/" .. H.lua, 1, true))
    lshm_ls(tree .. "/bin/lshm")
  end)

  it("installs with luarocks make from a checkout, and make clean removes what it leaves #slow", function()
    local dir = scratch()
    local tree, copy = dir .. "/tree", dir .. "/src"
    -- build from a copy so the work tree gets no objects
    local out, rc = H.sh(string.format(
      "mkdir -p %s && cd %s && cp -R src lua bin rockspec Makefile %s/ && cd %s && " ..
      "%s make rockspec/lua-shm-scm-1.rockspec --tree=%s",
      copy, H.shellquote(H.root), copy, copy, luarocks(dir), tree))
    assert.equal(0, rc, out)
    lshm_ls(tree .. "/bin/lshm")
    -- luarocks' builtin build leaves src/*.o and shm/core.so in the checkout
    local left = "cd " .. H.shellquote(copy) .. " && find . -name '*.o' -o -name '*.so' -o -path ./shm | sort"
    assert.matches("./shm/core.so", H.sh(left))
    out, rc = H.sh(H.make .. " -C " .. H.shellquote(copy) .. " clean")
    assert.equal(0, rc, out)
    assert.equal("", H.sh(left))
  end)

  it("installs with make install, honouring DESTDIR and PREFIX, lshm for this interpreter", function()
    local dest = scratch()
    local out, rc = H.sh(H.make .. " -C " .. H.shellquote(H.root) .. " install LUA=" .. H.lua
      .. " DESTDIR=" .. dest .. " PREFIX=/opt/x")
    assert.equal(0, rc, out)
    for _, f in ipairs({ "/opt/x/lib/lua/" .. H.luaver .. "/shm/core.so",
                         "/opt/x/share/lua/" .. H.luaver .. "/shm.lua",
                         "/opt/x/bin/lshm" }) do
      assert.is_true(os.rename(dest .. f, dest .. f), f .. " not installed")
    end
    local lshm = dest .. "/opt/x/bin/lshm"
    assert.equal("#!/usr/bin/env " .. H.lua .. "\n", read(lshm):match("^[^\n]*\n"))
    -- it finds the module under its own prefix
    lshm_ls(lshm)
    out, rc = H.sh(H.make .. " -C " .. H.shellquote(H.root) .. " install LUA=" .. H.lua
      .. " DESTDIR=" .. dest .. " LIBDIR=/l LUADIR=/s BINDIR=/b")
    assert.equal(0, rc, out)
    assert.is_true(os.rename(dest .. "/l/shm/core.so", dest .. "/l/shm/core.so"))
    assert.is_true(os.rename(dest .. "/s/shm.lua", dest .. "/s/shm.lua"))
  end)
end)
