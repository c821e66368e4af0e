/*
 * shm.sem: System V semaphores (a member of a set, semop) and POSIX named
 * semaphores (glibc's sem_open: the objects C and Python use), one object
 * type for both.
 *
 * The core (first half) is plain C over `semobj`: no lua_State, results are
 * 0 or an errno, or a shm_status for the waits.  What differs between the
 * kinds is in one table of operations per kind (sysv_semops, posix_semops),
 * as segments have shm_ops.  The binding (second half) checks arguments,
 * calls the core and turns its results into Lua's.
 *
 * Creation without an initialisation race:
 *  - System V: semget(IPC_CREAT | IPC_EXCL) makes the set with an undefined
 *    value; only the process that made it sets the value (SETVAL), then does
 *    a semop that changes nothing, which sets sem_otime.  Everybody else
 *    (openers, racing creators that lost) waits, bounded, until sem_otime is
 *    not 0 (W. R. Stevens, UNP vol. 2, 11.2; sysv_ipc documents the same).
 *  - POSIX: glibc's sem_open creates a temporary file, initialises it and
 *    link()s it to the name: an opener never sees an uninitialised one.  To
 *    know whether it made the object (and must apply the mode exactly,
 *    whatever the umask), an opener tries O_CREAT | O_EXCL first.
 *
 * Waits: timeouts are on CLOCK_MONOTONIC (shm_deadline).  semtimedop takes a
 * relative timeout: recomputed from the deadline at every restart.  EINTR
 * ends a wait with SHM_INTERRUPTED when the signal's handler asked the Lua
 * state to stop (the interpreter's Ctrl-C and luaposix's handlers set a hook:
 * the binding's semintr callback, hookset, compares the state's hook with the
 * one before the wait); any other EINTR (a stop and a continue: semop returns
 * EINTR then, with no handler at all) restarts it.
 */
/***
@module shm
*/
#include "shm.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define SEM_MT "shm.sem"
#ifndef SEMVMX
#define SEMVMX 32767 /* the largest value of a System V semaphore (linux/sem.h) */
#endif
#define SEM_DIR "/dev/shm/sem." /* where glibc keeps POSIX semaphores */
#define INDEX_MAX 65535         /* sem_num is an unsigned short */
#define READY_WAIT 2.0          /* seconds an opener waits for a creator's SETVAL */

union semun { /* semctl(2): the caller defines it */
  int val;
  struct semid_ds *buf;
  unsigned short *array;
  struct seminfo *__buf; /* SEM_INFO */
};

/* ================= the core (no lua_State) ================= */

struct semops;

typedef struct semobj {
  const struct semops *ops;
  int open;               /* 0 once closed */
  int undo;               /* System V: SEM_UNDO on every operation */
  int32_t key;            /* System V key (IPC_PRIVATE for a private set) */
  int semid, index;       /* System V set id, member */
  sem_t *sem;             /* POSIX: glibc's mapping */
  dev_t dev;              /* POSIX: the file behind it (to tell it from a */
  ino_t ino;              /*   new object made under the same name) */
  char name[NAME_MAX + 1]; /* POSIX name, "/x" */
} semobj;

/* What stat gives (-1: the kind has not that field). */
typedef struct semstat {
  long value, mode, uid, gid, cuid, cgid, nsems, ncnt, zcnt, lastpid;
  long long otime, ctime;
} semstat;

/* Did the signal behind an EINTR ask the waiter to stop? */
typedef struct semintr {
  int (*asked)(void *ud);
  void *ud;
} semintr;

typedef struct semops {
  const char *kind;
  /* Add n (> 0) units, or take -n, or wait for zero (n == 0): SHM_OK,
   * SHM_TIMEOUT, SHM_INTERRUPTED, SHM_ERRNO (*en). */
  shm_status (*op)(semobj *s, int n, const shm_deadline *d, const semintr *in, int *en);
  int (*release)(semobj *s, int n);
  int (*getvalue)(semobj *s, int *v);
  int (*setvalue)(semobj *s, int v); /* NULL: not this kind */
  int (*stat)(semobj *s, semstat *i);
  int (*remove)(semobj *s);
  int (*chmod)(semobj *s, int mode);
  int (*chown)(semobj *s, uid_t uid, gid_t gid);
  void (*close)(semobj *s);
  /* The object as messages name it: "key=0x1234 id=5 index=0", "/name". */
  void (*describe)(const semobj *s, char *buf, size_t n);
} semops;

/* Time left until d (false when none is left). */
static int remaining(const shm_deadline *d, struct timespec *left) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  left->tv_sec = d->at.tv_sec - now.tv_sec;
  left->tv_nsec = d->at.tv_nsec - now.tv_nsec;
  if (left->tv_nsec < 0) {
    left->tv_sec -= 1;
    left->tv_nsec += 1000000000L;
  }
  return left->tv_sec > 0 || (left->tv_sec == 0 && left->tv_nsec > 0);
}

/* ---- System V ---- */

static shm_status sysv_op(semobj *s, int n, const shm_deadline *d, const semintr *in, int *en) {
  struct sembuf b;
  struct timespec left;
  int r;
  b.sem_num = (unsigned short)s->index;
  b.sem_op = (short)n;
  b.sem_flg = (short)(s->undo ? SEM_UNDO : 0);
  for (;;) {
    if (n > 0 || d->forever) {
      r = semop(s->semid, &b, 1);
    } else if (!remaining(d, &left)) {
      b.sem_flg |= IPC_NOWAIT; /* timeout 0 or spent: try once */
      r = semop(s->semid, &b, 1);
    } else {
      r = semtimedop(s->semid, &b, 1, &left);
    }
    if (r == 0) return SHM_OK;
    if (errno == EAGAIN) return SHM_TIMEOUT;
    if (errno != EINTR) break;
    if (in != NULL && in->asked(in->ud)) return SHM_INTERRUPTED;
  }
  *en = errno;
  return SHM_ERRNO;
}

static int sysv_release(semobj *s, int n) {
  int en = 0;
  return sysv_op(s, n, NULL, NULL, &en) == SHM_OK ? 0 : en;
}

static int sysv_getvalue(semobj *s, int *v) {
  int r = semctl(s->semid, s->index, GETVAL);
  if (r < 0) return errno;
  *v = r;
  return 0;
}

static int sysv_setvalue(semobj *s, int v) {
  union semun arg;
  arg.val = v;
  return semctl(s->semid, s->index, SETVAL, arg) == 0 ? 0 : errno;
}

