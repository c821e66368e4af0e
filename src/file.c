/*
 * Shared maps of regular files (mmap of a file, MAP_SHARED): shm.map and
 * shm_file_ops.  What a file map shares with a POSIX object (the mapped
 * descriptor) is in posix.c.
 */
/***
@module shm
*/
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* @see unlink(2) */
static int file_remove(lua_State *L, shm_segment *s) {
  lua_getiuservalue(L, 1, 1);
  return shm_fd_remove(L, s, lua_tostring(L, -1), unlink);
}

/* @see msync(2) */
static int file_sync(lua_State *L, shm_segment *s) {
  int ok = msync(s->addr, s->maplen, MS_SYNC) == 0;
  int en = errno;
  shm_fd_describe(L, s);
  return shm_ok(L, ok, en, "seg:sync(%s)", lua_tostring(L, -1));
}

const shm_ops shm_file_ops = {
  "file", "path", shm_fd_unmap, shm_fd_describe, shm_fd_field,
  shm_fd_stat, file_remove, shm_fd_chmod, shm_fd_chown, file_sync, shm_fd_reserve,
};

/* Close fd; unlink path if this call created the file there (and it is
 * still the file path names). */
static void discard(int fd, const char *path, int created) {
  struct stat mine, now;
  if (created && fstat(fd, &mine) == 0 && stat(path, &now) == 0 && mine.st_dev == now.st_dev &&
      mine.st_ino == now.st_ino)
    unlink(path);
  close(fd);
}

/* Open path; with create, make it if it is missing (*created says whether
 * this call made it).  -1 and errno on failure.  A symbolic link is never
 * followed (ELOOP: someone may have planted it where the file was to be),
 * and a FIFO never blocks the open (fstat then refuses it). */
static int openfile(const char *path, int readonly, int create, int *created) {
  const int flags = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
  int fd, tries;
  *created = 0;
  if (readonly || !create) return open(path, (readonly ? O_RDONLY : O_RDWR) | flags);
  for (tries = 0; tries < 100; tries++) {
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | flags, 0600);
    if (fd >= 0) {
      *created = 1;
      return fd;
    }
    if (errno != EEXIST) return -1;
    fd = open(path, O_RDWR | flags);
    if (fd >= 0 || errno != ENOENT) return fd; /* ENOENT: removed in between, again */
  }
  return -1;
}

/***
Map a regular file shared (persistent, unlike System V and POSIX memory).
With `size` a missing file is created (`0600`) and a smaller one of the
caller's grown to that size (unlike `open`, which never resizes an object: a
file map is a file the caller names); a larger file is mapped whole.  The
blocks of a writable map are reserved, so that a full disk is an error here,
never SIGBUS at a later write; a file this call created is removed again if it
fails.  The last component of `path` is never followed if it is a symbolic link
(`ELOOP`: resolve it first, e.g. with `realpath`, where a link is meant), and a
file owned by another user is never grown (`EPERM`), so that a name planted in a
shared directory such as `/tmp` cannot make the caller write or grow a file that
is not its own.
@function map
@tparam string path (a string only: a number is not a path)
@tparam[opt] integer size
@tparam[opt="rw"] string access
@treturn segment
@error `nil, message, errno`: `ENOENT` (without a size), `EINVAL` (not a regular file,
an empty file, or a read-only map of a smaller file), `ELOOP` (a symbolic link),
`EPERM` (another user's file, smaller than `size`), `ENOSPC`...
@usage local seg = assert(shm.map("/var/lib/app/state", 65536))
@see open(2), fallocate(2), mmap(2)
*/
int shm_file_map(lua_State *L, size_t reserve) {
  const char *path = shm_checkpath(L, 1);
  size_t size = shm_optsize(L, 2), have, reserved = 0;
  int readonly = shm_optaccess(L, 3);
  shm_segment *s = shm_newsegment(L, &shm_file_ops);
  struct stat st;
  char *real;
  int en, fd, created;
  fd = openfile(path, readonly, size > 0, &created);
  if (fd < 0) {
    en = errno;
    shm_fail(L, en, "shm.map(%s)", path);
    if (en == ELOOP && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
      return shm_hint(L, "a symbolic link, not followed");
    return en == ENOENT && size == 0 ? shm_hint(L, "pass a size to create it") : 3;
  }
  if (fstat(fd, &st) != 0) en = errno;
  else if (!S_ISREG(st.st_mode)) en = EINVAL;
  else en = 0;
  if (en != 0) {
    discard(fd, path, created);
    return shm_fail(L, en, "shm.map(%s)", path);
  }
  have = (size_t)st.st_size;
  /* a structure's existing file is mapped as it is: the structure validates
   * it (its magic) before it writes anything, and never grows it */
  if (reserve != SHM_RESERVE_ALL && !created && have > 0) size = have;
  if (size == 0 && have == 0) {
    discard(fd, path, created);
    return shm_fail(L, EINVAL, "shm.map(%s): the file is empty (size 0)", path);
  }
  if (readonly && have < size) {
    discard(fd, path, created);
    return shm_fail(L, EINVAL, "shm.map(%s): %zu bytes, %zu asked (a read-only map cannot grow it)",
                    path, have, size);
  }
  if (have < size && !created && st.st_uid != geteuid()) {
    discard(fd, path, created);
    return shm_fail(L, EPERM, "shm.map(%s): %zu bytes, owned by uid %u: not grown", path, have,
                    (unsigned)st.st_uid);
  }
  if (have > size) size = have;
  en = readonly ? 0 : shm_fd_size(fd, size, reserve, &st, &reserved);
  if (en != 0) {
    discard(fd, path, created);
    return shm_fail(L, en, "shm.map(%s): reserving %zu bytes", path, reserve < size ? reserve : size);
  }
  /* keep the absolute path, so remove() unlinks this file whatever the cwd */
  real = realpath(path, NULL);
  lua_pushstring(L, real != NULL ? real : path);
  free(real);
  lua_setiuservalue(L, -2, 1);
  en = shm_fd_map(s, fd, size, readonly, reserved);
  if (en != 0) {
    discard(fd, path, created);
    return shm_fail(L, en, "shm.map(%s)", path);
  }
  return 1;
}

/* ---- opening a segment of any kind ---- */

int shm_segment_new(lua_State *L, enum shm_how how, size_t reserve) {
  if (how == SHM_MAP) return shm_file_map(L, reserve);
  if (shm_checkkind(L, 1) == SHM_SYSV) return how == SHM_CREATE ? shm_sysv_create(L) : shm_sysv_open(L);
  return how == SHM_CREATE ? shm_posix_create(L, reserve) : shm_posix_open(L, reserve);
}

/* shm_segment_call's function: upvalues the shm_how and the prefix. */
static int segment_call(lua_State *L) {
  enum shm_how how = (enum shm_how)lua_tointeger(L, lua_upvalueindex(1));
  return shm_segment_new(L, how, (size_t)lua_tointeger(L, lua_upvalueindex(2)));
}

void shm_segment_call(lua_State *L, const char *fn, int nargs, size_t prefix) {
  static const char *const names[] = {"create", "open", "map", NULL};
  int i;
  for (i = 0; names[i] != NULL && strcmp(names[i], fn) != 0; i++) {}
  if (names[i] == NULL) luaL_error(L, "shm_segment_call: no segment function %s", fn);
  lua_pushinteger(L, i);
  lua_pushinteger(L, (lua_Integer)prefix);
  lua_pushcclosure(L, segment_call, 2);
  lua_insert(L, -nargs - 1);
  lua_call(L, nargs, 3);
}
