/*
 * The ceiling for command tasks on this machine: posix_spawn(PROG) N times with K in flight,
 * reaping with waitpid(-1). Prints one JSON line: {"tasks":N,"seconds":S,"tasksPerSecond":R,"failed":F,
 * "cpuMs":C} where C is the CPU time (user + system) of this process and its children.
 * Compiled at run time by bench/spawn.ts (cc -O2); no binary is committed.
 *
 *   spawn-loop N K [PROG]        (PROG defaults to /bin/true)
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: spawn-loop N K [PROG]\n");
    return 2;
  }
  long n = atol(argv[1]);
  long k = atol(argv[2]);
  char *prog = argc > 3 ? argv[3] : "/bin/true";
  char *args[] = {prog, NULL};
  long started = 0, done = 0, failed = 0;
  double t0 = now();
  while (done < n) {
    while (started < n && started - done < k) {
      pid_t pid;
      if (posix_spawn(&pid, prog, NULL, NULL, args, environ) != 0) {
        perror("posix_spawn");
        return 1;
      }
      started++;
    }
    int status;
    if (waitpid(-1, &status, 0) < 0) {
      perror("waitpid");
      return 1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
    done++;
  }
  double s = now() - t0;
  struct rusage self, kids;
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &kids);
  double cpu = (self.ru_utime.tv_sec + kids.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_stime.tv_sec) * 1e3 +
               (self.ru_utime.tv_usec + kids.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_stime.tv_usec) / 1e3;
  printf("{\"tasks\":%ld,\"seconds\":%.6f,\"tasksPerSecond\":%.1f,\"failed\":%ld,\"cpuMs\":%.1f}\n", n, s, n / s, failed, cpu);
  return 0;
}
