-- `luarocks make` installs a working module offline.
local H = require "helpers"

describe("rockspec", function()
  it("lists every C source file", function()
    local f = assert(io.open(H.root .. "/rockspec/lua-shm-scm-1.rockspec"))
    local text = f:read("a")
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
    finally(function() os.execute("rm -rf " .. H.shellquote(tmp)) end)
    -- build from a copy so the work tree gets no objects
    local out, rc = H.sh(string.format(
      "mkdir -p %s && cd %s && cp -r src lua rockspec %s/ && cd %s && " ..
      "luarocks --lua-version=5.4 make rockspec/lua-shm-scm-1.rockspec --tree=%s",
      copy, H.shellquote(H.root), copy, copy, tree))
    assert.equal(0, rc, out)
    out, rc = H.run([[
      local shm = require "shm"
      assert(package.searchpath("shm.core", package.cpath):find("/tree/", 1, true))
      local seg = assert(shm.create(shm.PRIVATE, 64))
      seg:write("rock")
      io.write(seg:read(0, 4), " ", shm._VERSION)
      seg:remove()
    ]], nil, { env = {
      LUA_PATH = tree .. "/share/lua/5.4/?.lua;;",
      LUA_CPATH = tree .. "/lib/lua/5.4/?.so;;",
    } })
    assert.equal(0, rc, out)
    assert.matches("^rock lua%-shm ", out)
  end)
end)