static int sysv_stat(semobj *s, semstat *i) {
  struct semid_ds ds;
  union semun arg;
  int v;
  arg.buf = &ds;
  if (semctl(s->semid, 0, IPC_STAT, arg) != 0 || (v = semctl(s->semid, s->index, GETVAL)) < 0)
    return errno;
  i->value = v;
  i->ncnt = semctl(s->semid, s->index, GETNCNT);
  i->zcnt = semctl(s->semid, s->index, GETZCNT);
  i->lastpid = semctl(s->semid, s->index, GETPID);
  i->mode = ds.sem_perm.mode & 0777;
  i->uid = (long)ds.sem_perm.uid;
  i->gid = (long)ds.sem_perm.gid;
  i->cuid = (long)ds.sem_perm.cuid;
  i->cgid = (long)ds.sem_perm.cgid;
  i->nsems = (long)ds.sem_nsems;
  i->otime = (long long)ds.sem_otime;
  i->ctime = (long long)ds.sem_ctime;
  return 0;
}

static int sysv_remove(semobj *s) { return semctl(s->semid, 0, IPC_RMID) == 0 ? 0 : errno; }

/* IPC_SET of what IPC_STAT gave, changed by `set`. */
static int sysv_set(semobj *s, int mode, uid_t uid, gid_t gid) {
  struct semid_ds ds;
  union semun arg;
  arg.buf = &ds;
  if (semctl(s->semid, 0, IPC_STAT, arg) != 0) return errno;
  if (mode >= 0) ds.sem_perm.mode = (unsigned short)((ds.sem_perm.mode & ~0777u) | (unsigned)mode);
  if (uid != (uid_t)-1) ds.sem_perm.uid = uid;
  if (gid != (gid_t)-1) ds.sem_perm.gid = gid;
  return semctl(s->semid, 0, IPC_SET, arg) == 0 ? 0 : errno;
}

static int sysv_chmod(semobj *s, int mode) { return sysv_set(s, mode, (uid_t)-1, (gid_t)-1); }
static int sysv_chown(semobj *s, uid_t uid, gid_t gid) { return sysv_set(s, -1, uid, gid); }
static void sysv_close(semobj *s) { s->open = 0; }

/* "0x1234" or "PRIVATE". */
static void keystr(char *buf, size_t n, int32_t key) {
  if (key == IPC_PRIVATE) snprintf(buf, n, "PRIVATE");
  else snprintf(buf, n, "0x%x", (unsigned)(uint32_t)key);
}

static void sysv_describe(const semobj *s, char *buf, size_t n) {
  char key[16];
  keystr(key, sizeof key, s->key);
  snprintf(buf, n, "key=%s id=%d index=%d", key, s->semid, s->index);
}

static const semops sysv_semops = {
  "sysv",     sysv_op,    sysv_release, sysv_getvalue, sysv_setvalue, sysv_stat,
  sysv_remove, sysv_chmod, sysv_chown,  sysv_close,    sysv_describe,
};

static void sysv_init(semobj *s, int semid, int index, int32_t key) {
  memset(s, 0, sizeof *s);
  s->ops = &sysv_semops;
  s->open = 1;
  s->semid = semid;
  s->index = index;
  s->key = key;
}

/* The creator's half of the recipe: the value, then a semop that changes
 * nothing (take one and give it back, or the reverse) so that sem_otime
 * says "initialised". */
static int sysv_initialise(int semid, int value) {
  union semun arg;
  struct sembuf b[2] = {{0, -1, IPC_NOWAIT}, {0, 1, IPC_NOWAIT}};
  arg.val = value;
  if (semctl(semid, 0, SETVAL, arg) != 0) return errno;
  if (value == 0) {
    b[0].sem_op = 1;
    b[1].sem_op = -1;
  }
  return semop(semid, b, 2) == 0 ? 0 : errno;
}

/* The openers' half: wait until sem_otime is set, at most READY_WAIT
 * seconds, and not at all for a set made more than READY_WAIT seconds ago
 * (one that a program without the recipe made, `ipcmk -S`: its otime stays 0
 * until its first semop). */
static int sysv_awaitready(int semid) {
  struct semid_ds ds;
  union semun arg;
  shm_deadline d;
  struct timespec nap = {0, 1000000};
  arg.buf = &ds;
  shm_deadline_after(&d, READY_WAIT);
  for (;;) {
    if (semctl(semid, 0, IPC_STAT, arg) != 0) return errno;
    if (ds.sem_otime != 0 || (double)(time(NULL) - ds.sem_ctime) > READY_WAIT ||
        shm_deadline_expired(&d))
      return 0;
    nanosleep(&nap, NULL);
  }
}

/* New set of one (IPC_PRIVATE: always new). */
static int sysv_create(semobj *s, int32_t key, int value, int mode) {
  int en, id = semget((key_t)key, 1, IPC_CREAT | IPC_EXCL | mode);
  if (id < 0) return errno;
  en = sysv_initialise(id, value);
  if (en != 0) {
    semctl(id, 0, IPC_RMID);
    return en;
  }
  sysv_init(s, id, 0, key);
  return 0;
}

/* Member 0 of an existing set; with value >= 0, a missing one is created. */
static int sysv_open(semobj *s, int32_t key, int value, int mode) {
  int id, en, tries;
  for (tries = 0; tries < 100; tries++) {
    if (value >= 0) {
      en = sysv_create(s, key, value, mode);
      if (en != EEXIST) return en;
    }
    id = semget((key_t)key, 0, 0);
    if (id < 0) {
      if (errno == ENOENT && value >= 0) continue; /* removed since: create it */
      return errno;
    }
    en = sysv_awaitready(id);
    if (en == EINVAL || en == EIDRM) continue;   /* removed since */
    if (en != 0) return en;
    sysv_init(s, id, 0, key);
    return 0;
  }
  return EAGAIN;
}

/* Member `index` of the set `semid`; *nsems: its size. */
static int sysv_attach(semobj *s, int semid, int index, long *nsems) {
  struct semid_ds ds;
  union semun arg;
  arg.buf = &ds;
  if (semctl(semid, 0, IPC_STAT, arg) != 0) return errno;
  *nsems = (long)ds.sem_nsems;
  if ((unsigned long)index >= ds.sem_nsems) return ERANGE;
  sysv_init(s, semid, index, (int32_t)ds.sem_perm.__key);
  return 0;
}

static int sysv_unlink(int32_t key) {
  int id = semget((key_t)key, 0, 0);
  return id >= 0 && semctl(id, 0, IPC_RMID) == 0 ? 0 : errno;
}

/* ---- POSIX ---- */

/* (Its callers, s_acquire and the FFI's, have tried sem_trywait first: an
 * uncontended acquire reads no clock and notes no hooks.) */
static shm_status posix_op(semobj *s, int n, const shm_deadline *d, const semintr *in, int *en) {
  int r;
  (void)n; /* always -1: the binding checks */
  for (;;) {
    if (d->forever) r = sem_wait(s->sem);
    else if (shm_deadline_expired(d)) r = sem_trywait(s->sem);
    else r = sem_clockwait(s->sem, CLOCK_MONOTONIC, &d->at);
    if (r == 0) return SHM_OK;
    if (errno == EAGAIN || errno == ETIMEDOUT) return SHM_TIMEOUT;
    if (errno != EINTR) break;
    if (in != NULL && in->asked(in->ud)) return SHM_INTERRUPTED;
  }
  *en = errno;
  return SHM_ERRNO;
}

