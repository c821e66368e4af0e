-- `luarocks make` installs a working module offline.
local H = require "helpers"

describe("rockspec", function()
  it("lists every C source file", function()
    local f = assert(io.open(H.root .. "/rockspec/lua-shm-scm-1.rockspec"))
    local text = f:read("*a")
    f:close()
    local out = H.sh("cd " .. H.shellquote(H.root) .. " && ls src/*.c")
    local n = 0
    for file in out:gmatch("[^\n]+") do
      n = n + 1
      assert.truthy(text:find('"' .. file .. '"', 1, true), file .. " missing from the rockspec")
    end
    assert.is_true(n > 0)
  end)

  it("installs with luarocks make into a scratch tree, and the module works from there", function()
    local tmp = os.tmpname()
    os.remove(tmp)
    local tree, copy = tmp .. "/tree", tmp .. "/src"
    finally(function() H.exec("rm -rf " .. H.shellquote(tmp)) end)
    -- build from a copy so the work tree gets no objects
    local out, rc = H.sh(string.format(
      "mkdir -p %s && cd %s && cp -r src lua rockspec %s/ && cd %s && " ..
      "luarocks --lua-version=%s make rockspec/lua-shm-scm-1.rockspec --tree=%s%s",
      copy, H.shellquote(H.root), copy, copy, H.luaver, tree,
      -- LuaJIT: a 5.1 tree, built against LuaJIT's headers
      jit and " LUA_INCDIR=/usr/include/luajit-2.1" or ""))
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
    assert.matches("^rock lua%-shm ", out)
    -- lshm is installed as a command, wrapped to find the installed module
    out, rc = H.sh(tree .. "/bin/lshm ls")
    assert.equal(0, rc, out)
    assert.matches("^KIND%s+KEY/NAME", out)
  end)

  it("installs with make install, honouring DESTDIR and PREFIX", function()
    local dest = os.tmpname()
    os.remove(dest)
    finally(function() H.exec("rm -rf " .. H.shellquote(dest)) end)
    local out, rc = H.sh("make -s -C " .. H.shellquote(H.root) .. " install LUA=" .. H.lua
      .. " DESTDIR=" .. dest .. " PREFIX=/opt/x")
    assert.equal(0, rc, out)
    for _, f in ipairs({ "/opt/x/lib/lua/" .. H.luaver .. "/shm/core.so",
                         "/opt/x/share/lua/" .. H.luaver .. "/shm.lua",
                         "/opt/x/bin/lshm" }) do
      assert.is_true(os.rename(dest .. f, dest .. f), f .. " not installed")
    end
    out, rc = H.sh("make -s -C " .. H.shellquote(H.root) .. " install LUA=" .. H.lua
      .. " DESTDIR=" .. dest .. " LIBDIR=/l LUADIR=/s BINDIR=/b")
    assert.equal(0, rc, out)
    assert.is_true(os.rename(dest .. "/l/shm/core.so", dest .. "/l/shm/core.so"))
    assert.is_true(os.rename(dest .. "/s/shm.lua", dest .. "/s/shm.lua"))
  end)
end)
