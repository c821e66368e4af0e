/*
 * lua-shm: shared memory for Lua.
 * Internal header shared by the C core (shm.core).  Only luaopen_shm_core is
 * exported from the shared object: everything declared between the
 * visibility push and pop below is hidden (as -fvisibility=hidden makes every
 * definition).  System and Lua headers are included before the push, so that
 * what they declare keeps its default visibility: a header a section needs
 * belongs in the list below, not in the section.
 *
 * Layers (a file uses only the ones above it):
 *   compat, args, class, futex      helpers with no knowledge of segments
 *   segment.c                       the userdata, its methods; dispatches
 *                                   through the kind's table of operations
 *   sysv.c, posix.c, file.c         the kinds (each exports one shm_ops);
 *                                   file.c ends with opening any kind
 *   atomic, pack, lock, mutex,      what lives in a segment
 *   queue, dict, events
 *   core.c                          the module table (luaopen_shm_core)
 */
#ifndef LUA_SHM_H
#define LUA_SHM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "lua.h"
#include "lauxlib.h"

/* The one exported symbol. */
__attribute__((visibility("default"))) int luaopen_shm_core(lua_State *L);

#pragma GCC visibility push(hidden)

#include "compat.h"


/* A luaL_Reg entry for __close, on the Luas that have to-be-closed variables. */
#if LUA_VERSION_NUM >= 504
#define SHM_CLOSE_ENTRY(f) {"__close", f},
#else
#define SHM_CLOSE_ENTRY(f)
#endif

#define SHM_SEGMENT_MT "shm.segment"
#define SHM_VERSION "lua-shm 0.2.0"

/* The kind a key_or_name argument names (shm_checkkind). */
enum shm_kind { SHM_SYSV = 0, SHM_POSIX = 1, SHM_FILE = 2 };

struct shm_ops;

/* A mapping of shared memory, owned by one Lua userdata.  addr == NULL means
 * detached (the "closed" state of liolib's streams).  For POSIX and file maps
 * the name/path is kept in the userdata's first user value. */
typedef struct shm_segment {
  unsigned char *addr;       /* start of the mapping, NULL once detached */
  size_t size;               /* usable bytes (never the page-rounded length) */
  size_t maplen;             /* length passed to munmap (POSIX/file) */
  const struct shm_ops *ops; /* what its kind does: shm_sysv_ops, shm_posix_ops, shm_file_ops */
  int readonly;              /* mapped without write permission */
  int fd;                    /* POSIX/file: descriptor kept for fstat/fchmod; -1 otherwise */
  int shmid;                 /* System V id, -1 otherwise */
  int32_t key;               /* System V key (as given), 0 otherwise */
  int held;                  /* mutexes in it locked by this process: no unmapping then */
  int pins;                  /* reads of the mapping making Lua values (shm_pin) */
  unsigned char *parked;     /* the mapping, detached while pinned: unmapped at the unpin */
  size_t resv_lo, resv_hi;   /* bytes [resv_lo, resv_hi) known backed by memory: reserved
                                by this process, or at open (shm_segment_reserve) */
} shm_segment;

/* Making a Lua value (a string of the segment's bytes) can run a finalizer,
 * which can detach the segment: a function that reads the mapping while it
 * makes values pins it, and a detach meanwhile hides the mapping at once (any
 * later use raises) but unmaps it at the last unpin (or when the segment is
 * collected, if an error skipped the unpin). */
static inline void shm_pin(shm_segment *s) { s->pins++; }
void shm_unpin(shm_segment *s);
/* lua_pushlstring of n bytes at p, inside s's mapping, pinned */
void shm_pushbytes(lua_State *L, shm_segment *s, const void *p, size_t n);

/* What differs between the kinds of segment (as liolib's per-stream closef,
 * luasocket's t_io): each backend exports one table, a segment points at its
 * kind's.  The functions that take a lua_State find the segment at stack
 * index 1 (a method's self: its user value holds the name or path) and
 * return Lua results: true or the info table, else nil, message, errno. */
