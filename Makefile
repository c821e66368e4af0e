# lua-shm: shared memory for Lua.
#   make            build build/lua5.4/shm/core.so (needs only a C compiler and Lua's headers)
#   make test       run the busted suite (LUA=lua5.4; also lua5.1 lua5.2 lua5.3 luajit)
#   make demo       writer and reader processes through one segment (examples/)
#   make prove      shm.dict's proof in its long form (oracle, model, kill points, storms: minutes)
#   make docs       the API reference in docs/index.html (LDoc)
#   make rock       a source rock, lua-shm-VERSION-1.src.rock, that luarocks installs offline
#   make install    PREFIX=/usr/local DESTDIR=  (or LIBDIR=/LUADIR=/BINDIR= as LuaRocks passes)
# On Debian, test/demo/docs/rock first check the packages they need (make deps):
# installed with apt-get --no-remove as root, else the apt-get line is printed.

LUA         ?= lua5.4
ifeq ($(LUA),luajit)
LUA_VERSION ?= 5.1
LUA_PC      ?= luajit
LUA_INC_FALLBACK := -I/usr/include/luajit-2.1
# OpenResty's LuaJIT (luajit2, which nginx's Lua module needs) or Debian's: either
# will do, the one installed is completed; on a machine with neither, luajit2
LUA_DEB     ?= luajit2,libluajit2-5.1-dev|luajit,libluajit-5.1-dev
else
LUA_VERSION ?= $(patsubst lua%,%,$(LUA))
LUA_PC      ?= $(LUA)
LUA_INC_FALLBACK := -I/usr/include/$(LUA)
LUA_DEB     ?= $(LUA),$(if $(filter lua5.1,$(LUA)),liblua5.1-0-dev,lib$(LUA)-dev)
endif
PKG_CONFIG  ?= pkg-config
LUA_INC     ?= $(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null || echo $(LUA_INC_FALLBACK))
CC          ?= cc
CFLAGS      ?= -O2 -g
WARN        := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ALL_CFLAGS  := $(WARN) -fPIC -fvisibility=hidden $(LUA_INC) $(CFLAGS)
LDFLAGS     ?=
LIBFLAG     ?= -shared

PREFIX      ?= /usr/local
LIBDIR      ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
LUADIR      ?= $(PREFIX)/share/lua/$(LUA_VERSION)
BINDIR      ?= $(PREFIX)/bin

