std = "lua54"
max_line_length = 120
files["spec/"] = { std = "+busted" }
files["lua/lshm"] = { globals = {} }
exclude_files = { "build/" }
self = false
