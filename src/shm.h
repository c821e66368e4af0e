/*
 * lua-shm: shared memory for Lua.
 * Internal header shared by the C core (shm.core). Only luaopen_shm_core is
 * exported from the shared object; everything declared here is hidden.
 */
#ifndef LUA_SHM_H
#define LUA_SHM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lua.h"
#include "lauxlib.h"
#include "compat.h"

#define SHM_HIDDEN __attribute__((visibility("hidden")))

/* A luaL_Reg entry for __close, on the Luas that have to-be-closed variables. */
#if LUA_VERSION_NUM >= 504
#define SHM_CLOSE_ENTRY(f) {"__close", f},
#else
#define SHM_CLOSE_ENTRY(f)
#endif

#define SHM_SEGMENT_MT "shm.segment"
#define SHM_VERSION "lua-shm 0.1.0"

enum shm_kind { SHM_SYSV = 0, SHM_POSIX = 1, SHM_FILE = 2 };

/* A mapping of shared memory, owned by one Lua userdata.  addr == NULL means
 * detached (the "closed" state of liolib's streams).  For POSIX and file maps
 * the name/path is kept in the userdata's first user value. */
typedef struct shm_segment {
  unsigned char *addr; /* start of the mapping, NULL once detached */
  size_t size;         /* usable bytes (never the page-rounded length) */
  size_t maplen;       /* length passed to munmap (POSIX/file) */
  int kind;            /* enum shm_kind */
  int readonly;        /* mapped without write permission */
  int fd;              /* POSIX/file: descriptor kept for fstat/fchmod; -1 otherwise */
  int shmid;           /* System V id, -1 otherwise */
  int32_t key;         /* System V key (as given), 0 otherwise */
  int held;            /* mutexes in it locked by this process: no unmapping then */
} shm_segment;

/* The one exported symbol. */
__attribute__((visibility("default"))) int luaopen_shm_core(lua_State *L);

/* ---- segment.c: the userdata ---- */
SHM_HIDDEN shm_segment *shm_newsegment(lua_State *L, int kind);
SHM_HIDDEN shm_segment *shm_checksegment(lua_State *L, int idx);
SHM_HIDDEN shm_segment *shm_checkopen(lua_State *L, int idx);
SHM_HIDDEN shm_segment *shm_checkwritable(lua_State *L, int idx);
SHM_HIDDEN int shm_detach_segment(shm_segment *s);
SHM_HIDDEN void shm_describe(lua_State *L, int idx);
SHM_HIDDEN void shm_open_segment_mt(lua_State *L);