# one build per interpreter: build/lua5.4/shm/core.so, build/luajit/shm/core.so, ...
BUILD := build/$(LUA)
SRCS := $(wildcard src/*.c)
OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIB  := $(BUILD)/shm/core.so
VERSION := $(shell sed -n 's/^\#define SHM_VERSION "lua-shm \(.*\)"/\1/p' src/shm.h)

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;
# the specs (and the children they start) load the module from here
export SHM_CPATH := $(CURDIR)/$(BUILD)/?.so
export LUA

.PHONY: all deps test demo install clean bench check-asan check-valgrind docs rock rockspec

all: $(LIB)

# objects depend on the Makefile (flags), never on a packaging step
$(BUILD)/obj/%.o: src/%.c src/*.h Makefile
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(OBJS)
	@mkdir -p $(@D)
	$(CC) $(LIBFLAG) $(LDFLAGS) -o $@ $(OBJS)

# Debian packages each goal needs (.ci/deps: "a,a-dev|b,b-dev" = either pair).
# Building alone (make, make install) checks none: it needs a compiler and headers.
PKGS_demo           := $(LUA_DEB) gcc make
PKGS_test           := $(PKGS_demo) lua-busted
PKGS_check-asan     := $(PKGS_test)
PKGS_prove          := $(PKGS_test)
PKGS_check-valgrind := $(PKGS_test) valgrind
PKGS_docs           := lua-ldoc lua-discount
PKGS_rock           := zip luarocks
PKGS_deps           := $(PKGS_check-valgrind) $(PKGS_docs) $(PKGS_rock)
DEPS_GOALS := $(filter $(patsubst PKGS_%,%,$(filter PKGS_%,$(.VARIABLES))),$(MAKECMDGOALS))
deps:
	@sh .ci/deps $(foreach p,$(sort $(foreach g,$(DEPS_GOALS),$(PKGS_$(g)))),'$(p)')
# BUSTED_ARGS=--exclude-tags=slow: the quick loop (no packaging or docs specs)
BUSTED_ARGS ?=
test: deps $(LIB)
	busted --lua=$(LUA) $(BUSTED_ARGS)

# make prove: the long form of shm.dict's proof (the specs run a bounded form
# in make test): thousands of random sequences against ngx.shared.DICT and the
# model (SHM_SEED to vary them), a kill at every instruction of every listed
# write path (SHM_PROVE=1; Lua 5.4), kill -9 storms of a minute each.
PROVE_SPECS := spec/dict_model_spec.lua spec/dict_oracle_spec.lua spec/dict_killpoints_spec.lua spec/dict_crash_spec.lua
.PHONY: prove
prove: deps $(LIB)
	SHM_PROVE=1 SHM_MODEL_SEQS=$(or $(SHM_MODEL_SEQS),5000) SHM_ORACLE_SEQS=$(or $(SHM_ORACLE_SEQS),3000) \
	  busted --lua=$(LUA) $(BUSTED_ARGS) $(PROVE_SPECS)

demo: deps $(LIB)
	$(LUA) examples/demo.lua

BENCH_BINS := build/bench/cmemcpy build/bench/cpipe build/bench/csem build/bench/cfutex
build/bench/%: bench/%.c
	@mkdir -p $(@D)
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -o $@ $<

# make bench-deps: nginx + ngx_http_lua + lua-resty-core and redis for the dict
# section's baselines (installed with --no-remove when root, never a removal;
# see bench/deps.sh). BENCH_QUICK=1 needs none of them.
.PHONY: bench-deps
bench-deps:
	@[ "$(BENCH_QUICK)" = 1 ] || sh bench/deps.sh

# make bench-compare BASE=rev: this build beside rev's (built from git into
# build/bench/base), the small-op, queue, round-trip and dict loops
# interleaved in one run (bench/compare.lua; BENCH_ROUNDS, default 5).
BASE ?= HEAD~1
BENCH_BASE := build/bench/base
.PHONY: bench-compare
bench-compare: $(LIB)
	rm -rf $(BENCH_BASE) && mkdir -p $(BENCH_BASE)
	git archive $(BASE) | tar -x -C $(BENCH_BASE)
	$(MAKE) -s -C $(BENCH_BASE) LUA=$(LUA) >/dev/null
	LUA_PATH="$(CURDIR)/bench/?.lua;;" $(LUA) bench/compare.lua $(abspath $(BENCH_BASE)) $(CURDIR) $(or $(BENCH_ROUNDS),5)

bench: $(LIB) $(BENCH_BINS) bench-deps
	LUA_PATH="$(CURDIR)/bench/?.lua;$(LUA_PATH)" $(LUA) bench/run.lua
	$(if $(filter luajit,$(LUA)),$(if $(BENCH_QUICK),,LUA_PATH="$(CURDIR)/bench/?.lua;$(LUA_PATH)" $(LUA) bench/ffi.lua))
	LUA_PATH="$(CURDIR)/bench/?.lua;$(LUA_PATH)" $(LUA) bench/lock.lua

# lua/ is exactly what is installed; lshm runs under the interpreter it was installed for
install: $(LIB)
	install -d $(DESTDIR)$(LIBDIR)/shm $(DESTDIR)$(LUADIR) $(DESTDIR)$(BINDIR)
	install -m 0755 $(LIB) $(DESTDIR)$(LIBDIR)/shm/core.so
	cd lua && find . -name '*.lua' -exec install -D -m 0644 {} $(DESTDIR)$(LUADIR)/{} \;
	sed '1s|^#!.*|#!/usr/bin/env $(LUA)|' bin/lshm > $(DESTDIR)$(BINDIR)/lshm
	chmod 0755 $(DESTDIR)$(BINDIR)/lshm

# A source rock: a zip of the versioned rockspec (made from the scm one) and of
# the tarball of the sources its source.url names; `luarocks install
# ./lua-shm-$(VERSION)-1.src.rock` builds it offline. (luarocks pack would
# fetch source.url first, and there is no release URL to fetch it from.)
ROCKSPEC := rockspec/lua-shm-$(VERSION)-1.rockspec
ROCK     := lua-shm-$(VERSION)-1.src.rock
ROCK_DIR ?= .
ROCK_FILES := LICENSE README.md Makefile config.ld .ci/deps src lua bin examples rockspec
rockspec: $(ROCKSPEC)
$(ROCKSPEC): rockspec/lua-shm-scm-1.rockspec src/shm.h
	sed -e 's/^version = "scm-1"/version = "$(VERSION)-1"/' \
	    -e 's|^  url = .*|  url = "lua-shm-$(VERSION).tar.gz", -- the tarball beside this rockspec (make rock)|' \
	    -e 's|^  -- scm:.*|  dir = "lua-shm-$(VERSION)",|' $< > $@
rock: deps $(ROCKSPEC)
	rm -rf build/rock && mkdir -p build/rock/lua-shm-$(VERSION)
	cp -R --parents $(ROCK_FILES) build/rock/lua-shm-$(VERSION)/
	tar -C build/rock --owner=0 --group=0 --sort=name -czf build/rock/lua-shm-$(VERSION).tar.gz lua-shm-$(VERSION)
	cp $(ROCKSPEC) build/rock/
	rm -f $(ROCK_DIR)/$(ROCK)
	cd build/rock && zip -q -X $(abspath $(ROCK_DIR)/$(ROCK)) $(notdir $(ROCKSPEC)) lua-shm-$(VERSION).tar.gz
	@echo $(ROCK_DIR)/$(ROCK)

# The whole suite with the module built with AddressSanitizer and UBSan; the
# (uninstrumented) interpreter gets the runtime preloaded, children inherit it.
ASAN_LIB := $(BUILD)/asan/shm/core.so
ASAN_OBJS := $(patsubst src/%.c,$(BUILD)/asan/obj/%.o,$(SRCS))
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
$(BUILD)/asan/obj/%.o: src/%.c src/*.h Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) -fPIC -fvisibility=hidden $(LUA_INC) -O1 -g $(SAN_FLAGS) -c $< -o $@
$(ASAN_LIB): $(ASAN_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared $(SAN_FLAGS) -o $@ $(ASAN_OBJS)
check-asan: deps $(ASAN_LIB) $(LIB)
	SHM_CPATH="$(CURDIR)/$(BUILD)/asan/?.so" \
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	busted --lua=$(LUA) $(BUSTED_ARGS)

# the check runs before anything of these goals is compiled
ifneq ($(filter test demo check-asan check-valgrind,$(MAKECMDGOALS)),)
$(OBJS) $(ASAN_OBJS): | deps
endif

# The whole suite in-process under valgrind memcheck (children run natively):
# any memory error fails it, and so does a definitely-lost block.
check-valgrind: deps $(LIB)
	valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	  --suppressions=$(CURDIR)/.ci/valgrind.supp \
	  $(LUA) $$(command -v busted) --ignore-lua $(BUSTED_ARGS)

# The API reference, from the doc comments in src/*.c and lua/shm.lua (LDoc;
# lua-discount renders the Markdown in them).
DOCS_DIR ?= docs
docs: deps
	@out=$$(ldoc -q -d $(DOCS_DIR) . 2>&1); rc=$$?; \
	printf '%s\n' "$$out" | grep -v -e '^reading configuration from' -e '^found master module' \
	  -e '^\*\*\*closing section from master module' -e '^$$' || true; exit $$rc
	@echo "$(DOCS_DIR)/index.html"

# (and what luarocks make's builtin build leaves in the checkout: src/*.o, shm/core.so)
clean:
	rm -rf build docs lua-shm-*.src.rock
	rm -f src/*.o shm/core.so
	[ ! -d shm ] || rmdir --ignore-fail-on-non-empty shm
