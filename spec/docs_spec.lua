-- make docs documents every public function, with its parameters and returns.
local shm = require "shm"
local H = require "helpers"

local has_ldoc = H.exec("command -v ldoc >/dev/null 2>&1")
local docit = has_ldoc and it or pending

describe("the API reference", function()
  docit("covers every function of the module, segments, mutexes and queues", function()
    local dir = os.tmpname()
    os.remove(dir)
    finally(function() H.exec("rm -rf " .. H.shellquote(dir)) end)
    local out, rc = H.sh("cd " .. H.shellquote(H.root) .. " && ldoc -q -d " .. H.shellquote(dir) .. " .")
    assert.equal(0, rc, out)
    local f = assert(io.open(dir .. "/index.html"))
    local html = f:read("*a")
    f:close()
    local documented = {}
    for name in html:gmatch('<a name = "([^"]+)"></a>') do documented[name] = true end
    local functions = 0
    local function check(prefix, t)
      for k, v in pairs(t) do
        if type(v) == "function" and not k:match("^_") then
          functions = functions + 1
          assert.is_true(documented[prefix .. k] or false, prefix .. k .. " is not documented")
        end
      end
    end
    check("", shm)
    check("queue.", shm.queue)
    local seg = assert(shm.create(shm.PRIVATE, 4096))
    local _ = seg.size -- (an attached segment's metatable is its own after the first index)
    check("segment:", debug.getmetatable(seg).__index) -- (getmetatable: the class name only)
    check("mutex:", debug.getmetatable(seg:mutex(0)).__index)
    local q = assert(shm.queue.create(H.key(), 64))
    check("queue:", debug.getmetatable(q).__index)
    q:remove() q:detach()
    seg:remove() seg:detach()
    -- and each says what it takes and gives, with an example
    local _, params = html:gsub("<h3>Parameters:</h3>", "")
    local _, usages = html:gsub("<h3>Usage:</h3>", "")
    assert.is_true(params >= 25, "parameters documented: " .. params)
    assert.equal(functions, usages, "every function has an example")
    H.cleanup()
  end)
end)
