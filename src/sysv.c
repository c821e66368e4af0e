/*
 * System V shared memory: shmget/shmat/shmdt/shmctl, ftok; shm_sysv_ops,
 * the operations of a System V segment.
 */
/***
@module shm
*/
#include "shm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>

/* "0x1234" or "PRIVATE", for messages. */
static const char *keystr(char *buf, size_t n, int32_t key) {
  if (key == IPC_PRIVATE) return "PRIVATE";
  snprintf(buf, n, "0x%x", (unsigned)(uint32_t)key);
  return buf;
}

/* Attach `id` into the (detached) segment `s`; on success fills addr, size,
 * key.  Returns 0 or errno. */
static int attach_id(shm_segment *s, int id, int readonly) {
  struct shmid_ds ds;
  int en;
  void *p = shmat(id, NULL, readonly ? SHM_RDONLY : 0);
  if (p == (void *)-1) return errno;
  if (shmctl(id, IPC_STAT, &ds) != 0) {
    en = errno;
    shmdt(p);
    return en;
  }
  s->addr = (unsigned char *)p;
  s->size = ds.shm_segsz; /* as requested at creation, never page-rounded */
  s->shmid = id;
  s->key = (int32_t)ds.shm_perm.__key;
  s->readonly = readonly;
  s->resv_lo = 0;
  s->resv_hi = readonly ? 0 : s->size; /* taken as touched: nothing to reserve */
  return 0;
}

/* A failed shmget: EINVAL says why (an existing segment smaller than the
 * size asked, or a size above kernel.shmmax); a missing segment that a size
 * would have created says so. */
static int failsize(lua_State *L, int en, const char *call, int32_t key, const char *obj,
                    size_t size) {
  unsigned long long max = 0;
  struct shmid_ds ds;
  FILE *f;
  int id;
  if (en == ENOENT && size == 0) {
    shm_fail(L, en, "%s(%s)", call, obj);
    return shm_hint(L, "pass a size to create it");
  }
  if (en == EINVAL && size > 0 && key != IPC_PRIVATE && (id = shmget((key_t)key, 0, 0)) >= 0 &&
      shmctl(id, IPC_STAT, &ds) == 0 && ds.shm_segsz < size)
    return shm_fail(L, en, "%s(%s): exists with %zu bytes, %zu asked", call, obj,
                    (size_t)ds.shm_segsz, size);
  if (en == EINVAL && size > 0 && (f = fopen("/proc/sys/kernel/shmmax", "r")) != NULL) {
    if (fscanf(f, "%llu", &max) != 1) max = 0;
    fclose(f);
    if (max > 0 && (unsigned long long)size > max)
      return shm_fail(L, en, "%s(%s): %zu bytes is above kernel.shmmax (%llu)", call, obj, size, max);
  }
  return shm_fail(L, en, "%s(%s)", call, obj);
}

int shm_sysv_create(lua_State *L) {
  char buf[24];
  int32_t key = shm_checkkey(L, 1);
  size_t size = shm_checksize(L, 2);
  int mode = shm_optmode(L, 3, 0600);
  shm_segment *s = shm_newsegment(L, &shm_sysv_ops);
  int en, id = shmget((key_t)key, size, IPC_CREAT | IPC_EXCL | mode);
  if (id < 0) {
    en = errno;
    return failsize(L, en, "shm.create", IPC_PRIVATE, keystr(buf, sizeof buf, key), size);
  }
  en = attach_id(s, id, 0);
  if (en != 0) {
    shmctl(id, IPC_RMID, NULL); /* do not leak what we just made */
    return shm_fail(L, en, "shm.create(%s)", keystr(buf, sizeof buf, key));
  }
  s->key = key;
  return 1;
}

int shm_sysv_open(lua_State *L) {
  char buf[24];
  int32_t key = shm_checkkey(L, 1);
  int readonly = shm_optaccess(L, 2);
  size_t size = shm_optsize(L, 3);
  int mode = shm_optmode(L, 4, 0600);
  shm_segment *s;
  int en, id;
  luaL_argcheck(L, key != IPC_PRIVATE, 1, "shm.PRIVATE cannot be opened (use shm.attach(id))");
  luaL_argcheck(L, !(readonly && size > 0), 3, "cannot create a segment read-only");
  s = shm_newsegment(L, &shm_sysv_ops);
  /* With a size, IPC_CREAT without IPC_EXCL: the kernel creates or finds the
   * segment atomically, so racing openers all end up on one segment. */
  id = size > 0 ? shmget((key_t)key, size, IPC_CREAT | mode) : shmget((key_t)key, 0, 0);
  if (id < 0) {
    en = errno;
    return failsize(L, en, "shm.open", key, keystr(buf, sizeof buf, key), size);
  }
  en = attach_id(s, id, readonly);
  if (en != 0) return shm_fail(L, en, "shm.open(%s)", keystr(buf, sizeof buf, key));
  return 1;
}