static int posix_getvalue(semobj *s, int *v) { return sem_getvalue(s->sem, v) == 0 ? 0 : errno; }

/* n posts; refused (EOVERFLOW) before the first if they cannot all fit. */
static int posix_release(semobj *s, int n) {
  int v, i;
  if (n > 1) { /* (one post: sem_post says EOVERFLOW itself) */
    if (sem_getvalue(s->sem, &v) != 0) return errno;
    if (v > SEM_VALUE_MAX - n) return EOVERFLOW;
  }
  for (i = 0; i < n; i++)
    if (sem_post(s->sem) != 0) return errno;
  return 0;
}

/* The file glibc made for the name: "/dev/shm/sem.x". */
static void posix_path(const char *name, char *buf, size_t n) {
  snprintf(buf, n, "%s%s", SEM_DIR, name + 1);
}

/* The device and inode of the file mapped at addr (/proc/self/maps). */
static int mapped_file(const void *addr, dev_t *dev, ino_t *ino) {
  char line[512];
  unsigned long lo, hi, maj, min, inode;
  int found = 0;
  FILE *f = fopen("/proc/self/maps", "re");
  if (f == NULL) return errno;
  while (!found && fgets(line, sizeof line, f) != NULL) {
    if (sscanf(line, "%lx-%lx %*s %*s %lx:%lx %lu", &lo, &hi, &maj, &min, &inode) == 5 &&
        (uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
      *dev = makedev(maj, min);
      *ino = (ino_t)inode;
      found = 1;
    }
    /* (a line longer than the buffer: its rest reads as lines that do not parse) */
  }
  fclose(f);
  return found ? 0 : ENOENT;
}

/* An O_PATH descriptor of the file the name gives, if it is still this
 * semaphore's (ENOENT if the name was removed or now names another). */
static int posix_file(semobj *s, int *fd, struct stat *st) {
  char path[sizeof SEM_DIR + NAME_MAX];
  posix_path(s->name, path, sizeof path);
  *fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (*fd < 0) return errno;
  if (fstat(*fd, st) != 0 || st->st_dev != s->dev || st->st_ino != s->ino) {
    close(*fd);
    return ENOENT;
  }
  return 0;
}

static int posix_stat(semobj *s, semstat *i) {
  struct stat st;
  int fd, v, en = posix_file(s, &fd, &st);
  if (en != 0) return en;
  close(fd);
  if (sem_getvalue(s->sem, &v) != 0) return errno;
  i->value = v;
  i->mode = st.st_mode & 0777;
  i->uid = (long)st.st_uid;
  i->gid = (long)st.st_gid;
  return 0;
}

/* chmod or chown the file (through /proc: an O_PATH descriptor takes
 * neither; without /proc, by its path, just checked). */
static int posix_set(semobj *s, int mode, uid_t uid, gid_t gid) {
  char proc[sizeof SEM_DIR + NAME_MAX];
  struct stat st;
  int fd, r, en = posix_file(s, &fd, &st);
  if (en != 0) return en;
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  if (access(proc, F_OK) != 0) posix_path(s->name, proc, sizeof proc);
  r = mode >= 0 ? chmod(proc, (mode_t)mode) : chown(proc, uid, gid);
  en = r == 0 ? 0 : errno;
  close(fd);
  return en;
}

static int posix_chmod(semobj *s, int mode) { return posix_set(s, mode, (uid_t)-1, (gid_t)-1); }
static int posix_chown(semobj *s, uid_t uid, gid_t gid) { return posix_set(s, -1, uid, gid); }

/* Unlink the name if it is still this semaphore's. */
static int posix_remove(semobj *s) {
  struct stat st;
  int fd, en = posix_file(s, &fd, &st);
  if (en != 0) return en;
  close(fd);
  return sem_unlink(s->name) == 0 ? 0 : errno;
}

static void posix_close(semobj *s) {
  if (s->open && s->sem != NULL) sem_close(s->sem);
  s->sem = NULL;
  s->open = 0;
}

static void posix_describe(const semobj *s, char *buf, size_t n) { snprintf(buf, n, "%s", s->name); }

static const semops posix_semops = {
  "posix",      posix_op,    posix_release, posix_getvalue, NULL,          posix_stat,
  posix_remove, posix_chmod, posix_chown,   posix_close,    posix_describe,
};

/* sem_open(name, flags[, mode, value]) into s; an object this call created
 * gets `mode` exactly (sem_open applies the umask). */
static int posix_sem_open(semobj *s, const char *name, int flags, int mode, int value) {
  int en;
  sem_t *p = sem_open(name, flags, (mode_t)mode, (unsigned)value);
  if (p == SEM_FAILED) return errno;
  memset(s, 0, sizeof *s);
  s->ops = &posix_semops;
  s->open = 1;
  s->sem = p;
  snprintf(s->name, sizeof s->name, "%s", name);
  en = mapped_file(p, &s->dev, &s->ino);
  if (en != 0) { /* no /proc: what the name gives now */
    char path[sizeof SEM_DIR + NAME_MAX];
    struct stat st;
    posix_path(name, path, sizeof path);
    en = stat(path, &st) == 0 ? 0 : errno;
    if (en == 0) {
      s->dev = st.st_dev;
      s->ino = st.st_ino;
    }
  }
  if (en == 0 && (flags & O_CREAT)) en = posix_chmod(s, mode);
  if (en != 0) {
    if (flags & O_CREAT) sem_unlink(name);
    posix_close(s);
  }
  return en;
}

static int posix_create(semobj *s, const char *name, int value, int mode) {
  return posix_sem_open(s, name, O_CREAT | O_EXCL, mode, value);
}

static int posix_open(semobj *s, const char *name, int value, int mode) {
  int en, tries;
  if (value < 0) return posix_sem_open(s, name, 0, 0, 0);
  for (tries = 0; tries < 100; tries++) {
    en = posix_create(s, name, value, mode);
    if (en != EEXIST) return en;
    en = posix_sem_open(s, name, 0, 0, 0);
    if (en != ENOENT) return en; /* (ENOENT: removed since, create it) */
  }
  return EAGAIN;
}

/* ---- listing: every semaphore the caller can see ---- */

/* Calls f(ud, id, &ds) for every System V set (SEM_STAT_ANY: without read
 * permission too, since Linux 4.17; SEM_STAT before). */
static int sysv_each(void (*f)(void *ud, int id, const struct semid_ds *ds), void *ud) {
  struct seminfo info;
  struct semid_ds ds;
  union semun arg;
  int i, id, maxidx, cmd = SEM_STAT_ANY;
  arg.__buf = &info;
  maxidx = semctl(0, 0, SEM_INFO, arg);
  if (maxidx < 0) return errno;
  arg.buf = &ds;
  for (i = 0; i <= maxidx; i++) {
    memset(&ds, 0, sizeof ds);
    id = semctl(i, 0, cmd, arg);
    if (id < 0 && errno == EINVAL && cmd == SEM_STAT_ANY && i == 0) {
      id = semctl(i, 0, SEM_STAT, arg);
      if (id >= 0 || errno != EINVAL) cmd = SEM_STAT;
    }
    if (id >= 0) f(ud, id, &ds);
  }
  return 0;
}

/* The value of the POSIX semaphore in /dev/shm/<file> (a regular file of a
 * sem_t's size at least: glibc's sem_open maps it), or -1. */
static long posix_peek(const char *file, const struct stat *st) {
  char name[NAME_MAX + 2];
  sem_t *p;
  int v;
  if (!S_ISREG(st->st_mode) || st->st_size < (off_t)sizeof(sem_t)) return -1;
  snprintf(name, sizeof name, "/%s", file + 4); /* "sem.x" -> "/x" */
  p = sem_open(name, 0);
  if (p == SEM_FAILED) return -1;
  if (sem_getvalue(p, &v) != 0) v = -1;
  sem_close(p);
  return v;
}

/* ================= the binding ================= */

typedef struct semhook { /* the hooks before a wait (semintr) */
  lua_State *L[2];         /* the waiting thread, and the main one (or NULL) */
  lua_Hook hook[2];
  int mask[2], count[2];
} semhook;

/* Note the hooks of the thread L and, when L is a coroutine, of the main
 * thread: lua.c's handler sets the main thread's (hooks are per thread in
 * 5.2-5.4; LuaJIT's are global; 5.1 gives no way to the main thread). */
static void hooknote(semhook *h, lua_State *L) {
  int i;
  h->L[0] = L;
  h->L[1] = NULL;
#if LUA_VERSION_NUM >= 502
  if (!lua_pushthread(L)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    h->L[1] = lua_tothread(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
#endif
  for (i = 0; i < 2 && h->L[i] != NULL; i++) {
    h->hook[i] = lua_gethook(h->L[i]);
    h->mask[i] = lua_gethookmask(h->L[i]);
    h->count[i] = lua_gethookcount(h->L[i]);
  }
}

/* A signal handler that asks Lua to stop (lua.c's Ctrl-C, luaposix) sets a hook. */
static int hookset(void *ud) {
  semhook *h = (semhook *)ud;
  int i;
  for (i = 0; i < 2 && h->L[i] != NULL; i++)
    if (lua_gethook(h->L[i]) != h->hook[i] || lua_gethookmask(h->L[i]) != h->mask[i] ||
        lua_gethookcount(h->L[i]) != h->count[i])
      return 1;
  return 0;
}

/* A semaphore that a constructor returns has a metatable of its own, whose
 * __index is a plain table of the methods and of its fixed fields (kind, key,
 * id, index, name, undo), so that `s:acquire()` costs a table lookup, not a
 * call of an __index function (as segments do, segment.c); that table's own
 * metatable answers `value` (shared: upvalue 2 of the constructors; the
 * methods are upvalue 1).  Every such metatable, and the class's, holds
 * mt[&sem_key] = true: the type check (tables Lua code cannot reach:
 * __metatable hides them).  The __index table holds the semaphore at
 * [&self_key], for `value`. */
static const char sem_key = 0, self_key = 0;
#if LUA_VERSION_NUM == 501
static const char thread_key = 0;
#endif

/* The userdata: the core's object, and for the FFI entry points (LuaJIT
 * only) a thread of the Lua state that made it, whose hooks they read
 * (LuaJIT's hooks are global: any thread of the state shows them); the
 * semaphore's __index table holds that thread at [&thread_key], so it lives
 * as long as the semaphore (under 5.1 and LuaJIT only: NULL elsewhere). */
typedef struct semud {
  semobj s; /* first: a semud is used as a semobj everywhere else */
  lua_State *hooks;
} semud;

static semobj *testsem(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    int ok = lua_rawgetp(L, -1, &sem_key) == LUA_TBOOLEAN;
    lua_pop(L, 2);
    if (ok) return (semobj *)p;
  }
  luaL_typeerror(L, idx, SEM_MT);
  return NULL;
}

static semobj *newsem(lua_State *L) {
  semud *u = (semud *)lua_newuserdatauv(L, sizeof *u, 0);
  semobj *s = &u->s;
  memset(u, 0, sizeof *u);
  s->ops = &sysv_semops;
  luaL_setmetatable(L, SEM_MT);
  return s;
}

/* to[k] = from[k] for every k (raw). */
static void copyfields(lua_State *L, int from, int to) {
  for (lua_pushnil(L); lua_next(L, from);) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, to);
  }
}

