/* The C side of spec/sem_spec.lua: plain semop(2) and sem_open(3) calls on
 * the semaphores the Lua side uses (compiled by the spec into a temporary
 * directory).  Each command prints one line and exits 0, or prints the
 * failing call and exits 1.
 *   sysv-make KEY NSEMS VALUE     semget(IPC_CREAT|IPC_EXCL, 0600), SETALL VALUE; prints the id
 *   sysv-op KEY INDEX OP UNDO     semop(OP) on member INDEX (UNDO: 1 = SEM_UNDO); prints "ok"
 *   sysv-hold KEY UNDO            semop(-1), prints "held", then sleeps until killed
 *   sysv-val KEY INDEX            prints GETVAL
 *   posix-make NAME VALUE         sem_open(O_CREAT|O_EXCL, 0600, VALUE)
 *   posix-post NAME | posix-wait NAME | posix-val NAME
 *   posix-hold NAME               sem_wait, prints "held", then sleeps until killed */
#define _GNU_SOURCE
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <unistd.h>

union semun {
  int val;
  struct semid_ds *buf;
  unsigned short *array;
};

static int fail(const char *what) {
  perror(what);
  return 1;
}

static int set(const char *key) {
  int id = semget((key_t)strtoul(key, NULL, 0), 0, 0);
  if (id < 0) exit(fail("semget"));
  return id;
}

static sem_t *named(const char *name) {
  sem_t *s = sem_open(name, 0);
  if (s == SEM_FAILED) exit(fail("sem_open"));
  return s;
}

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "";
  setvbuf(stdout, NULL, _IONBF, 0);
  if (strcmp(cmd, "sysv-make") == 0 && argc == 5) {
    int n = atoi(argv[3]), i, id = semget((key_t)strtoul(argv[2], NULL, 0), n, IPC_CREAT | IPC_EXCL | 0600);
    unsigned short vals[64];
    union semun arg;
    if (id < 0 || n > 64) return fail("semget");
    for (i = 0; i < n; i++) vals[i] = (unsigned short)atoi(argv[4]);
    arg.array = vals;
    if (semctl(id, 0, SETALL, arg) != 0) return fail("semctl(SETALL)");
    printf("%d\n", id);
  } else if ((strcmp(cmd, "sysv-op") == 0 && argc == 6) || (strcmp(cmd, "sysv-hold") == 0 && argc == 4)) {
    int hold = cmd[5] == 'h';
    struct sembuf b;
    b.sem_num = (unsigned short)(hold ? 0 : atoi(argv[3]));
    b.sem_op = (short)(hold ? -1 : atoi(argv[4]));
    b.sem_flg = (short)(atoi(argv[hold ? 3 : 5]) ? SEM_UNDO : 0);
    if (semop(set(argv[2]), &b, 1) != 0) return fail("semop");
    puts(hold ? "held" : "ok");
    if (hold) for (;;) pause();
  } else if (strcmp(cmd, "sysv-val") == 0 && argc == 4) {
    int v = semctl(set(argv[2]), atoi(argv[3]), GETVAL);
    if (v < 0) return fail("semctl(GETVAL)");
    printf("%d\n", v);
  } else if (strcmp(cmd, "posix-make") == 0 && argc == 4) {
    if (sem_open(argv[2], O_CREAT | O_EXCL, 0600, (unsigned)atoi(argv[3])) == SEM_FAILED)
      return fail("sem_open");
    puts("ok");
  } else if (strcmp(cmd, "posix-post") == 0 && argc == 3) {
    if (sem_post(named(argv[2])) != 0) return fail("sem_post");
    puts("ok");
  } else if ((strcmp(cmd, "posix-wait") == 0 || strcmp(cmd, "posix-hold") == 0) && argc == 3) {
    if (sem_wait(named(argv[2])) != 0) return fail("sem_wait");
    puts(cmd[6] == 'h' ? "held" : "ok");
    if (cmd[6] == 'h') for (;;) pause();
  } else if (strcmp(cmd, "posix-val") == 0 && argc == 3) {
    int v;
    if (sem_getvalue(named(argv[2]), &v) != 0) return fail("sem_getvalue");
    printf("%d\n", v);
  } else {
    fprintf(stderr, "usage: see the comment at the top of sem_peer.c\n");
    return 2;
  }
  return 0;
}