/***
Attach a System V segment by its shmid, as `ipcs -m` lists it.
@function attach
@tparam integer id
@tparam[opt="rw"] string access
@treturn segment
@error `nil, message, errno`
@usage local seg = assert(shm.attach(32768, "r"))
@see shmat(2), shmctl(2)
*/
int shm_sysv_attach(lua_State *L) {
  lua_Integer id = luaL_checkinteger(L, 1);
  int readonly = shm_optaccess(L, 2);
  shm_segment *s;
  int en;
  luaL_argcheck(L, id >= 0 && id <= INT32_MAX, 1, "shmid out of range");
  s = shm_newsegment(L, &shm_sysv_ops);
  en = attach_id(s, (int)id, readonly);
  if (en != 0) return shm_fail(L, en, "shm.attach(id=%d)", (int)id);
  return 1;
}

int shm_sysv_unlink(lua_State *L) {
  char buf[24];
  int32_t key = shm_checkkey(L, 1);
  int en, id;
  luaL_argcheck(L, key != IPC_PRIVATE, 1, "shm.PRIVATE names no segment");
  id = shmget((key_t)key, 0, 0);
  if (id >= 0 && shmctl(id, IPC_RMID, NULL) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  en = errno;
  return shm_fail(L, en, "shm.unlink(%s)", keystr(buf, sizeof buf, key));
}

/***
A System V key from an existing path and a project id.
@function ftok
@tparam string path an existing file
@tparam integer|string proj 1 to 255, or one character
@treturn integer key
@error `nil, message, errno` (`ENOENT`)
@usage local key = assert(shm.ftok("/etc/hostname", "L"))
@see ftok(3)
*/
int shm_sysv_ftok(lua_State *L) {
  const char *path = shm_checkpath(L, 1);
  int proj = shm_checkbyte(L, 2, "project id");
  key_t key;
  luaL_argcheck(L, proj != 0, 2, "project id must not be 0");
  key = ftok(path, proj);
  if (key == (key_t)-1) {
    int en = errno;
    return shm_fail(L, en, "shm.ftok(%s)", path);
  }
  lua_pushinteger(L, (lua_Integer)(uint32_t)key);
  return 1;
}

/* Push the info table of one segment (as seg:stat() and shm.list() give). */
static void pushinfo(lua_State *L, int id, const struct shmid_ds *ds) {
  lua_createtable(L, 0, 17);
  shm_setfield_str(L, "kind", "sysv");
  shm_setfield_int(L, "size", (lua_Integer)ds->shm_segsz);
  shm_setfield_int(L, "mode", ds->shm_perm.mode & 0777);
  shm_setfield_int(L, "uid", ds->shm_perm.uid);
  shm_setfield_int(L, "gid", ds->shm_perm.gid);
  shm_setfield_int(L, "key", (lua_Integer)(uint32_t)ds->shm_perm.__key);
  shm_setfield_int(L, "id", id);
  shm_setfield_int(L, "cuid", ds->shm_perm.cuid);
  shm_setfield_int(L, "cgid", ds->shm_perm.cgid);
  shm_setfield_int(L, "cpid", ds->shm_cpid);
  shm_setfield_int(L, "lpid", ds->shm_lpid);
  shm_setfield_int(L, "nattch", (lua_Integer)ds->shm_nattch);
  shm_setfield_int(L, "atime", (lua_Integer)ds->shm_atime);
  shm_setfield_int(L, "dtime", (lua_Integer)ds->shm_dtime);
  shm_setfield_int(L, "ctime", (lua_Integer)ds->shm_ctime);
  shm_setfield_bool(L, "removed", (ds->shm_perm.mode & SHM_DEST) != 0);
}

/* Append every segment the caller can see to the table at `t`. */
int shm_sysv_list(lua_State *L, int t, lua_Integer *n) {
  struct shm_info info;
  struct shmid_ds ds;
  int i, id, maxidx, cmd = SHM_STAT_ANY;
  maxidx = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&info);
  if (maxidx < 0) {
    int en = errno;
    return shm_fail(L, en, "shm.list(): shmctl(SHM_INFO)");
  }
  for (i = 0; i <= maxidx; i++) {
    memset(&ds, 0, sizeof ds); /* (valgrind does not know SHM_STAT_ANY fills it) */
    id = shmctl(i, cmd, &ds);
    if (id < 0 && errno == EINVAL && cmd == SHM_STAT_ANY && i == 0) {
      /* kernels before 4.17 have no SHM_STAT_ANY */
      id = shmctl(i, SHM_STAT, &ds);
      if (id >= 0 || errno != EINVAL) cmd = SHM_STAT;
    }
    if (id < 0) continue; /* unused index, or not readable by us */
    pushinfo(L, id, &ds);
    lua_rawseti(L, t, ++*n);
  }
  return 0;
}