/* Give the semaphore on top (just opened) its own metatable. */
static void personalize(lua_State *L, semobj *s) {
  int ud = lua_gettop(L);
  lua_createtable(L, 0, 10);          /* ud+1: its metatable */
  luaL_getmetatable(L, SEM_MT);
  copyfields(L, ud + 2, ud + 1);
  lua_pop(L, 1);
  lua_createtable(L, 0, 16);          /* ud+2: its __index */
  copyfields(L, lua_upvalueindex(1), ud + 2);
  shm_setfield_str(L, "kind", s->ops->kind);
  shm_setfield_bool(L, "undo", 0);
  if (s->ops == &sysv_semops) {
    shm_setfield_int(L, "key", (lua_Integer)(uint32_t)s->key);
    shm_setfield_int(L, "id", s->semid);
    shm_setfield_int(L, "index", s->index);
  } else {
    shm_setfield_str(L, "name", s->name);
  }
  lua_pushvalue(L, ud);
  lua_rawsetp(L, ud + 2, &self_key);
#if LUA_VERSION_NUM == 501 /* (LuaJIT's FFI entry points; PUC Lua never calls them) */
  lua_pushthread(L);
  lua_rawsetp(L, ud + 2, &thread_key);
  ((semud *)(void *)s)->hooks = L;
#endif
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_setmetatable(L, ud + 2);
  lua_setfield(L, ud + 1, "__index");
  lua_setmetatable(L, ud);
}

/* self: a semaphore, open. */
static semobj *checksem(lua_State *L) {
  semobj *s = testsem(L, 1);
  if (!s->open) luaL_error(L, "attempt to use a closed semaphore");
  return s;
}

#define SEMMSG_MAX (NAME_MAX + 640)

/* "sem:<call>(<object>): <strerror>", and " (removed)" when a System V
 * semaphore is gone: the message of semfail and of the FFI paths. */
