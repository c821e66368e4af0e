-- What a new user reads first: README's examples run as written (twice: they
-- clean up after themselves) on the interpreter under test, and its links lead
-- somewhere in a fresh clone.
local H = require "helpers"

local function readme()
  local f = assert(io.open(H.root .. "/README.md"))
  local text = f:read("*a")
  f:close()
  return text
end

describe("README", function()
  it("has examples that run as written and leave nothing behind", function()
    local blocks = 0
    for code in readme():gmatch("\n```lua\n(.-)\n```") do
      -- to-be-closed variables are 5.4 syntax; the others run on every version
      if H.lua54 or not code:find("<close>", 1, true) then
        blocks = blocks + 1
        for _ = 1, 2 do
          local out, rc = H.run(code)
          assert.equal(0, rc, code .. "\n" .. out)
        end
      end
    end
    assert.is_true(blocks >= 2)
    local out = H.sh("ls /dev/shm")
    assert.is_nil(out:find("^jobs\n") or out:find("\njobs\n"), "/dev/shm/jobs left behind")
  end)

  it("says what 5.1 and LuaJIT users write, not only <close>", function()
    local quick = readme():match("## Quick start(.-)\n## ")
    local first = quick:match("```lua\n(.-)```")
    assert.is_nil(first:find("<close>", 1, true))
    assert.truthy(first:find("seg:detach()", 1, true))
  end)

  it("stands alone: links lead into the repository or the web, generated files say how", function()
    local text = readme()
    assert.is_nil(text:find("../shared", 1, true))
    -- a file is in a fresh clone if git tracks it (outside git: if it exists)
    local git = H.exec("git -C " .. H.shellquote(H.root) .. " rev-parse >/dev/null 2>&1")
    for target in text:gmatch("%]%(([^)]+)%)") do
      if not target:match("^https?://") and not target:match("^#") then
        assert.is_nil(target:find("..", 1, true), target)
        local there = git and H.exec("git -C " .. H.shellquote(H.root) .. " ls-files --error-unmatch "
          .. H.shellquote(target) .. " >/dev/null 2>&1") or io.open(H.root .. "/" .. target) ~= nil
        assert.is_true(there, target .. " is not in the repository")
      end
    end
    assert.truthy(text:find("`make docs` generates", 1, true))
    assert.is_nil(text:find("seeds'", 1, true))
  end)

  it("starts workers from Lua as its Processes section says, and they print what it says", function()
    local blocks = H.readme_blocks("Processes")
    assert.is_true(#blocks >= 3)
    local posix = H.run("io.write(tostring(pcall(require, 'posix.unistd')))")
    for _, code in ipairs(blocks) do
      local out, rc = H.run(code)
      assert.equal(0, rc, code .. "\n" .. out)
      -- (the fork example does nothing where luaposix is not installed)
      if not (code:find("posix.unistd", 1, true) and posix == "false") then
        assert.equal(H.says(code), H.blanks(out), code)
      end
    end
    H.cleanup()
  end)

  it("starts with make demo and make test", function()
    assert.matches("^# [^\n]*\n\n```sh\nmake demo [^\n]*\nmake test ", readme())
  end)
end)

describe("spec helpers", function()
  it("H.spawn knows the child's pid before the child says anything", function()
    local fifo = H.fifo()
    local child = H.spawn([[
      local fifo = ...
      print(io.open("/proc/self/stat"):read("*n")) io.stdout:flush()
      io.write(io.open(fifo):read("*l"))
    ]], { fifo })
    finally(H.cleanup)
    assert.is_number(child.pid)
    assert.equal(child.pid, tonumber(child:line()))
    assert.is_true(H.until_true(function() return H.state(child.pid) == "S" end))
    H.release(fifo, "done")
    local out, rc = child:finish()
    assert.equal(0, rc)
    assert.equal("done", out)
  end)

  it("H.command runs a script under the interpreter under test with this build", function()
    local script = H.script("io.write(package.searchpath and 'x' or 'y', ' ', require('shm')._VERSION)")
    finally(function() os.remove(script) end)
    local out, rc = H.sh(H.command({ script }))
    assert.equal(0, rc, out)
    assert.matches(" lua%-shm ", out)
  end)
end)