static int sysv_stat(lua_State *L, shm_segment *s) {
  struct shmid_ds ds;
  if (shmctl(s->shmid, IPC_STAT, &ds) != 0) {
    int en = errno;
    return shm_fail(L, en, "seg:stat(key=0x%x id=%d)", (unsigned)s->key, s->shmid);
  }
  pushinfo(L, s->shmid, &ds);
  return 1;
}

static int sysv_remove(lua_State *L, shm_segment *s) {
  int ok = shmctl(s->shmid, IPC_RMID, NULL) == 0;
  return shm_ok(L, ok, errno, "seg:remove(key=0x%x id=%d)", (unsigned)s->key, s->shmid);
}

static int sysv_chmod(lua_State *L, shm_segment *s, int mode) {
  struct shmid_ds ds;
  int ok = shmctl(s->shmid, IPC_STAT, &ds) == 0;
  if (ok) {
    ds.shm_perm.mode = (unsigned short)((ds.shm_perm.mode & ~0777u) | (unsigned)mode);
    ok = shmctl(s->shmid, IPC_SET, &ds) == 0;
  }
  return shm_ok(L, ok, errno, "seg:chmod(key=0x%x id=%d)", (unsigned)s->key, s->shmid);
}

static int sysv_chown(lua_State *L, shm_segment *s, uid_t uid, gid_t gid) {
  struct shmid_ds ds;
  int ok = shmctl(s->shmid, IPC_STAT, &ds) == 0;
  if (ok) {
    if (uid != (uid_t)-1) ds.shm_perm.uid = uid;
    if (gid != (gid_t)-1) ds.shm_perm.gid = gid;
    ok = shmctl(s->shmid, IPC_SET, &ds) == 0;
  }
  return shm_ok(L, ok, errno, "seg:chown(key=0x%x id=%d)", (unsigned)s->key, s->shmid);
}

/* Nothing to flush: the memory is the object. */
static int sysv_sync(lua_State *L, shm_segment *s) {
  (void)s;
  lua_pushboolean(L, 1);
  return 1;
}

static int sysv_unmap(shm_segment *s) {
  int en = 0;
  if (s->addr != NULL && shmdt(s->addr) != 0) en = errno;
  s->addr = NULL;
  return en;
}

static void sysv_describe(lua_State *L, shm_segment *s) {
  char buf[48];
  snprintf(buf, sizeof buf, "key=0x%x id=%d", (unsigned)s->key, s->shmid);
  lua_pushstring(L, buf);
}

static int sysv_field(lua_State *L, shm_segment *s, const char *k) {
  if (strcmp(k, "key") == 0) lua_pushinteger(L, (lua_Integer)(uint32_t)s->key);
  else if (strcmp(k, "id") == 0) lua_pushinteger(L, s->shmid);
  else return 0;
  return 1;
}

/* The kernel gives a System V segment its pages as they are touched, from
 * memory not bounded by a file system's size: nothing to reserve. */
static int sysv_reserve(shm_segment *s, size_t off, size_t len) {
  (void)s, (void)off, (void)len;
  return 0;
}

const shm_ops shm_sysv_ops = {
  "sysv", NULL, sysv_unmap, sysv_describe, sysv_field,
  sysv_stat, sysv_remove, sysv_chmod, sysv_chown, sysv_sync, sysv_reserve,
};