static void semmessage(const semobj *s, const char *call, int en, char *buf, size_t n) {
  char obj[NAME_MAX + 48];
  s->ops->describe(s, obj, sizeof obj);
  snprintf(buf, n, "sem:%s(%s): %s%s", call, obj, strerror(en),
           s->ops == &sysv_semops && (en == EIDRM || en == EINVAL) ? " (removed)" : "");
}

/* nil, "sem:<call>(<object>): <strerror>", errno */
static int semfail(lua_State *L, const semobj *s, const char *call, int en) {
  char msg[SEMMSG_MAX];
  semmessage(s, call, en, msg, sizeof msg);
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushinteger(L, en);
  return 3;
}

static int semresult(lua_State *L, const semobj *s, const char *call, int en) {
  if (en != 0) return semfail(L, s, call, en);
  lua_pushboolean(L, 1);
  return 1;
}

/* An integer in [min, max] at arg. */
static int checkrange(lua_State *L, int arg, const char *what, lua_Integer min, lua_Integer max) {
  lua_Integer v = luaL_checkinteger(L, arg);
  if (v < min || v > max)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s %I out of range (%I to %I)", what, v, min, max));
  return (int)v;
}

/***
Semaphores: shm.sem.
System V semaphores (an integer key: a member of a set, `semop`) and POSIX named
ones (`"/name"`, glibc's `sem_open`: the objects C's `sem_open` and Python's
`posix_ipc` use).  Waits take a timeout in seconds on the monotonic clock.
@section sem
*/

typedef struct semlist { /* shm.sem.list's table at index 1, and its length */
  lua_State *L;
  int n;
} semlist;

static void pushsysv(void *ud, int id, const struct semid_ds *ds) {
  semlist *l = (semlist *)ud;
  lua_State *L = l->L;
  unsigned long i;
  lua_createtable(L, 0, 12);
  shm_setfield_str(L, "kind", "sysv");
  shm_setfield_int(L, "key", (lua_Integer)(uint32_t)ds->sem_perm.__key);
  shm_setfield_int(L, "id", id);
  shm_setfield_int(L, "nsems", (lua_Integer)ds->sem_nsems);
  shm_setfield_int(L, "mode", ds->sem_perm.mode & 0777);
  shm_setfield_int(L, "uid", ds->sem_perm.uid);
  shm_setfield_int(L, "gid", ds->sem_perm.gid);
  shm_setfield_int(L, "cuid", ds->sem_perm.cuid);
  shm_setfield_int(L, "cgid", ds->sem_perm.cgid);
  shm_setfield_int(L, "otime", (lua_Integer)ds->sem_otime);
  shm_setfield_int(L, "ctime", (lua_Integer)ds->sem_ctime);
  lua_createtable(L, (int)(ds->sem_nsems < 64 ? ds->sem_nsems : 64), 0);
  for (i = 0; i < ds->sem_nsems && i <= INDEX_MAX; i++) {
    int v = semctl(id, (int)i, GETVAL);
    if (v < 0) break; /* not readable by us, or gone */
    lua_pushinteger(L, v);
    lua_rawseti(L, -2, (int)i + 1);
  }
  lua_setfield(L, -2, "values");
  lua_rawseti(L, 1, ++l->n);
}