typedef struct shm_ops {
  const char *kind;      /* "sysv", "posix", "file" (seg.kind, stat().kind) */
  const char *namefield; /* field holding the name ("name", "path"), or NULL */
  /* Unmap and close the descriptor; 0 or the errno of the failing call. */
  int (*unmap)(shm_segment *s);
  /* Push the object as messages name it: "key=0x1234 id=5", "/name", "/path". */
  void (*describe)(lua_State *L, shm_segment *s);
  /* Push the value of field k if the kind has it (key, id; name; path): 1, else 0. */
  int (*field)(lua_State *L, shm_segment *s, const char *k);
  int (*stat)(lua_State *L, shm_segment *s);
  int (*remove)(lua_State *L, shm_segment *s);
  int (*chmod)(lua_State *L, shm_segment *s, int mode);
  int (*chown)(lua_State *L, shm_segment *s, uid_t uid, gid_t gid);
  int (*sync)(lua_State *L, shm_segment *s);
  /* Back bytes [off, off + len) with memory (no lua_State): 0 or errno. */
  int (*reserve)(shm_segment *s, size_t off, size_t len);
} shm_ops;

/* What every shm_open_X(L, module, methods) takes: the stack indices of the
 * module table and of the segment's methods table (to add methods to). */
typedef void shm_openf(lua_State *L, int module, int methods);

/* ---- segment.c: the userdata ---- */
/* A new, detached segment of the given kind on the stack (1 user value). */
shm_segment *shm_newsegment(lua_State *L, const struct shm_ops *ops);
shm_segment *shm_checksegment(lua_State *L, int idx);
shm_segment *shm_checkopen(lua_State *L, int idx);
shm_segment *shm_checkwritable(lua_State *L, int idx);
/* The segment class; leaves its methods table on the stack. */
void shm_open_segment(lua_State *L);

/* Memory committed as used.  A POSIX object or file that a structure (queue,
 * dict) lives in is made sparse but for its first bytes (shm_segment_call):
 * the structure backs each region with memory before it first touches it, so
 * that a full tmpfs or disk is an error of the call that needed the memory,
 * never SIGBUS at the touch.  shm_segment_reserve backs [off, off + len):
 * 0, or an errno (ENOSPC: the tmpfs or disk is full; EINVAL: the range is
 * not in the segment; EBADF: detached or read-only).  It never changes the
 * object's size, and it is idempotent: a range another process reserved
 * costs one fallocate(2) that finds it there; one inside the range this
 * process reserved last (kept in s->resv_lo/hi) costs two comparisons.  A
 * request that extends that range reserves up to the next multiple of
 * SHM_RESERVE_STEP (where the tmpfs has room), so that a structure growing
 * through its memory makes one system call per step; any other reserves
 * what it asks.  System V segments, and objects mapped by shm.create, open
 * and map (reserved whole), answer 0 at once.  Never sees a lua_State:
 * callable under a structure's lock. */
#define SHM_RESERVE_STEP ((size_t)256 << 10)
int shm_segment_reserve_more(shm_segment *s, size_t off, size_t len);
static inline int shm_segment_reserve(shm_segment *s, size_t off, size_t len) {
  if (off >= s->resv_lo && off <= s->resv_hi && len <= s->resv_hi - off) return 0;
  return shm_segment_reserve_more(s, off, len);
}

/* ---- args.c: argument checking and error results (lauxlib's naming:
 * check = required, opt = optional with a default) ---- */
/* Every argument error of the module names the function the user called
 * ("shm.dict.open", "dict:set": methods count their arguments after self) and
 * the caller's position, whichever C function of ours raises it and however
 * it was reached (args.c).  shm_open_names (the end of luaopen_shm_core)
 * names the module's functions; lauxlib's raisers and checkers, which name a
 * function from the call information, are replaced by these in every file. */