/* ---- args.c: argument checking and error results ---- */
SHM_HIDDEN int shm_fail(lua_State *L, int en, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
SHM_HIDDEN int shm_ok(lua_State *L, int ok, int en, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
SHM_HIDDEN size_t shm_checksize(lua_State *L, int arg);
SHM_HIDDEN int shm_checkmode(lua_State *L, int arg, int def);
SHM_HIDDEN int shm_checkaccess(lua_State *L, int arg);
SHM_HIDDEN int shm_iskey(lua_State *L, int arg);
SHM_HIDDEN int32_t shm_checkkey(lua_State *L, int arg);
SHM_HIDDEN const char *shm_checkname(lua_State *L, int arg);
SHM_HIDDEN size_t shm_checkoffset(lua_State *L, int arg, const shm_segment *s,
                                  lua_Integer def);
SHM_HIDDEN size_t shm_checklength(lua_State *L, int arg, const shm_segment *s,
                                  size_t off);
SHM_HIDDEN void shm_setfield_int(lua_State *L, const char *k, lua_Integer v);
SHM_HIDDEN void shm_setfield_str(lua_State *L, const char *k, const char *v);
SHM_HIDDEN void shm_setfield_bool(lua_State *L, const char *k, int v);

/* ---- sysv.c ---- */
SHM_HIDDEN int shm_sysv_create(lua_State *L);  /* (key, size, mode) */
SHM_HIDDEN int shm_sysv_open(lua_State *L);    /* (key, access, size, mode) */
SHM_HIDDEN int shm_sysv_attach(lua_State *L);  /* (id, access) */
SHM_HIDDEN int shm_sysv_unlink(lua_State *L);  /* (key) */
SHM_HIDDEN int shm_sysv_list(lua_State *L, int t, lua_Integer *n);
SHM_HIDDEN int shm_sysv_ftok(lua_State *L);
SHM_HIDDEN int shm_sysv_stat(lua_State *L, shm_segment *s);
SHM_HIDDEN int shm_sysv_remove(lua_State *L, shm_segment *s);
SHM_HIDDEN int shm_sysv_chmod(lua_State *L, shm_segment *s, int mode);
SHM_HIDDEN int shm_sysv_chown(lua_State *L, shm_segment *s, uid_t uid, gid_t gid);

/* ---- posix.c: POSIX shared memory objects and file maps ---- */
SHM_HIDDEN int shm_posix_create(lua_State *L); /* (name, size, mode) */
SHM_HIDDEN int shm_posix_open(lua_State *L);   /* (name, access, size, mode) */
SHM_HIDDEN int shm_posix_unlink(lua_State *L); /* (name) */
SHM_HIDDEN int shm_posix_list(lua_State *L, int t, lua_Integer *n);
SHM_HIDDEN int shm_file_map(lua_State *L);     /* (path, size, access) */
SHM_HIDDEN int shm_fd_stat(lua_State *L, shm_segment *s);
SHM_HIDDEN int shm_fd_remove(lua_State *L, shm_segment *s);
SHM_HIDDEN int shm_fd_chmod(lua_State *L, shm_segment *s, int mode);
SHM_HIDDEN int shm_fd_chown(lua_State *L, shm_segment *s, uid_t uid, gid_t gid);
SHM_HIDDEN int shm_fd_sync(lua_State *L, shm_segment *s);

/* ---- futex.c: futexes and deadlines (no lua_State) ---- */
#include <time.h>
typedef struct shm_deadline {
  int forever;          /* no timeout */
  struct timespec at;   /* absolute CLOCK_MONOTONIC deadline */
} shm_deadline;
/* `seconds` from now; more than 1e9 (or inf/NaN) is forever. */
SHM_HIDDEN void shm_deadline_after(shm_deadline *d, double seconds);
SHM_HIDDEN int shm_deadline_expired(const shm_deadline *d);
/* Sleep while *addr == val, until woken or the deadline.  Returns 0 (woken,
 * maybe spuriously), EAGAIN (value differed), ETIMEDOUT, EINTR or errno. */
SHM_HIDDEN int shm_futex_wait(uint32_t *addr, uint32_t val, const shm_deadline *d);
/* Wake up to n waiters; returns how many were woken (or -1, errno set). */
SHM_HIDDEN int shm_futex_wake(uint32_t *addr, int n);
/* The 32-bit futex word inside an int64: the half holding its low bits. */
SHM_HIDDEN uint32_t *shm_futex_word(int64_t *p);
/* args.c: a timeout argument (seconds; none/nil = forever). */
SHM_HIDDEN void shm_optdeadline(lua_State *L, int arg, shm_deadline *d);

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
SHM_HIDDEN void shm_open_ctx(lua_State *L);          /* luaopen: make the state's context */
SHM_HIDDEN shm_ctx *shm_getctx(lua_State *L);        /* the state's context (a registry lookup) */
SHM_HIDDEN uint64_t shm_ctx_self(shm_ctx *c);        /* the owner word of this process */
/* SHM_OK, SHM_OWNERDIED (now ours), SHM_TIMEOUT */
SHM_HIDDEN shm_status shm_lock_acquire(shm_lock *l, uint64_t self, const shm_deadline *d);
/* SHM_OK, SHM_OWNERDIED (now ours), SHM_BUSY */
SHM_HIDDEN shm_status shm_lock_try(shm_lock *l, uint64_t self);
/* Wait without taking it until the lock is free (SHM_OK) or its owner dead
 * (SHM_OWNERDIED), or SHM_TIMEOUT; the word is never written. */
SHM_HIDDEN shm_status shm_lock_wait(shm_lock *l, uint64_t self, const shm_deadline *d);
SHM_HIDDEN void shm_lock_release(shm_lock *l);
/* Does the word name `self` as the owner? */
SHM_HIDDEN int shm_lock_owned(const shm_lock *l, uint64_t self);

/* ---- class.c: one way to define and check a class (as luasocket's
 * auxiliar): the type check rests on metatable identity, and no metatable is
 * reachable from Lua (__metatable). ---- */
SHM_HIDDEN void shm_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                             const luaL_Reg *meta);
SHM_HIDDEN void *shm_testclass(lua_State *L, int idx, const char *name);
SHM_HIDDEN void *shm_checkclass(lua_State *L, int idx, const char *name);

/* ---- atomic.c: atomics and wait/notify in a segment ---- */
SHM_HIDDEN void shm_open_atomics(lua_State *L, int methods);

/* ---- mutex.c: seg:mutex, a robust mutex on a shm_lock ---- */
#define SHM_MUTEX_SIZE 64
SHM_HIDDEN void shm_open_mutex(lua_State *L, int methods, int module);

/* ---- queue.c: bounded MPMC message queue in a segment (shm.queue) ---- */
SHM_HIDDEN void shm_open_queue(lua_State *L, int module);

/* ---- dict.c: shm.dict, ngx.shared.DICT in a segment ---- */
SHM_HIDDEN void shm_open_dict(lua_State *L, int module);

/* ---- pack.c: string.pack formats in place ---- */
SHM_HIDDEN int shm_seg_pack(lua_State *L);
SHM_HIDDEN int shm_seg_unpack(lua_State *L);

#endif
