-- Which build the suite runs against, and the one exported symbol.
local H = require "helpers"

describe("the module", function()
  it("is loaded from the build the suite was pointed at, here and in children", function()
    local want = H.env.LUA_CPATH:gsub(";;$", ""):gsub("%?", "shm/core")
    local here = H.searchpath("shm.core", package.cpath)
    assert.equal(want:gsub("^.*/build/", "build/"), here:gsub("^.*/build/", "build/"))
    local out, rc = H.run(H.SEARCHPATH .. [[io.write(searchpath("shm.core", package.cpath))]])
    assert.equal(0, rc)
    assert.equal(want, out)
  end)

  it("exports luaopen_shm_core and nothing else", function()
    local so = H.searchpath("shm.core", package.cpath)
    local out, rc = H.sh("nm -D --defined-only " .. H.shellquote(so) .. " | awk '$2 ~ /^[TDBR]$/ {print $3}'")
    assert.equal(0, rc, out)
    local names = {}
    for name in out:gmatch("%S+") do
      if not name:match("^_") then names[#names + 1] = name end
    end
    assert.same({ "luaopen_shm_core" }, names)
  end)
end)