void shm_open_names(lua_State *L, int module);
int shm_argerror(lua_State *L, int arg, const char *extramsg);
int shm_typeerror(lua_State *L, int arg, const char *tname);
lua_Integer shm_checkinteger(lua_State *L, int arg);
lua_Integer shm_optinteger(lua_State *L, int arg, lua_Integer def);
lua_Number shm_checknumber(lua_State *L, int arg);
const char *shm_checklstring(lua_State *L, int arg, size_t *len);
const char *shm_optlstring(lua_State *L, int arg, const char *def, size_t *len);
void shm_checktype(lua_State *L, int arg, int t);
void shm_checkany(lua_State *L, int arg);
int shm_checkoption(lua_State *L, int arg, const char *def, const char *const lst[]);
#undef luaL_argerror
#undef luaL_typeerror
#undef luaL_checkinteger
#undef luaL_optinteger
#undef luaL_checknumber
#undef luaL_checklstring
#undef luaL_optlstring
#undef luaL_checktype
#undef luaL_checkany
#undef luaL_checkoption
#define luaL_argerror shm_argerror
#define luaL_typeerror shm_typeerror
#define luaL_checkinteger shm_checkinteger
#define luaL_optinteger shm_optinteger
#define luaL_checknumber shm_checknumber
#define luaL_checklstring shm_checklstring
#define luaL_optlstring shm_optlstring
#define luaL_checktype shm_checktype
#define luaL_checkany shm_checkany
#define luaL_checkoption shm_checkoption
int shm_fail(lua_State *L, int en, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int shm_ok(lua_State *L, int ok, int en, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Append " (hint)" to the message of the nil, message, errno on top; returns 3. */
int shm_hint(lua_State *L, const char *hint);
size_t shm_checksize(lua_State *L, int arg);
/* A structure's capacity: an integer from min to max. */
uint64_t shm_checkcapacity(lua_State *L, int arg, uint64_t min, uint64_t max);
size_t shm_optsize(lua_State *L, int arg); /* none/nil: 0 */
int shm_checkmode(lua_State *L, int arg);
int shm_optmode(lua_State *L, int arg, int def);
int shm_optaccess(lua_State *L, int arg); /* "rw" (default) -> 0, "r" -> 1 */
int shm_checkbyte(lua_State *L, int arg, const char *what);
int shm_checkkind(lua_State *L, int arg); /* SHM_SYSV (a key) or SHM_POSIX (a "/name") */
int32_t shm_checkkey(lua_State *L, int arg);
const char *shm_checkname(lua_State *L, int arg);
const char *shm_checkpath(lua_State *L, int arg);
size_t shm_checkoffset(lua_State *L, int arg, const shm_segment *s);
size_t shm_optoffset(lua_State *L, int arg, const shm_segment *s, size_t def);
size_t shm_optlength(lua_State *L, int arg, const shm_segment *s, size_t off); /* to the end */
void shm_setfield_int(lua_State *L, const char *k, lua_Integer v);
void shm_setfield_str(lua_State *L, const char *k, const char *v);
void shm_setfield_bool(lua_State *L, const char *k, int v);

/* ---- sysv.c: System V segments ---- */
/* (Their memory is taken as it is touched: they ignore a `reserve`.) */
extern const shm_ops shm_sysv_ops;
int shm_sysv_create(lua_State *L); /* (key, size, mode) */
int shm_sysv_open(lua_State *L);   /* (key, access, size, mode) */
int shm_sysv_attach(lua_State *L); /* (id, access) */
int shm_sysv_unlink(lua_State *L); /* (key) */
int shm_sysv_list(lua_State *L, int t, lua_Integer *n);
int shm_sysv_ftok(lua_State *L);

/* ---- posix.c: POSIX shared memory objects, and what every mapped
 * descriptor shares (file.c's maps too) ---- */
extern const shm_ops shm_posix_ops;
/* `reserve`: how many of the first bytes to back with memory now
 * (SHM_RESERVE_ALL: all, as shm.create and shm.open do; see
 * shm_segment_reserve). */
#define SHM_RESERVE_ALL SIZE_MAX
int shm_posix_create(lua_State *L, size_t reserve); /* (name, size, mode) */
int shm_posix_open(lua_State *L, size_t reserve);   /* (name, access, size, mode) */
int shm_posix_unlink(lua_State *L); /* (name) */
int shm_posix_list(lua_State *L, int t, lua_Integer *n);
/* Map `size` bytes of fd into s (which then owns fd), its first `reserved`
 * bytes backed (shm_fd_size's result); 0 or errno. */
int shm_fd_map(shm_segment *s, int fd, size_t size, int readonly, size_t reserved);
/* Make fd `size` bytes long if it is shorter, and back its first `reserve`
 * bytes with real pages or blocks (SHM_RESERVE_ALL: all), so that a full
 * tmpfs or disk is an error now, never SIGBUS at the first touch of them;
 * the rest stays sparse.  0 or errno; *reserved: how many bytes are backed.
 * st: what fstat said of it (NULL for a new, empty one); an object whose
 * blocks already cover `size` costs nothing.  Where the file system cannot
 * reserve (EOPNOTSUPP) it only sizes the file. */
int shm_fd_size(int fd, size_t size, size_t reserve, const struct stat *st, size_t *reserved);
/* shm_ops.reserve of the descriptor kinds: fallocate(2), keeping the size. */
int shm_fd_reserve(shm_segment *s, size_t off, size_t len);
/* The descriptor-backed operations, the same for both kinds. */
int shm_fd_unmap(shm_segment *s);
void shm_fd_describe(lua_State *L, shm_segment *s);
int shm_fd_field(lua_State *L, shm_segment *s, const char *k);
int shm_fd_stat(lua_State *L, shm_segment *s);
int shm_fd_chmod(lua_State *L, shm_segment *s, int mode);
int shm_fd_chown(lua_State *L, shm_segment *s, uid_t uid, gid_t gid);
/* Unlink `path` if it still names the object behind s->fd. */
int shm_fd_remove(lua_State *L, shm_segment *s, const char *path, int (*unlinkf)(const char *));

/* ---- file.c: shared maps of regular files; opening a segment of any kind ---- */
extern const shm_ops shm_file_ops;
/* (path, size, access).  With a `reserve` below SHM_RESERVE_ALL (a
 * structure's map) an existing non-empty file is mapped whole and never
 * grown: the structure validates it before anything is written. */
int shm_file_map(lua_State *L, size_t reserve);
/* shm.create, shm.open and shm.map (by the kind of argument 1), at 1..n. */
enum shm_how { SHM_CREATE, SHM_OPEN, SHM_MAP };
int shm_segment_new(lua_State *L, enum shm_how how, size_t reserve);
/* For the constructors of what lives in a segment (queue, dict): call
 * shm.create, shm.open or shm.map (fn "create", "open", "map") with the
 * `nargs` values on top of the stack, as lua_call(L, nargs, 3) would call the
 * module's function, except that only the first `prefix` bytes of a POSIX
 * object or file are backed with memory (the header the structure touches
 * first: the rest as it goes, shm_segment_reserve).  Leaves 3 results: the
 * segment, or nil, message, errno. */
void shm_segment_call(lua_State *L, const char *fn, int nargs, size_t prefix);

/* ---- futex.c: futexes and deadlines (no lua_State) ---- */
typedef struct shm_deadline {
  int forever;          /* no timeout */
  struct timespec at;   /* absolute CLOCK_MONOTONIC deadline */
} shm_deadline;
/* `seconds` from now; more than 1e9 (or inf/NaN) is forever. */
void shm_deadline_after(shm_deadline *d, double seconds);
int shm_deadline_expired(const shm_deadline *d);
/* Sleep while *addr == val, until woken or the deadline.  Returns 0 (woken,
 * maybe spuriously), EAGAIN (value differed), ETIMEDOUT, EINTR or errno. */
int shm_futex_wait(uint32_t *addr, uint32_t val, const shm_deadline *d);
/* Wake up to n waiters; returns how many were woken (or -1, errno set). */
int shm_futex_wake(uint32_t *addr, int n);
/* The 32-bit futex word inside an int64: the half holding its low bits. */
uint32_t *shm_futex_word(int64_t *p);
/* args.c: a timeout argument (seconds; none/nil = forever), as a deadline or
 * as seconds (-1: none), for a wait that reads the clock only if it waits. */
void shm_optdeadline(lua_State *L, int arg, shm_deadline *d);
double shm_opttimeout(lua_State *L, int arg);

/* ---- Status of the locked cores (queue, dict, lock): plain C functions that
 * never see a lua_State return one of these; the bindings turn them into Lua
 * results.  Structure-specific results follow SHM_NSTATUS in their own file. */
typedef enum shm_status {
  SHM_OK = 0,
  SHM_TIMEOUT,     /* the deadline passed */
  SHM_CLOSED,      /* queue closed */
  SHM_INTERRUPTED, /* a signal interrupted a wait */
  SHM_CORRUPT,     /* the shared bytes are not what they must be (a reason goes with it) */
  SHM_ERRNO,       /* a system call failed (an errno goes with it) */
  SHM_BUSY,        /* trylock: held by someone else */
  SHM_OWNERDIED,   /* lock taken over from a dead owner: repair what it guards */
  SHM_NSTATUS
} shm_status;

/* ---- Byte rings in a segment (the queue's, the event ring's): n bytes at
 * offset `at` of a ring of `cap` bytes, wrapping at its end. ---- */
static inline void shm_ring_put(unsigned char *data, uint64_t cap, uint64_t at, const void *src,
                                size_t n) {
  size_t first = n < cap - at ? n : (size_t)(cap - at);
  memcpy(data + at, src, first);
  if (n > first) memcpy(data, (const char *)src + first, n - first);
}
static inline void shm_ring_get(const unsigned char *data, uint64_t cap, uint64_t at, void *dst,
                                size_t n) {
  size_t first = n < cap - at ? n : (size_t)(cap - at);
  memcpy(dst, data + at, first);
  if (n > first) memcpy((char *)dst + first, data, n - first);
}
/* In a spin loop: let the other hardware thread run. */
static inline void shm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* ---- A growable malloc'ed buffer (a queue's pops, a dict's values and keys),
 * grown outside any lock.  Zero-initialised is empty. ---- */
typedef struct shm_buf {
  char *p;
  size_t size;
} shm_buf;
/* At least n bytes (256 at least): 0, or ENOMEM with the buffer unchanged. */
static inline int shm_buf_reserve(shm_buf *b, size_t n) {
  if (n > b->size || b->p == NULL) {
    size_t want = n < 256 ? 256 : n;
    char *np = (char *)realloc(b->p, want);
    if (np == NULL) return ENOMEM;
    b->p = np;
    b->size = want;
  }
  return 0;
}
static inline void shm_buf_free(shm_buf *b) {
  free(b->p);
  b->p = NULL;
  b->size = 0;
}
/* Push the len bytes a core copied into a handle's buffer b (or, while b is
 * lent to an FFI caller making its string, into `own`), and free `own`.
 * Making the string can run a finalizer that calls the same handle: the
 * bytes leave b first, and a nested call grows another buffer (segment.c). */
void shm_pushbuf(lua_State *L, shm_buf *b, int lent, shm_buf *own, size_t len);

/* ---- lock.c: a robust lock on one futex word (no pthread, no pointers in
 * shared memory), and the identity it records ----
 * The word is 0 when free; else the owner's pid (bits 0-29), a waiters bit
 * (bit 31), and a tag of the owner's start time in the high 32 bits, so that a
 * waiter can tell a dead owner (and a reused pid) from a live one and take the
 * lock over.  Any bytes are a valid lock: scribbled ones cost a wait for the
 * deadline or a takeover, never a crash. */
typedef struct shm_lock {
  uint64_t word;
} shm_lock;
/* Per Lua state: who this process is (recomputed after fork). */
typedef struct shm_ctx shm_ctx;
void shm_open_ctx(lua_State *L);          /* luaopen: make the state's context */
shm_ctx *shm_getctx(lua_State *L);        /* the state's context (a registry lookup) */
uint64_t shm_ctx_self(shm_ctx *c);        /* the owner word of this process */
/* SHM_OK, SHM_OWNERDIED (now ours), SHM_TIMEOUT */
shm_status shm_lock_acquire(shm_lock *l, uint64_t self, const shm_deadline *d);
/* SHM_OK, SHM_OWNERDIED (now ours), SHM_BUSY */
shm_status shm_lock_try(shm_lock *l, uint64_t self);
/* Wait without taking it until the lock is free (SHM_OK) or its owner dead
 * (SHM_OWNERDIED), or SHM_TIMEOUT; the word is never written. */
shm_status shm_lock_wait(shm_lock *l, uint64_t self, const shm_deadline *d);
void shm_lock_release(shm_lock *l);
/* Does the word name `self` as the owner? */
int shm_lock_owned(const shm_lock *l, uint64_t self);
/* Fresh memory (*magic == 0) made a structure without a race (the queue's,
 * the event ring's create-or-open): a creator (create != 0) takes the lock
 * (looking at a holder at once, then waiting up to `wait` seconds) and, if
 * the magic is still 0, calls init(arg) under it, which publishes the magic
 * last; one that took the lock over from a dead owner of a made structure
 * calls repair(arg).  An opener only waits while an initialiser holds the
 * lock.  SHM_OK, SHM_TIMEOUT, or what repair returned. */
shm_status shm_lock_init_once(shm_lock *l, const uint64_t *magic, uint64_t self, int create, double wait,
                              void (*init)(void *), shm_status (*repair)(void *), void *arg);

/* ---- class.c: one way to define and check a class (as luasocket's
 * auxiliar): the type check rests on metatable identity, and no metatable is
 * reachable from Lua (__metatable). ---- */
void shm_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                             const luaL_Reg *meta);
void *shm_testclass(lua_State *L, int idx, const char *name);
void *shm_checkclass(lua_State *L, int idx, const char *name);
/* shm_checkclass for methods registered with their class's metatable as first
 * upvalue: one comparison of addresses, no registry lookup (inline: the hot
 * methods of queues and dicts use it). */
static inline void *shm_checkupclass(lua_State *L, int idx, const char *name) {
  void *p = lua_touserdata(L, idx);
  if (p == NULL || !lua_getmetatable(L, idx) ||
      lua_topointer(L, -1) != lua_topointer(L, lua_upvalueindex(1)))
    luaL_typeerror(L, idx, name);
  lua_pop(L, 1);
  return p;
}
/* Objects that live in a segment (queue, dict; the segment is user value 1):
 * remove/detach through the segment's method, segment(), tostring. */
int shm_inseg_call(lua_State *L, const char *name, const char *method);
int shm_inseg_segment(lua_State *L, const char *name);
int shm_inseg_tostring(lua_State *L, const char *name);
/* ... and their constructors: the segment layer's failure renamed for `to`
 * (0 if a segment came, else 3 results), a failed wrap's segment dropped, a
 * key_or_name as messages show it. */
int shm_inseg_failure(lua_State *L, const char *to);
void shm_inseg_drop(lua_State *L, int idx, int remove);
const char *shm_inseg_name(lua_State *L, int idx);
/* The name of the segment of the object at idx, as shm_inseg_name. */
const char *shm_inseg_objname(lua_State *L, int idx);
/* A class whose methods carry its metatable as their first upvalue (for
 * shm_checkupclass). */
void shm_newupclass(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *meta);
/* The table of such an object's constructors (create, open), left on the stack. */
void shm_inseg_constructors(lua_State *L, lua_CFunction create, lua_CFunction open);
/* In such a constructor: shm.create (create != 0) or shm.open ("rw") for the
 * key_or_name at 1, `size` bytes (0 on open: none) and the mode at 3, only
 * the first `prefix` bytes of a POSIX object backed now (shm_segment_call).
 * 0 with the segment at index 4, or 3 results to return (the message renamed
 * for fname). */
int shm_inseg_make(lua_State *L, int create, lua_Integer size, size_t prefix, const char *fname);
/* The segment at idx could not be wrapped: dropped (removed if this call
 * created it); pushes nil, "fname(name): why", en and returns 3. */
int shm_inseg_refuse(lua_State *L, int idx, int keyidx, int created, const char *fname, const char *why,
                     int en);

/* ---- atomic.c: atomics and wait/notify in a segment ---- */
void shm_open_atomics(lua_State *L, int module, int methods);

/* ---- mutex.c: seg:mutex, a robust mutex on a shm_lock ---- */
#define SHM_MUTEX_SIZE 64
void shm_open_mutex(lua_State *L, int module, int methods);
/* lock.c: shm.core._self, _dead and _now (internal, for lua/shm/lock.lua) */
void shm_open_owner(lua_State *L, int module, int methods);

/* ---- queue.c: bounded MPMC message queue in a segment (shm.queue) ---- */
void shm_open_queue(lua_State *L, int module, int methods);

/* ---- dict.c: shm.dict, ngx.shared.DICT in a segment ---- */
void shm_open_dict(lua_State *L, int module, int methods);

/* ---- events.c: broadcast in a segment (shm.events) ---- */
void shm_open_events(lua_State *L, int module, int methods);

/* ---- sem.c: shm.sem, System V and POSIX semaphores ---- */
void shm_open_sem(lua_State *L, int module, int methods);

/* ---- pack.c: string.pack formats in place ---- */
void shm_open_pack(lua_State *L, int module, int methods);

/* ---- ffi.c: the segment's hot methods for LuaJIT's FFI (shm._ffi, a light
 * userdata pointing at a const table of function pointers; lua/shm/ffi.lua).
 * They return SHM_FFI_FALLBACK, having done nothing, for any call the Lua C
 * API method must answer (it raises the error). ---- */
#define SHM_FFI_FALLBACK (-1)
void shm_open_ffi(lua_State *L, int module, int methods);

#pragma GCC visibility pop

#endif
