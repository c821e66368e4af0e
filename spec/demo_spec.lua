-- make demo's scenario, run as make runs it.
local H = require "helpers"

describe("demo", function()
  it("runs the writer and the reader through a queue, two processes through a dict, and removes everything", function()
    local out, rc = H.sh("cd " .. H.shellquote(H.root) .. " && " .. H.command({ "examples/demo.lua" }))
    assert.equal(0, rc, out)
    for _, want in ipairs({
      "reader: nattch=1, waiting for messages",
      "; nattch=2\n",
      "reader: got 21 bytes: hello from the writer",
      "reader: got quit; nattch=2 while the writer is attached",
      "reader: writer gone; nattch=1",
      "reader: 4 pushed, 4 popped, 0 left",
      "demo: hits = 2000 (a: 1000, b: 1000): no increment lost",
      "demo: 0.6 s later get gives nil; get_stale gives \"hello from counters",
      "stale = true",
      "guard waiter: got the lock; the segment says \"held by ",
      "demo: value back to 1; the segment says \"held by the waiter\"",
      "demo: ipcs -m, ipcs -s and /dev/shm hold nothing of ours: everything was removed",
    }) do
      assert.truthy(out:find(want, 1, true), "missing: " .. want .. "\n" .. out)
    end
  end)

  it("fails cleanly, without hanging, when the reader cannot start", function()
    local out, rc = H.sh(H.command({ H.root .. "/examples/reader.lua", "/nonexistent/path" }))
    assert.equal(1, rc)
    assert.matches("^reader: shm.ftok%(/nonexistent/path%): No such file or directory\n$", out)
  end)
end)