/***
Every semaphore the caller can see: System V sets (`kind key id nsems mode uid
gid cuid cgid otime ctime`, and `values`, an array of the members' values when
readable) and POSIX semaphores in /dev/shm (`kind name mode uid gid size`, and
`value` when this process may open it).
@function sem.list
@treturn {table,...}
@usage for _, i in ipairs(shm.sem.list()) do print(i.kind, i.key or i.name) end
@see semctl(2)
*/
static int l_list(lua_State *L) {
  DIR *d;
  struct dirent *e;
  struct stat st;
  semlist l;
  int en;
  lua_settop(L, 0);
  lua_newtable(L);
  l.L = L;
  l.n = 0;
  en = sysv_each(pushsysv, &l);
  if (en != 0) return shm_fail(L, en, "shm.sem.list(): semctl(SEM_INFO)");
  d = opendir("/dev/shm");
  if (d == NULL) return 1; /* no POSIX semaphores on this system */
  while ((e = readdir(d)) != NULL) {
    long v;
    if (strncmp(e->d_name, "sem.", 4) != 0 || e->d_name[4] == 0 ||
        fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
      continue;
    v = posix_peek(e->d_name, &st);
    lua_createtable(L, 0, 7);
    shm_setfield_str(L, "kind", "posix");
    lua_pushfstring(L, "/%s", e->d_name + 4);
    lua_setfield(L, -2, "name");
    shm_setfield_int(L, "mode", st.st_mode & 0777);
    shm_setfield_int(L, "uid", st.st_uid);
    shm_setfield_int(L, "gid", st.st_gid);
    shm_setfield_int(L, "size", (lua_Integer)st.st_size);
    if (v >= 0) shm_setfield_int(L, "value", v);
    lua_rawseti(L, 1, ++l.n);
  }
  closedir(d);
  return 1;
}

static int kindmax(int kind) { return kind == SHM_SYSV ? SEMVMX : SEM_VALUE_MAX; }

/* The constructors' result: the semaphore on top, or nil, message, errno. */
static int made(lua_State *L, const char *call, int en, int hint) {
  char obj[NAME_MAX + 16];
  if (en == 0) {
    personalize(L, (semobj *)lua_touserdata(L, -1));
    return 1;
  }
  if (lua_type(L, 1) == LUA_TSTRING) snprintf(obj, sizeof obj, "%s", lua_tostring(L, 1));
  else keystr(obj, sizeof obj, shm_checkkey(L, 1));
  shm_fail(L, en, "shm.sem.%s(%s)", call, obj);
  if (en == ENOENT && hint) return shm_hint(L, "pass a value to create it");
  return 3;
}

/***
Make a new semaphore with an initial value.  System V: a set of one
semaphore (`shm.PRIVATE`: always a new private one), initialised with the
`sem_otime` recipe that `shm.sem.open` waits for.
@function sem.create
@tparam integer|string key_or_name
@tparam integer value 0 to 32767 (System V's `SEMVMX`), 0 to `SEM_VALUE_MAX` (POSIX)
@tparam[opt="0600"] integer|string mode applied exactly, whatever the umask
@treturn sem
@error `nil, message, errno`: `EEXIST` if it exists, `EACCES`, `ENOSPC`...
@usage local s = assert(shm.sem.create("/jobs", 4))
@see semget(2), semctl(2), sem_open(3)
*/
static int l_create(lua_State *L) {
  int kind = shm_checkkind(L, 1);
  int value = checkrange(L, 2, "value", 0, kindmax(kind));
  int mode = shm_optmode(L, 3, 0600);
  semobj *s;
  int en;
  if (kind == SHM_POSIX) shm_checkname(L, 1);
  s = newsem(L);
  en = kind == SHM_SYSV ? sysv_create(s, shm_checkkey(L, 1), value, mode)
                        : posix_create(s, lua_tostring(L, 1), value, mode);
  return made(L, "create", en, 0);
}

/***
Open a semaphore; with `value`, a missing one is created with it, and racing
openers all end up on one semaphore whose value was set exactly once.  System V:
member 0 of the set (`shm.sem.attach` opens another member); an opener waits
(at most 2 seconds) until the set's creator has set its value.
@function sem.open
@tparam integer|string key_or_name
@tparam[opt] integer value create it with this value if it is missing
@tparam[opt="0600"] integer|string mode for a semaphore this call creates
@treturn sem
@error `nil, message, errno`: `ENOENT` (the message says a value creates it), `EACCES`...
@usage local lock = assert(shm.sem.open(0x5345, 1))
lock.undo = true
@see semget(2), sem_open(3)
*/
static int l_open(lua_State *L) {
  int kind = shm_checkkind(L, 1);
  int value = lua_isnoneornil(L, 2) ? -1 : checkrange(L, 2, "value", 0, kindmax(kind));
  int mode = shm_optmode(L, 3, 0600);
  int32_t key = 0;
  semobj *s;
  int en;
  if (kind == SHM_POSIX) shm_checkname(L, 1);
  else key = shm_checkkey(L, 1);
  luaL_argcheck(L, kind == SHM_POSIX || key != IPC_PRIVATE, 1,
                "shm.PRIVATE cannot be opened (use shm.sem.attach(id))");
  s = newsem(L);
  en = kind == SHM_SYSV ? sysv_open(s, key, value, mode) : posix_open(s, lua_tostring(L, 1), value, mode);
  return made(L, "open", en, value < 0);
}

/***
A member of an existing System V set by the set's id (as `ipcs -s` shows it),
such as one that C's `semget(key, 3, ...)` or `ipcmk -S 3` made.
@function sem.attach
@tparam integer semid
@tparam[opt=0] integer index 0-based
@treturn sem
@error `nil, message, errno`: `ERANGE` for an index the set has not, `EINVAL` (no such set), `EACCES`
@usage local s = assert(shm.sem.attach(32769, 2))
@see semctl(2)
*/
static int l_attach(lua_State *L) {
  int id = checkrange(L, 1, "semid", 0, INT32_MAX);
  int index = lua_isnoneornil(L, 2) ? 0 : checkrange(L, 2, "index", 0, INDEX_MAX);
  long nsems = 0;
  semobj *s = newsem(L);
  int en = sysv_attach(s, id, index, &nsems);
  if (en == ERANGE) {
    lua_pushnil(L);
    lua_pushfstring(L, "shm.sem.attach(id=%d): no index %d, the set has %d semaphore%s", id, index,
                    (int)nsems, nsems == 1 ? "" : "s");
    lua_pushinteger(L, en);
    return 3;
  }
  if (en != 0) return shm_fail(L, en, "shm.sem.attach(id=%d)", id);
  personalize(L, s);
  return 1;
}

/***
Remove a semaphore by key or name without opening it (`ipcrm -S`, `sem_unlink`).
@function sem.unlink
@tparam integer|string key_or_name
@treturn boolean true
@error `nil, message, errno`
@usage shm.sem.unlink("/jobs")
@see semctl(2), sem_unlink(3)
*/
static int l_unlink(lua_State *L) {
  char obj[16];
  int kind = shm_checkkind(L, 1), en;
  if (kind == SHM_POSIX) {
    const char *name = shm_checkname(L, 1);
    en = sem_unlink(name) == 0 ? 0 : errno;
    return shm_ok(L, en == 0, en, "shm.sem.unlink(%s)", name);
  }
  {
    int32_t key = shm_checkkey(L, 1);
    luaL_argcheck(L, key != IPC_PRIVATE, 1, "shm.PRIVATE names no semaphore");
    en = sysv_unlink(key);
    keystr(obj, sizeof obj, key);
    return shm_ok(L, en == 0, en, "shm.sem.unlink(%s)", obj);
  }
}

/***
A semaphore (see `shm.sem.open`).  Fields: `kind` (`"sysv"`, `"posix"`),
`key`, `id`, `index` (System V), `name` (POSIX), `value` (the current value;
`nil` once removed), `undo` (System V: settable, see below).
@type sem
*/

/* The wait's results: true; false, "timeout" | "interrupted"; nil, msg, errno. */
static int waitresult(lua_State *L, semobj *s, const char *call, shm_status st, int en) {
  if (st == SHM_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (st == SHM_ERRNO) return semfail(L, s, call, en);
  lua_pushboolean(L, 0);
  lua_pushstring(L, st == SHM_TIMEOUT ? "timeout" : "interrupted");
  return 2;
}

static int semwait(lua_State *L, semobj *s, const char *call, int n, const shm_deadline *d) {
  semhook h;
  semintr in;
  int en = 0;
  shm_status st;
  hooknote(&h, L);
  in.asked = hookset;
  in.ud = &h;
  st = s->ops->op(s, n, d, &in, &en);
  return waitresult(L, s, call, st, en);
}

/***
Take `n` units, waiting while there are fewer.  A signal whose handler asks
Lua to stop (Ctrl-C in the interpreter, luaposix's handlers) ends the wait
with `false, "interrupted"`; any other interruption (a stop and continue)
resumes it with the time left.
@function sem:acquire
@tparam[opt] number timeout seconds (`nil`: forever, `0`: try once)
@tparam[opt=1] integer n System V: 1 to 32767; POSIX: 1 only
@treturn boolean `true`
@treturn[2] boolean `false`
@treturn[2] string `"timeout"` or `"interrupted"`
@error `nil, message, errno` when the semaphore was removed (`EIDRM`, `EINVAL`)
@usage if s:acquire(5) then work() s:release() end
@see semop(2), semtimedop(2), sem_clockwait(3)
*/
static int s_acquire(lua_State *L) {
  semobj *s = checksem(L);
  shm_deadline d;
  int n = 1, top = lua_gettop(L);
  double t = top >= 2 ? shm_opttimeout(L, 2) : -1;
  if (top >= 3 && !lua_isnil(L, 3)) {
    n = checkrange(L, 3, "n", 1, SEMVMX);
    luaL_argcheck(L, n == 1 || s->ops == &sysv_semops, 3, "a POSIX semaphore takes 1 unit at a time");
  }
  if (s->ops == &posix_semops && sem_trywait(s->sem) == 0) { /* uncontended: no clock, no hooks */
    lua_pushboolean(L, 1);
    return 1;
  }
  if (t < 0) d.forever = 1;
  else shm_deadline_after(&d, t);
  return semwait(L, s, "acquire", -n, &d);
}

/***
Give `n` units back (never waits).
@function sem:release
@tparam[opt=1] integer n System V: 1 to 32767; POSIX: 1 to `SEM_VALUE_MAX`
@treturn boolean `true`
@error `nil, message, errno`: `ERANGE` (System V) or `EOVERFLOW` (POSIX) above the
largest value (nothing released then), `EIDRM`/`EINVAL` when removed
@usage s:release()
@see semop(2), sem_post(3)
*/
static int s_release(lua_State *L) {
  semobj *s = checksem(L);
  int n = lua_gettop(L) < 2 || lua_isnil(L, 2)
              ? 1 : checkrange(L, 2, "n", 1, kindmax(s->ops == &sysv_semops ? SHM_SYSV : SHM_POSIX));
  return semresult(L, s, "release", s->ops->release(s, n));
}

/***
System V: wait until the value is 0; results as `sem:acquire`.
@function sem:wait_zero
@tparam[opt] number timeout seconds
@treturn boolean `true`, or `false, "timeout"` / `false, "interrupted"`
@raise on a POSIX semaphore
@usage local done = shm.sem.create(0x5346, 3) -- three workers release it
assert(done:wait_zero(60))
@see semop(2)
*/
static int s_wait_zero(lua_State *L) {
  semobj *s = checksem(L);
  shm_deadline d;
  shm_optdeadline(L, 2, &d);
  luaL_argcheck(L, s->ops == &sysv_semops, 1, "wait_zero is for System V semaphores only");
  return semwait(L, s, "wait_zero", 0, &d);
}

/***
System V: set the value (`SETVAL`; waiters are woken as the value allows).
@function sem:setvalue
@tparam integer value 0 to 32767
@treturn boolean `true`
@raise on a POSIX semaphore (POSIX has no such call)
@usage s:setvalue(1)
@see semctl(2)
*/
static int s_setvalue(lua_State *L) {
  semobj *s = checksem(L);
  int v;
  luaL_argcheck(L, s->ops->setvalue != NULL, 1, "setvalue is for System V semaphores only");
  v = checkrange(L, 2, "value", 0, SEMVMX);
  return semresult(L, s, "setvalue", s->ops->setvalue(s, v));
}

static void setlong(lua_State *L, const char *k, long long v) {
  if (v >= 0) shm_setfield_int(L, k, (lua_Integer)v);
}

/***
What the kernel says of it: `kind`, `value`, `mode`, `uid`, `gid`; System V
adds `key id index nsems ncnt zcnt lastpid otime ctime cuid cgid`; POSIX adds
`name`.
@function sem:stat
@treturn table
@error `nil, message, errno` (removed: a POSIX name that no longer names it gives `ENOENT`)
@usage print(s:stat().ncnt, "processes wait to acquire")
@see semctl(2)
*/
static int s_stat(lua_State *L) {
  semobj *s = checksem(L);
  semstat i;
  int en;
  memset(&i, 0xff, sizeof i); /* -1 everywhere: not this kind's */
  en = s->ops->stat(s, &i);
  if (en != 0) return semfail(L, s, "stat", en);
  lua_createtable(L, 0, 16);
  shm_setfield_str(L, "kind", s->ops->kind);
  setlong(L, "value", i.value);
  setlong(L, "mode", i.mode);
  setlong(L, "uid", i.uid);
  setlong(L, "gid", i.gid);
  if (s->ops == &sysv_semops) {
    shm_setfield_int(L, "key", (lua_Integer)(uint32_t)s->key);
    shm_setfield_int(L, "id", s->semid);
    shm_setfield_int(L, "index", s->index);
    setlong(L, "nsems", i.nsems);
    setlong(L, "ncnt", i.ncnt);
    setlong(L, "zcnt", i.zcnt);
    setlong(L, "lastpid", i.lastpid);
    setlong(L, "otime", i.otime);
    setlong(L, "ctime", i.ctime);
    setlong(L, "cuid", i.cuid);
    setlong(L, "cgid", i.cgid);
  } else {
    shm_setfield_str(L, "name", s->name);
  }
  return 1;
}

/***
Permission bits (`IPC_SET`; POSIX: the file in /dev/shm).
@function sem:chmod
@tparam integer|string mode
@treturn boolean `true`
@error `nil, message, errno`
@usage s:chmod("0660")
*/
static int s_chmod(lua_State *L) {
  semobj *s = checksem(L);
  int mode = shm_checkmode(L, 2);
  return semresult(L, s, "chmod", s->ops->chmod(s, mode));
}

/***
Owner and group (`-1` or `nil`: unchanged).
@function sem:chown
@tparam integer|nil uid
@tparam[opt] integer gid
@treturn boolean `true`
@error `nil, message, errno`
@usage s:chown(nil, 1000)
*/
static int s_chown(lua_State *L) {
  semobj *s = checksem(L);
  lua_Integer uid = luaL_optinteger(L, 2, -1), gid = luaL_optinteger(L, 3, -1);
  luaL_argcheck(L, uid >= -1 && uid <= (lua_Integer)UINT32_MAX - 1, 2, "uid out of range");
  luaL_argcheck(L, gid >= -1 && gid <= (lua_Integer)UINT32_MAX - 1, 3, "gid out of range");
  return semresult(L, s, "chown", s->ops->chown(s, (uid_t)uid, (gid_t)gid));
}

/***
Remove it from the system (`IPC_RMID`: waiters get `nil, message, EIDRM`;
`sem_unlink`: processes that have it open keep using it).  The handle stays open.
@function sem:remove
@treturn boolean `true`
@error `nil, message, errno`
@usage s:remove()
@see semctl(2), sem_unlink(3)
*/
static int s_remove(lua_State *L) {
  semobj *s = checksem(L);
  return semresult(L, s, "remove", s->ops->remove(s));
}

/***
Release this handle (`sem_close`; nothing for System V).  It never removes the
semaphore, and calling it again is harmless; later use raises
`attempt to use a closed semaphore`.  `__gc` and `__close` call it.
@function sem:close
@treturn boolean `true`
@usage do local s <close> = assert(shm.sem.open("/jobs")) ... end
@see sem_close(3)
*/
static int s_close(lua_State *L) {
  semobj *s = testsem(L, 1);
  if (s->open) s->ops->close(s);
  lua_pushboolean(L, 1);
  return 1;
}

static int s_tostring(lua_State *L) {
  semobj *s = testsem(L, 1);
  char obj[NAME_MAX + 48];
  s->ops->describe(s, obj, sizeof obj);
  lua_pushfstring(L, "shm.sem(%s %s%s%s)", s->ops->kind, obj, s->undo ? " undo" : "",
                  s->open ? "" : " closed");
  return 1;
}

/* __index of a semaphore's __index table: `value` (the table holds the
 * semaphore at [&self_key]); nil for anything else. */
static int s_dynindex(lua_State *L) {
  semobj *s;
  int v;
  if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "value") != 0) return 0;
  lua_rawgetp(L, 1, &self_key);
  s = testsem(L, -1);
  if (!s->open) return luaL_error(L, "attempt to use a closed semaphore");
  if (s->ops->getvalue(s, &v) == 0) lua_pushinteger(L, v);
  else lua_pushnil(L);
  return 1;
}

