# lua-shm: shared memory for Lua.
#   make            build build/lua5.4/shm/core.so
#   make test       run the busted suite (LUA=lua5.4; also lua5.1 lua5.2 lua5.3 luajit)
#   make demo       writer and reader processes through one segment
#   make install    PREFIX=/usr/local DESTDIR=  (or LIBDIR=/LUADIR= as LuaRocks passes)

LUA         ?= lua5.4
ifeq ($(LUA),luajit)
LUA_VERSION ?= 5.1
LUA_PC      ?= luajit
LUA_DEV     ?= libluajit-5.1-dev
else
LUA_VERSION ?= $(patsubst lua%,%,$(LUA))
LUA_PC      ?= $(LUA)
LUA_DEV     ?= $(if $(filter lua5.1,$(LUA)),liblua5.1-0-dev,lib$(LUA)-dev)
endif
PKG_CONFIG  ?= pkg-config
LUA_INC     ?= $(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null || echo -I/usr/include/$(LUA))
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

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;
# the specs (and the children they start) load the module from here
export SHM_CPATH := $(CURDIR)/$(BUILD)/?.so
export LUA

.PHONY: all deps test demo install clean bench check-asan check-valgrind docs

all: $(LIB)

$(BUILD)/obj/%.o: src/%.c src/*.h | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(OBJS)
	@mkdir -p $(@D)
	$(CC) $(LIBFLAG) $(LDFLAGS) -o $@ $(OBJS)

# Debian packages the build and the suite need.
DEB_PKGS := $(LUA) $(LUA_DEV) lua-busted luarocks gcc make
deps:
	@missing=""; \
	for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null || exit 1; \
	  else \
	    echo "missing Debian packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

test: $(LIB)
	busted --lua=$(LUA)

demo: $(LIB)
	$(LUA) lua/demo.lua

BENCH_BINS := build/bench/cmemcpy build/bench/cpipe
build/bench/%: bench/%.c
	@mkdir -p $(@D)
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -o $@ $<

# make bench-deps: nginx + ngx_http_lua + lua-resty-core and redis for the dict
# section's baselines (installed with --no-remove when root, never a removal;
# see bench/deps.sh). BENCH_QUICK=1 needs none of them.
.PHONY: bench-deps
bench-deps:
	@[ "$(BENCH_QUICK)" = 1 ] || sh bench/deps.sh

bench: $(LIB) $(BENCH_BINS) bench-deps
	LUA_PATH="$(CURDIR)/bench/?.lua;$(LUA_PATH)" $(LUA) bench/run.lua

install: $(LIB)
	install -d $(DESTDIR)$(LIBDIR)/shm $(DESTDIR)$(LUADIR) $(DESTDIR)$(BINDIR)
	install -m 0755 $(LIB) $(DESTDIR)$(LIBDIR)/shm/core.so
	install -m 0644 lua/shm.lua $(DESTDIR)$(LUADIR)/shm.lua
	install -m 0755 lua/lshm $(DESTDIR)$(BINDIR)/lshm

# The whole suite with the module built with AddressSanitizer and UBSan; the
# (uninstrumented) interpreter gets the runtime preloaded, children inherit it.
ASAN_LIB := $(BUILD)/asan/shm/core.so
ASAN_OBJS := $(patsubst src/%.c,$(BUILD)/asan/obj/%.o,$(SRCS))
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
$(BUILD)/asan/obj/%.o: src/%.c src/*.h | deps
	@mkdir -p $(@D)
	$(CC) $(WARN) -fPIC -fvisibility=hidden $(LUA_INC) -O1 -g $(SAN_FLAGS) -c $< -o $@
$(ASAN_LIB): $(ASAN_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared $(SAN_FLAGS) -o $@ $(ASAN_OBJS)
check-asan: $(ASAN_LIB) $(LIB)
	SHM_CPATH="$(CURDIR)/$(BUILD)/asan/?.so" \
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	busted --lua=$(LUA)

# The whole suite in-process under valgrind memcheck (children run natively):
# any memory error fails it, and so does a definitely-lost block.
check-valgrind: $(LIB)
	valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	  --suppressions=$(CURDIR)/.ci/valgrind.supp \
	  $(LUA) $$(command -v busted) --ignore-lua

# The API reference, from the doc comments in src/*.c and lua/shm.lua (LDoc).
docs:
	@command -v ldoc >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq lua-ldoc >/dev/null; } \
	  || { echo "missing Debian package; run:"; echo "  sudo apt-get install -y lua-ldoc"; exit 1; }
	ldoc -q .
	@echo "docs/index.html"

clean:
	rm -rf build docs
