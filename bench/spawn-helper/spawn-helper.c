/*
 * Prototype of a spawn helper process for the executor (measured by bench/spawn.ts, not used by
 * falconet): a small C process that the Node executor would start once and drive over a pipe,
 * so that each task costs a posix_spawn from a ~1 MB process instead of a fork of Node's large
 * address space on the executor's event loop.
 *
 * What it does per task is what executor/runner.ts asks of Node's spawn: a process group of its
 * own (setpgid), stdin from /dev/null, stdout and stderr captured through pipes (up to a bound),
 * the result reported once the child has exited and both pipes are closed.
 *
 * Protocol (prototype: arguments must not contain tab or newline; a real one would length-prefix):
 *   request  (stdin):  ID \t ARG0 \t ARG1 ... \n
 *   response (stdout): ID EXITCODE SIGNAL NOUT NERR \n  then NOUT bytes of stdout, NERR of stderr
 *   EXITCODE is -1 when killed by SIGNAL; a spawn failure is ID -1 0 0 N \n with N bytes of strerror.
 *
 *   spawn-helper [CAPTURE_LIMIT_BYTES]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_CHILDREN 4096
#define MAX_ARGS 256

struct child {
  long id;
  pid_t pid; /* 0: free */
  int fd[2]; /* stdout, stderr pipes; -1 once closed */
  char *buf[2];
  size_t len[2];
  int exited, status;
};

static struct child kids[MAX_CHILDREN];
static size_t limit = 1 << 20;
static char *out;
static size_t out_len, out_cap;

static void out_put(const void *p, size_t n) {
  if (out_len + n > out_cap) {
    out_cap = (out_len + n) * 2;
    out = realloc(out, out_cap);
  }
  memcpy(out + out_len, p, n);
  out_len += n;
}

static void out_flush(void) {
  size_t off = 0;
  while (off < out_len) {
    ssize_t w = write(1, out + off, out_len - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      exit(0); /* our parent is gone */
    }
    off += w;
  }
  out_len = 0;
}

static void finish(struct child *c) {
  char head[128];
  int code = WIFEXITED(c->status) ? WEXITSTATUS(c->status) : -1;
  int sig = WIFSIGNALED(c->status) ? WTERMSIG(c->status) : 0;
  int n = snprintf(head, sizeof head, "%ld %d %d %zu %zu\n", c->id, code, sig, c->len[0], c->len[1]);
  out_put(head, n);
  for (int i = 0; i < 2; i++) {
    out_put(c->buf[i], c->len[i]);
    free(c->buf[i]);
    c->buf[i] = NULL;
  }
  c->pid = 0;
}

static void maybe_finish(struct child *c) {
  if (c->pid && c->exited && c->fd[0] < 0 && c->fd[1] < 0) finish(c);
}

static void start(char *line) {
  char *argv[MAX_ARGS + 1];
  int argc = 0;
  char *save;
  char *tok = strtok_r(line, "\t", &save);
  if (!tok) return;
  long id = atol(tok);
  while ((tok = strtok_r(NULL, "\t", &save)) && argc < MAX_ARGS) argv[argc++] = tok;
  argv[argc] = NULL;
  struct child *c = NULL;
  for (int i = 0; i < MAX_CHILDREN; i++)
    if (!kids[i].pid) {
      c = &kids[i];
      break;
    }
  int p[2][2];
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int err = 0;
  if (!c || argc == 0) err = c ? EINVAL : EAGAIN;
  if (!err && (pipe2(p[0], O_CLOEXEC) || pipe2(p[1], O_CLOEXEC))) err = errno;
  pid_t pid = 0;
  if (!err) {
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, p[0][1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1][1], 2);
    posix_spawnattr_init(&at);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none); /* we block SIGCHLD; the child must not inherit that */
    posix_spawnattr_setpgroup(&at, 0);      /* a process group of its own, as `detached: true` */
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_USEVFORK);
    err = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(p[0][1]);
    close(p[1][1]);
    if (err) {
      close(p[0][0]);
      close(p[1][0]);
    }
  }
  if (err) {
    char head[64];
    const char *msg = strerror(err);
    int n = snprintf(head, sizeof head, "%ld -1 0 0 %zu\n", id, strlen(msg));
    out_put(head, n);
    out_put(msg, strlen(msg));
    return;
  }
  c->id = id;
  c->pid = pid;
  c->fd[0] = p[0][0];
  c->fd[1] = p[1][0];
  c->len[0] = c->len[1] = 0;
  c->buf[0] = c->buf[1] = NULL;
  c->exited = 0;
}

int main(int argc, char **argv) {
  if (argc > 1) limit = strtoul(argv[1], NULL, 10);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, NULL);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  static char in[1 << 16];
  size_t in_len = 0;
  int in_open = 1;
  static struct pollfd pfd[2 + 2 * MAX_CHILDREN];
  static struct child *owner[2 + 2 * MAX_CHILDREN];
  static int which[2 + 2 * MAX_CHILDREN];
  int live = 0;
  for (;;) {
    int n = 0;
    pfd[n++] = (struct pollfd){.fd = in_open ? 0 : -1, .events = POLLIN};
    pfd[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    live = 0;
    for (int i = 0; i < MAX_CHILDREN; i++) {
      if (!kids[i].pid) continue;
      live++;
      for (int j = 0; j < 2; j++)
        if (kids[i].fd[j] >= 0) {
          owner[n] = &kids[i];
          which[n] = j;
          pfd[n++] = (struct pollfd){.fd = kids[i].fd[j], .events = POLLIN};
        }
    }
    if (!in_open && live == 0) break;
    if (poll(pfd, n, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    for (int k = 2; k < n; k++) {
      if (!pfd[k].revents) continue;
      struct child *c = owner[k];
      int j = which[k];
      char tmp[65536];
      ssize_t r = read(pfd[k].fd, tmp, sizeof tmp);
      if (r > 0) {
        size_t keep = c->len[j] >= limit ? 0 : (size_t)r < limit - c->len[j] ? (size_t)r : limit - c->len[j];
        if (keep) {
          c->buf[j] = realloc(c->buf[j], c->len[j] + keep);
          memcpy(c->buf[j] + c->len[j], tmp, keep);
          c->len[j] += keep;
        }
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(c->fd[j]);
        c->fd[j] = -1;
        maybe_finish(c);
      }
    }
    if (pfd[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
      int status;
      pid_t pid;
      while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < MAX_CHILDREN; i++)
          if (kids[i].pid == pid) {
            kids[i].exited = 1;
            kids[i].status = status;
            maybe_finish(&kids[i]);
            break;
          }
      }
    }
    if (pfd[0].revents) {
      ssize_t r = read(0, in + in_len, sizeof in - in_len);
      if (r <= 0) {
        if (r < 0 && errno == EINTR) continue;
        in_open = 0;
      } else {
        in_len += r;
        char *p = in, *nl;
        while ((nl = memchr(p, '\n', in + in_len - p))) {
          *nl = 0;
          start(p);
          p = nl + 1;
        }
        in_len -= p - in;
        memmove(in, p, in_len);
      }
    }
    out_flush();
  }
  return 0;
}