/* __newindex: only undo, and only on System V. */
static int s_newindex(lua_State *L) {
  semobj *s = testsem(L, 1);
  const char *k = lua_tostring(L, 2);
  if (lua_type(L, 2) != LUA_TSTRING || strcmp(k, "undo") != 0)
    return luaL_error(L, "cannot set field '%s' of a semaphore (only undo)", luaL_tolstring(L, 2, NULL));
  if (s->ops != &sysv_semops)
    return luaL_error(L, "a POSIX semaphore has no undo (SEM_UNDO is System V's): "
                         "a holder that dies keeps its unit");
  if (!s->open) return luaL_error(L, "attempt to use a closed semaphore");
  luaL_checktype(L, 3, LUA_TBOOLEAN);
  s->undo = lua_toboolean(L, 3);
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__index");
  lua_pushboolean(L, s->undo);
  lua_setfield(L, -2, "undo");
  return 0;
}

/* ---- FFI entry points (lua/shm/ffi.lua under LuaJIT) ----
 * acquire and release as plain C functions, reached through a table of
 * function pointers (shm.sem._ffi, a light userdata).  `ud` is a semaphore's
 * userdata (the caller has checked that it is one, by its metatable); its
 * state (open, kind, undo, the set id or glibc's sem_t mapping) is read from
 * the struct on every call, never kept on the Lua side, so a closed handle is
 * refused however the call was compiled.  They do what s_acquire and
 * s_release do once the arguments are checked, with the same core calls: an
 * uncontended POSIX acquire is one sem_trywait, a wait notes the hooks first
 * and ends with SHM_INTERRUPTED when a signal's handler changed them (LuaJIT's
 * hooks are global: the semaphore's thread shows them; only LuaJIT calls
 * these).  They return an shm_status (SHM_ERRNO with *en: `message` formats
 * semfail's message), or SHM_FFI_FALLBACK having done nothing for a call the
 * C API must answer (a closed handle, arguments it checks, several POSIX
 * units released at once). */
static semobj *ffi_sem(void *ud) {
  semud *u = (semud *)ud;
  semobj *s = u != NULL ? &u->s : NULL;
  if (s == NULL || !s->open || u->hooks == NULL) return NULL;
  if (s->ops == &posix_semops) return s->sem != NULL ? s : NULL;
  return s->ops == &sysv_semops ? s : NULL;
}

/* t: the timeout in seconds, -1 for none (forever). */
static int ffi_acquire(void *ud, int n, double t, int *en) {
  semobj *s = ffi_sem(ud);
  semhook h;
  semintr in;
  shm_deadline d;
  *en = 0;
  if (s == NULL || n < 1 || n > SEMVMX || (n != 1 && s->ops != &sysv_semops) || !(t >= 0 || t == -1))
    return SHM_FFI_FALLBACK;
  if (s->ops == &posix_semops && sem_trywait(s->sem) == 0) return SHM_OK; /* as s_acquire */
  if (t < 0) d.forever = 1;
  else shm_deadline_after(&d, t);
  memset(&h, 0, sizeof h); /* hooknote's, with no stack: LuaJIT's are global */
  h.L[0] = ((semud *)ud)->hooks;
  h.hook[0] = lua_gethook(h.L[0]);
  h.mask[0] = lua_gethookmask(h.L[0]);
  h.count[0] = lua_gethookcount(h.L[0]);
  in.asked = hookset;
  in.ud = &h;
  return (int)s->ops->op(s, -n, &d, &in, en);
}

static int ffi_release(void *ud, int n, int *en) {
  semobj *s = ffi_sem(ud);
  *en = 0;
  if (s == NULL || n < 1 || n > SEMVMX || (n != 1 && s->ops != &sysv_semops)) return SHM_FFI_FALLBACK;
  *en = s->ops->release(s, n);
  return *en == 0 ? SHM_OK : SHM_ERRNO;
}

/* semfail's message into buf (n bytes, SEMMSG_MAX enough). */
static void ffi_message(void *ud, const char *call, int en, char *buf, size_t n) {
  semobj *s = &((semud *)ud)->s;
  if (n > 0) semmessage(s, call, en, buf, n);
}

/* Keep in step with the cdef in lua/shm/ffi.lua (its sem block). */
typedef struct shm_sem_ffi_api {
  int version;
  int semvmx;
  int msgmax;
  int (*acquire)(void *, int, double, int *);
  int (*release)(void *, int, int *);
  void (*message)(void *, const char *, int, char *, size_t);
} shm_sem_ffi_api;

static const shm_sem_ffi_api sem_ffi = {2, SEMVMX, SEMMSG_MAX, ffi_acquire, ffi_release, ffi_message};

static const luaL_Reg sem_methods[] = {
  {"acquire", s_acquire}, {"release", s_release}, {"wait_zero", s_wait_zero},
  {"setvalue", s_setvalue}, {"stat", s_stat},     {"chmod", s_chmod},
  {"chown", s_chown},     {"remove", s_remove},   {"close", s_close},
  {NULL, NULL}};

static const luaL_Reg sem_meta[] = {
  {"__gc", s_close}, SHM_CLOSE_ENTRY(s_close) {"__tostring", s_tostring},
  {"__newindex", s_newindex}, {NULL, NULL}};

static const luaL_Reg sem_funcs[] = {
  {"create", l_create}, {"open", l_open}, {"attach", l_attach}, {"unlink", l_unlink},
  {"list", l_list},     {NULL, NULL}};

void shm_open_sem(lua_State *L, int module, int methods) {
  (void)methods;
  shm_newclass(L, SEM_MT, NULL, sem_meta);
  luaL_getmetatable(L, SEM_MT);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, &sem_key);
  luaL_newlib(L, sem_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index"); /* (a constructor's failure: a semaphore nobody sees) */
  lua_createtable(L, 0, 1);       /* the __index tables' metatable: `value` */
  lua_pushcfunction(L, s_dynindex);
  lua_setfield(L, -2, "__index");
  luaL_newlibtable(L, sem_funcs);
  lua_insert(L, -3);
  luaL_setfuncs(L, sem_funcs, 2); /* upvalues: the methods, that metatable */
  lua_pushlightuserdata(L, (void *)&sem_ffi); /* for lua/shm/ffi.lua */
  lua_setfield(L, -2, "_ffi");
  lua_setfield(L, module, "sem");
  lua_pop(L, 1);
}
