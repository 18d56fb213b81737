/*
 * falconet spawn helper: starts the executor's command tasks so that the executor (a ~80 MB Node
 * process) never forks itself. libuv forks the whole Node address space on the event loop for each
 * child_process.spawn; this ~1 MB process uses posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK), no
 * page-table copy) and reports each task's outcome over a pipe. See docs/architecture.md.
 *
 * Driven by executor/spawner.ts over stdin (requests) and stdout (responses); stderr is the
 * executor's, for our own diagnostics only. Every frame is
 *
 *   u32 length (of what follows), u8 type, body        (integers little-endian)
 *
 * helper -> executor
 *   'H' hello:   u8 version, "falconet-spawn-helper"   (first frame; a stale binary is detected)
 *   'R' result:  u32 id, i32 exit code (-1: none), i32 signal (0: none), u8 truncated (bit 0 stdout,
 *                bit 1 stderr), u8 killed (1: a 'K' signal reached the main process while it ran;
 *                0: it ended on its own, whatever was asked after), u64 finish time (ms since the
 *                epoch, CLOCK_REALTIME, taken at the reap: the result may travel later, see 'L'),
 *                u32 n, n bytes of stdout, u32 m, m bytes of stderr
 *   'F' failed:  u32 id, i32 errno, strerror text (rest of the frame): the task did not start
 *   'P' started: u32 id, i32 pid (= its process group), u64 start time (ms since the epoch,
 *                CLOCK_REALTIME): so that the executor can kill the groups if we die, and knows when
 *                a task that waited here really started (its startedAt; its timeout runs from then).
 *                Not urgent: written with the next result, or within LAZY_MS
 *   'N' not started: u32 id: a task killed while it waited in the queue; it never ran
 *   'O' output:  u32 id, u8 what, body: live output of a task someone follows ('T'). what 0/1: bytes
 *                the task wrote to stdout/stderr (all of them, beyond the limit too); what 2: a
 *                snapshot begins, u32 bytes written and not kept (beyond the limit), followed by
 *                what is kept of stdout and of stderr as 'O' 0 and 1 frames; what 3: u32 bytes
 *                not sent because the executor was reading too slowly
 * executor -> helper
 *   'S' spawn:   u32 id, u32 flags (1: stdin given, 2: cwd given, 4: limited), u32 output limit,
 *                u32 argc, u32 envc, [cwd], argv..., env ("K=V")..., [stdin]
 *                                                          each string: u32 n, n bytes
 *   'K' kill:    u32 id, i32 signal      (to the task's process group; ignored once it was reaped;
 *                a task still waiting in the queue is dropped instead and reported 'N')
 *   'L' limit:   u32 n, u32 hold: at most n limited tasks run at once (initially: no limit); the
 *                results of limited tasks may wait here up to `hold` ms (initially 0: none) while
 *                tasks wait in the queue (see "Batches" below)
 *   'T' tail:    u32 id, u8 on: start (with a snapshot) or stop sending the task's output as 'O'
 *                frames; ignored for an id that is not in use. Costs nothing for tasks not followed
 *
 * The queue: a limited spawn request that finds n limited tasks running (or others waiting) waits
 * here, in arrival order. Each time a limited task's main process is reaped, the oldest waiting
 * requests start (up to the limit) before that task's result is written: the next task starts
 * without a round trip through the executor, which is most of the gap between the executor and a
 * C spawn loop. Unlimited tasks (the executor's own side work) start at once and are not counted.
 *
 * Batches: while limited tasks wait in the queue, the executor does not need a result to keep
 * the slots busy (the next task starts here), so the results of limited tasks are held and sent
 * together: when the queue has drained to half of its height since the last send (the other half
 * covers the executor's round trip for more), when it is empty, or after `hold` ms at the latest.
 * Each result sent alone costs a wakeup of the executor, a frame to the dispatcher, a store
 * commit and a frame to the client: at ~1 ms per command that was most of the CPU per task.
 * Anything else ('F', 'N', the hello, an unlimited task's result) is sent at once, with what is
 * held. A result carries its own finish time, so holding it changes no timing the task reports.
 *
 * Ids are chosen by the executor, small and reused only after their 'R' or 'F' (we index by them).
 * A task is reported once its main process is reaped and its stdout and stderr are both at EOF.
 * When the main process exits, its process group is SIGKILLed (before the reap, so the id cannot
 * have been reused): leftover background children would otherwise hold the pipes open.
 * When stdin closes (the executor is gone) every group still running is SIGKILLed and we exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VERSION 4
#define MAGIC "falconet-spawn-helper"
#define MAX_FRAME (1u << 30) /* a sanity bound, far above any task the dispatcher accepts */
#define MAX_ID (1u << 26)
/* 'P' frames wait this long for a result to travel with: a wakeup of the executor per task
 * start would cost more than the rest of the task's traffic */
#define LAZY_MS 50
/* followed output waits in our response buffer up to this much; beyond, it is counted as lost */
#define TAIL_MAX_BUFFERED (4u << 20)
/* epoll tags: low 2 bits say which fd of a task (0 stdout, 1 stderr, 2 stdin), or a control fd */
#define TAG_CTL 3u
#define CTL_IN 0u
#define CTL_OUT 1u
#define CTL_SIG 2u

struct buf {
  char *p;
  size_t len, cap;
};

struct task {
  int used;
  pid_t pid;
  int reaped, status;
  int fd[3]; /* stdout, stderr (read ends), stdin (write end); -1 when closed */
  struct buf cap[2];
  uint8_t truncated;
  size_t limit;
  uint64_t seen[2]; /* bytes read from stdout, stderr (kept or not) */
  int tail;         /* someone follows its output: 'O' frames as it comes */
  uint64_t tail_lost; /* followed output not sent: the executor was too far behind */
  char *in;
  size_t in_len, in_off;
  int limited; /* counted against the limit while it runs (until reaped) */
  int holdable; /* was limited: its result may be held (see Batches) */
  int signalled; /* a 'K' signal reached the main process before it exited */
  uint64_t finished_ms; /* realtime ms at the reap */
  /* while waiting in the queue: its request (a copy, with a spare byte) and its neighbours */
  int queued;
  char *req;
  size_t req_len;
  uint32_t qprev, qnext;
};

#define NONE UINT32_MAX

static struct task *tasks;
static size_t ntasks;
static int ep, devnull;
static struct buf inbuf, outbuf;
/* results held for a batch (see Batches): appended to outbuf when they go */
static struct buf heldbuf;
static int out_blocked;
/* set when a task was reaped outside reap(): its SIGCHLD is pending and would cost a wakeup */
static int reaped_inline;
/* whether the response buffer holds a frame the executor waits for ('R', 'F', 'H') */
static int urgent;
/* when the oldest unsent lazy frame was queued (ms, monotonic), or -1 */
static long long lazy_since = -1;
/* the limit on limited tasks running at once, how many run, and the queue of those waiting */
static uint32_t limit = UINT32_MAX, active;
static uint32_t qhead = NONE, qtail = NONE;
/* Batches: how long results may be held (ms; 0: never), how many are, since when (monotonic ms),
 * how many tasks wait in the queue, and the most that waited since the last send */
static uint32_t hold_ms;
static uint32_t held;
static long long held_since;
static uint32_t qlen, qpeak;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* pid -> task id: open addressing, linear probing, deletion by backward shift */
static struct slot {
  pid_t pid;
  uint32_t id;
} *pids;
static size_t pids_cap, pids_len;

static void die(const char *what) {
  fprintf(stderr, "falconet-spawn-helper: %s: %s\n", what, strerror(errno));
  exit(70);
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) die("out of memory");
  return q;
}

static void buf_reserve(struct buf *b, size_t more) {
  if (b->cap - b->len >= more) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < more) cap *= 2;
  b->p = xrealloc(b->p, cap);
  b->cap = cap;
}

static void buf_put(struct buf *b, const void *p, size_t n) {
  buf_reserve(b, n);
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void put_u32(struct buf *b, uint32_t v) {
  uint8_t x[4] = {v & 255, (v >> 8) & 255, (v >> 16) & 255, v >> 24};
  buf_put(b, x, 4);
}

static uint32_t get_u32(const char *p) {
  const uint8_t *u = (const uint8_t *)p;
  return u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

static size_t pid_home(pid_t pid) { return ((uint32_t)pid * 2654435761u) & (pids_cap - 1); }

static void pid_put(pid_t pid, uint32_t id);

static void pid_grow(void) {
  struct slot *old = pids;
  size_t n = pids_cap;
  pids_cap = n ? n * 2 : 64;
  pids = calloc(pids_cap, sizeof *pids);
  if (!pids) die("out of memory");
  pids_len = 0;
  for (size_t i = 0; i < n; i++)
    if (old[i].pid) pid_put(old[i].pid, old[i].id);
  free(old);
}

static void pid_put(pid_t pid, uint32_t id) {
  if (2 * (pids_len + 1) > pids_cap) pid_grow();
  size_t i = pid_home(pid);
  while (pids[i].pid) i = (i + 1) & (pids_cap - 1);
  pids[i] = (struct slot){pid, id};
  pids_len++;
}

static long pid_find(pid_t pid) {
  if (!pids_cap) return -1;
  for (size_t i = pid_home(pid); pids[i].pid; i = (i + 1) & (pids_cap - 1))
    if (pids[i].pid == pid) return (long)i;
  return -1;
}

static void pid_del(size_t i) {
  pids[i].pid = 0;
  pids_len--;
  for (size_t j = (i + 1) & (pids_cap - 1); pids[j].pid; j = (j + 1) & (pids_cap - 1)) {
    size_t h = pid_home(pids[j].pid);
    /* move j back into the hole at i unless its home lies cyclically in (i, j] */
    if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
      pids[i] = pids[j];
      pids[j].pid = 0;
      i = j;
    }
  }
}

/* SIGKILLs the group of every task that runs (not those waiting: they have no pid, and kill(-0)
 * would be our own group). */
static void kill_all(void) {
  for (size_t i = 0; i < ntasks; i++)
    if (tasks[i].used && !tasks[i].queued && !tasks[i].reaped && tasks[i].pid > 0) kill(-tasks[i].pid, SIGKILL);
}

/* Writes what we can of the response buffer; the rest waits for EPOLLOUT. */
static void flush_out(void) {
  size_t off = 0;
  while (off < outbuf.len) {
    ssize_t w = write(1, outbuf.p + off, outbuf.len - off);
    if (w > 0) {
      off += (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      break;
    } else {
      /* EPIPE: the executor is gone; its tasks go with it */
      kill_all();
      exit(0);
    }
  }
  memmove(outbuf.p, outbuf.p + off, outbuf.len - off);
  outbuf.len -= off;
  int want = outbuf.len > 0;
  if (want != out_blocked) {
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = CTL_OUT << 2 | TAG_CTL};
    if (epoll_ctl(ep, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, 1, &ev) < 0) die("epoll_ctl stdout");
    out_blocked = want;
  }
}

static void frame_head(uint32_t len, char type) {
  if (type != 'P') urgent = 1;
  else if (lazy_since < 0) lazy_since = now_ms();
  put_u32(&outbuf, len + 1);
  buf_put(&outbuf, &type, 1);
}

/* The head of a result, in the buffer its body goes to: held for a batch (see Batches) while
 * tasks wait in the queue and a hold is allowed, else urgent. */
static struct buf *result_head(uint32_t len, int holdable) {
  if (!holdable || !hold_ms || !qlen) {
    frame_head(len, 'R');
    return &outbuf;
  }
  if (!held++) held_since = now_ms();
  char type = 'R';
  put_u32(&heldbuf, len + 1);
  buf_put(&heldbuf, &type, 1);
  return &heldbuf;
}

static void report_failure(uint32_t id, int err) {
  const char *msg = strerror(err);
  size_t n = strlen(msg);
  frame_head(8 + n, 'F');
  put_u32(&outbuf, id);
  put_u32(&outbuf, (uint32_t)err);
  buf_put(&outbuf, msg, n);
}

static void put_output(uint32_t id, uint8_t what, const char *p, size_t n) {
  frame_head(5 + n, 'O');
  put_u32(&outbuf, id);
  buf_put(&outbuf, &what, 1);
  buf_put(&outbuf, p, n);
}

/* Live output of a followed task, unless the executor is that far behind reading us: then it is
 * counted and said ('O' 3) with the next piece that fits, never held without bound. */
static void follow_output(struct task *t, uint32_t id, uint8_t what, const char *p, size_t n) {
  if (outbuf.len + n > TAIL_MAX_BUFFERED) {
    t->tail_lost += n;
    return;
  }
  if (t->tail_lost) {
    uint32_t v = t->tail_lost > UINT32_MAX ? UINT32_MAX : (uint32_t)t->tail_lost;
    char lost[4] = {(char)(v & 255), (char)((v >> 8) & 255), (char)((v >> 16) & 255), (char)(v >> 24)};
    put_output(id, 3, lost, 4);
    t->tail_lost = 0;
  }
  put_output(id, what, p, n);
}

static void close_fd(struct task *t, int j) {
  if (t->fd[j] < 0) return;
  close(t->fd[j]); /* also leaves the epoll set: only we hold this end */
  t->fd[j] = -1;
  if (j == 2) {
    free(t->in);
    t->in = NULL;
  }
}

static void maybe_finish(uint32_t id) {
  struct task *t = &tasks[id];
  if (!t->reaped || t->fd[0] >= 0 || t->fd[1] >= 0) return;
  close_fd(t, 2);
  int code = WIFEXITED(t->status) ? WEXITSTATUS(t->status) : -1;
  int sig = WIFSIGNALED(t->status) ? WTERMSIG(t->status) : 0;
  struct buf *o = result_head(4 + 4 + 4 + 1 + 1 + 8 + 4 + t->cap[0].len + 4 + t->cap[1].len, t->holdable);
  put_u32(o, id);
  put_u32(o, (uint32_t)code);
  put_u32(o, (uint32_t)sig);
  buf_put(o, &t->truncated, 1);
  uint8_t killed = (uint8_t)t->signalled;
  buf_put(o, &killed, 1);
  put_u32(o, (uint32_t)t->finished_ms);
  put_u32(o, (uint32_t)(t->finished_ms >> 32));
  for (int j = 0; j < 2; j++) {
    put_u32(o, (uint32_t)t->cap[j].len);
    buf_put(o, t->cap[j].p, t->cap[j].len);
    free(t->cap[j].p);
  }
  *t = (struct task){.fd = {-1, -1, -1}, .qprev = NONE, .qnext = NONE};
}

static void watch(int fd, uint32_t events, uint32_t id, uint32_t which) {
  struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)id << 2 | which};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

/* Feeds the task's stdin as far as the pipe takes it; closes it when done or unwanted (EPIPE). */
static void feed_stdin(struct task *t) {
  while (t->in_off < t->in_len) {
    ssize_t w = write(t->fd[2], t->in + t->in_off, t->in_len - t->in_off);
    if (w > 0) t->in_off += (size_t)w;
    else if (w < 0 && errno == EINTR) continue;
    else if (w < 0 && errno == EAGAIN) return;
    else break; /* EPIPE: the task does not read its input */
  }
  close_fd(t, 2);
}

/* Reads one of the task's output pipes: keeps up to the limit, counts the rest as truncated. */
static void drain_output(uint32_t id, int j) {
  static char tmp[65536];
  struct task *t = &tasks[id];
  for (int round = 0; round < 16; round++) {
    ssize_t r = read(t->fd[j], tmp, sizeof tmp);
    if (r > 0) {
      t->seen[j] += (uint64_t)r;
      if (t->tail) follow_output(t, id, (uint8_t)j, tmp, (size_t)r);
      struct buf *b = &t->cap[j];
      size_t room = t->limit - b->len;
      size_t keep = (size_t)r < room ? (size_t)r : room;
      if (keep) buf_put(b, tmp, keep);
      if ((size_t)r > keep) t->truncated |= 1u << j;
      if ((size_t)r < sizeof tmp) return;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r < 0 && errno == EAGAIN) {
      return;
    } else {
      close_fd(t, j);
      return;
    }
  }
}

static void start_queued(void);
static void protocol_error(const char *what);
static uint64_t realtime_ms(void);

/* Reaps the task's main process if it has exited: SIGKILLs what is left of its group first, while
 * the zombie still holds the pid (= the group id), so the id cannot have been reused. */
static int reap_task(uint32_t id, int nohang) {
  struct task *t = &tasks[id];
  siginfo_t info;
  info.si_pid = 0;
  while (waitid(P_PID, (id_t)t->pid, &info, WEXITED | WNOWAIT | (nohang ? WNOHANG : 0)) < 0)
    if (errno != EINTR) return 0;
  if (info.si_pid != t->pid) return 0;
  kill(-t->pid, SIGKILL);
  int status;
  while (waitpid(t->pid, &status, 0) < 0)
    if (errno != EINTR) return 0;
  long slot = pid_find(t->pid);
  if (slot >= 0) pid_del((size_t)slot);
  t->reaped = 1;
  t->status = status;
  t->finished_ms = realtime_ms();
  close_fd(t, 2);
  if (t->limited) {
    t->limited = 0;
    active--;
    /* its slot is free: the next task starts now, before this one's result is even written (the
     * tasks array is not reallocated here: ids are allocated when a request arrives) */
    start_queued();
  }
  return 1;
}

/* Moves a task on as far as it goes now, and reports it when done. The three events that end a
 * task (EOF on stdout, on stderr, the exit) come together: handling all of them on the first one
 * saves the helper two wakeups per task, which is most of its latency. */
static void progress(uint32_t id) {
  struct task *t = &tasks[id];
  for (int j = 0; j < 2; j++)
    if (t->fd[j] >= 0) drain_output(id, j);
  if (!t->reaped && t->fd[0] < 0 && t->fd[1] < 0) reaped_inline |= reap_task(id, 1);
  maybe_finish(id);
}

/* Looks for an executable `file` on PATH as execvp would, with the task's PATH (as Node does). */
static int search_path(const char *file, char **env, char **out) {
  const char *path = "/usr/bin:/bin";
  for (char **e = env; *e; e++)
    if (!strncmp(*e, "PATH=", 5)) path = *e + 5;
  size_t flen = strlen(file);
  int err = ENOENT;
  for (const char *p = path;; p++) {
    const char *end = strchrnul(p, ':');
    size_t dlen = (size_t)(end - p);
    char *cand = xrealloc(NULL, dlen + flen + 3);
    if (dlen) {
      memcpy(cand, p, dlen);
      cand[dlen] = '/';
      memcpy(cand + dlen + 1, file, flen + 1);
    } else {
      memcpy(cand, "./", 2);
      memcpy(cand + 2, file, flen + 1);
    }
    struct stat st;
    if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(cand, X_OK) == 0) {
        *out = cand;
        return 0;
      }
      err = EACCES;
    }
    free(cand);
    if (!*end) return err;
    p = end;
  }
}

static uint64_t realtime_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Checks the layout of an 'S' body (after its fixed 20 bytes: the strings) without touching it.
 * Returns 0, or -1 on a malformed request. */
static int check_spawn(const char *body, size_t len) {
  if (len < 20) return -1;
  uint32_t id = get_u32(body), flags = get_u32(body + 4);
  uint32_t argc = get_u32(body + 12), envc = get_u32(body + 16);
  if (id >= MAX_ID || argc == 0 || argc > len || envc > len || (flags & ~7u)) return -1;
  size_t nstr = (size_t)argc + envc + !!(flags & 1) + !!(flags & 2);
  size_t off = 20;
  for (size_t i = 0; i < nstr; i++) {
    if (len - off < 4) return -1;
    uint32_t n = get_u32(body + off);
    if (len - off - 4 < n) return -1;
    off += 4 + n;
  }
  return off == len ? 0 : -1;
}

/* Starts the task of a checked 'S' body; tasks[id] must be unused. body[len] must be writable:
 * the strings are NUL-terminated in place (each length prefix's last byte makes room for the
 * previous string's NUL, and that spare byte for the last one). A failure is reported 'F'. */
static void start_task(char *body, size_t len) {
  uint32_t id = get_u32(body), flags = get_u32(body + 4), limit_bytes = get_u32(body + 8);
  uint32_t argc = get_u32(body + 12), envc = get_u32(body + 16);
  size_t nstr = (size_t)argc + envc + !!(flags & 1) + !!(flags & 2);
  char **strs = xrealloc(NULL, (nstr + 2) * sizeof *strs);
  size_t *lens = xrealloc(NULL, nstr * sizeof *lens);
  size_t off = 20;
  for (size_t i = 0; i < nstr; i++) {
    uint32_t n = get_u32(body + off);
    strs[i] = body + off + 4;
    lens[i] = n;
    off += 4 + n;
  }
  for (size_t i = 0; i < nstr; i++) strs[i][lens[i]] = 0;
  char *cwd = flags & 2 ? strs[0] : NULL;
  const char *stdin_data = flags & 1 ? strs[nstr - 1] : NULL;
  size_t stdin_len = flags & 1 ? lens[nstr - 1] : 0;
  free(lens);
  char **argv = strs + !!(flags & 2);
  char **env = argv + argc + 1;
  /* argv and env must be NULL-terminated arrays: shift env up by one to make room */
  memmove(env, argv + argc, envc * sizeof *env);
  argv[argc] = NULL;
  env[envc] = NULL;
  (void)len;

  struct task *t = &tasks[id];
  int out[2] = {-1, -1}, errp[2] = {-1, -1}, in[2] = {-1, -1};
  int err = 0;
  char *resolved = NULL;
  const char *file = argv[0];
  if (!strchr(file, '/')) {
    err = search_path(file, env, &resolved);
    file = resolved;
  }
  if (!err && (pipe2(out, O_CLOEXEC) || pipe2(errp, O_CLOEXEC) || (stdin_data && pipe2(in, O_CLOEXEC)))) err = errno;
  pid_t pid = 0;
  if (!err) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, stdin_data ? in[0] : devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    if (cwd) posix_spawn_file_actions_addchdir_np(&fa, cwd);
    posix_spawnattr_init(&at);
    posix_spawnattr_setpgroup(&at, 0); /* a group of its own: a timeout kills the whole tree */
    posix_spawnattr_setsigmask(&at, &none); /* we block SIGCHLD; the task must not inherit that */
    posix_spawnattr_setsigdefault(&at, &all); /* nor our ignored SIGPIPE */
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    /* EAGAIN (a process limit) is reported like any other failure: the task did not start, and
     * retrying here would only hold up the tasks behind it */
    err = posix_spawn(&pid, file, &fa, &at, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
  }
  free(resolved);
  int child_ends[3] = {out[1], errp[1], in[0]};
  for (int j = 0; j < 3; j++)
    if (child_ends[j] >= 0) close(child_ends[j]);
  if (err) {
    int ours[3] = {out[0], errp[0], in[1]};
    for (int j = 0; j < 3; j++)
      if (ours[j] >= 0) close(ours[j]);
    free(strs);
    report_failure(id, err);
    return;
  }
  *t = (struct task){.used = 1, .pid = pid, .fd = {out[0], errp[0], in[1]}, .limit = limit_bytes, .limited = !!(flags & 4), .holdable = !!(flags & 4), .qprev = NONE, .qnext = NONE};
  if (t->limited) active++;
  pid_put(pid, id);
  frame_head(16, 'P');
  put_u32(&outbuf, id);
  put_u32(&outbuf, (uint32_t)pid);
  uint64_t at_ms = realtime_ms();
  put_u32(&outbuf, (uint32_t)at_ms);
  put_u32(&outbuf, (uint32_t)(at_ms >> 32));
  for (int j = 0; j < 2; j++) {
    fcntl(t->fd[j], F_SETFL, O_NONBLOCK); /* our end only: the task's end stays blocking */
    watch(t->fd[j], EPOLLIN, id, (uint32_t)j);
  }
  if (stdin_data) {
    fcntl(t->fd[2], F_SETFL, O_NONBLOCK);
    t->in_len = stdin_len;
    t->in = xrealloc(NULL, stdin_len);
    memcpy(t->in, stdin_data, stdin_len);
    feed_stdin(t);
    if (t->fd[2] >= 0) watch(t->fd[2], EPOLLOUT, id, 2);
  }
  free(strs);
}

static void unqueue(uint32_t id) {
  struct task *t = &tasks[id];
  if (t->qprev != NONE) tasks[t->qprev].qnext = t->qnext;
  else qhead = t->qnext;
  if (t->qnext != NONE) tasks[t->qnext].qprev = t->qprev;
  else qtail = t->qprev;
  t->qprev = t->qnext = NONE;
  qlen--;
}

/* Starts waiting tasks, oldest first, while the limit allows. */
static void start_queued(void) {
  while (qhead != NONE && active < limit) {
    uint32_t id = qhead;
    unqueue(id);
    char *req = tasks[id].req;
    size_t req_len = tasks[id].req_len;
    int tail = tasks[id].tail;
    tasks[id] = (struct task){.fd = {-1, -1, -1}, .qprev = NONE, .qnext = NONE};
    start_task(req, req_len);
    if (tasks[id].used) tasks[id].tail = tail;
    free(req);
  }
}

/* Handles one 'S' request; body points past the type byte, and body[len] is writable. Returns 0,
 * or -1 on a malformed frame. */
static int spawn_request(char *body, size_t len) {
  if (check_spawn(body, len) < 0) return -1;
  uint32_t id = get_u32(body), flags = get_u32(body + 4);
  if (id >= ntasks) {
    size_t n = ntasks ? ntasks : 64;
    while (n <= id) n *= 2;
    tasks = xrealloc(tasks, n * sizeof *tasks);
    for (size_t i = ntasks; i < n; i++) tasks[i] = (struct task){.fd = {-1, -1, -1}, .qprev = NONE, .qnext = NONE};
    ntasks = n;
  }
  if (tasks[id].used) return -1;
  if (!(flags & 4) || (qhead == NONE && active < limit)) {
    start_task(body, len);
    return 0;
  }
  /* wait: keep a copy of the request (the input buffer is reused), with the spare byte */
  struct task *t = &tasks[id];
  *t = (struct task){.used = 1, .queued = 1, .fd = {-1, -1, -1}, .qprev = qtail, .qnext = NONE};
  t->req = xrealloc(NULL, len + 1);
  memcpy(t->req, body, len);
  t->req_len = len;
  if (qtail != NONE) tasks[qtail].qnext = id;
  else qhead = id;
  qtail = id;
  if (++qlen > qpeak) qpeak = qlen;
  return 0;
}

static void kill_task(const char *body, size_t len) {
  if (len != 8) return;
  uint32_t id = get_u32(body);
  int sig = (int)get_u32(body + 4);
  if (id >= ntasks || !tasks[id].used) return;
  struct task *t = &tasks[id];
  if (t->queued) {
    /* never started: drop it, whatever the signal */
    unqueue(id);
    free(t->req);
    *t = (struct task){.fd = {-1, -1, -1}, .qprev = NONE, .qnext = NONE};
    frame_head(4, 'N');
    put_u32(&outbuf, id);
    return;
  }
  /* once reaped, the group was already SIGKILLed and its id may be free for reuse */
  if (t->reaped) return;
  /* whether the signal reaches a running main process, or one that already ended on its own (a
   * zombie not reaped yet): only the first makes the task's end the kill's doing */
  siginfo_t info;
  info.si_pid = 0;
  int ended = waitid(P_PID, (id_t)t->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == t->pid;
  if (kill(-t->pid, sig) == 0 && !ended) t->signalled = 1;
}

/* 'T': follow a task's output (a snapshot of what is kept, then every read) or stop. */
static void tail_request(const char *body, size_t len) {
  if (len != 5) protocol_error("malformed tail request");
  uint32_t id = get_u32(body);
  if (id >= ntasks || !tasks[id].used) return;
  struct task *t = &tasks[id];
  t->tail = body[4] != 0;
  if (!t->tail) return;
  uint64_t n = t->seen[0] - t->cap[0].len + t->seen[1] - t->cap[1].len + t->tail_lost;
  uint32_t v = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
  char lost[4] = {(char)(v & 255), (char)((v >> 8) & 255), (char)((v >> 16) & 255), (char)(v >> 24)};
  t->tail_lost = 0;
  put_output(id, 2, lost, 4);
  for (int j = 0; j < 2; j++)
    if (t->cap[j].len) put_output(id, (uint8_t)j, t->cap[j].p, t->cap[j].len);
}

static void limit_request(const char *body, size_t len) {
  if (len != 8) protocol_error("malformed limit request");
  limit = get_u32(body);
  hold_ms = get_u32(body + 4);
  start_queued();
}

/* Whether the held results go now (see Batches): with anything urgent too, as the write is made
 * anyway. Lazy 'P' frames alone do not take them (they go ahead, in their own write). */
static int held_due(void) {
  if (!held) return 0;
  if (urgent || !hold_ms || qlen == 0 || 2 * qlen <= qpeak) return 1;
  return now_ms() - held_since >= hold_ms;
}

static void protocol_error(const char *what) {
  fprintf(stderr, "falconet-spawn-helper: protocol error: %s\n", what);
  kill_all();
  exit(65);
}

/* Reads requests; returns 0 at EOF (the executor closed our stdin or died). */
static int read_requests(void) {
  for (;;) {
    buf_reserve(&inbuf, 65536 + 1);
    ssize_t r = read(0, inbuf.p + inbuf.len, inbuf.cap - inbuf.len - 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) break;
    if (r <= 0) return 0;
    inbuf.len += (size_t)r;
    if ((size_t)r < 65536) break;
  }
  size_t off = 0;
  while (inbuf.len - off >= 5) {
    uint32_t n = get_u32(inbuf.p + off);
    if (n == 0 || n > MAX_FRAME) protocol_error("bad frame length");
    if (inbuf.len - off - 4 < n) {
      buf_reserve(&inbuf, (size_t)n + 4 + 1); /* the whole frame, and the spare byte */
      break;
    }
    char type = inbuf.p[off + 4];
    char *body = inbuf.p + off + 5;
    /* the byte after the frame may take the last string's NUL: save and restore it */
    char after = inbuf.p[off + 4 + n];
    if (type == 'S') {
      if (spawn_request(body, n - 1) < 0) protocol_error("malformed spawn request");
    } else if (type == 'K') {
      kill_task(body, n - 1);
    } else if (type == 'L') {
      limit_request(body, n - 1);
    } else if (type == 'T') {
      tail_request(body, n - 1);
    } else {
      protocol_error("unknown request type");
    }
    inbuf.p[off + 4 + n] = after;
    off += 4 + (size_t)n;
  }
  memmove(inbuf.p, inbuf.p + off, inbuf.len - off);
  inbuf.len -= off;
  return 1;
}

static void reap(int sfd) {
  struct signalfd_siginfo si;
  while (read(sfd, &si, sizeof si) > 0) {
  }
  for (;;) {
    siginfo_t info;
    info.si_pid = 0;
    /* WNOWAIT: see who exited without reaping it (reap_task kills its group first) */
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0) {
      if (errno == EINTR) continue;
      return; /* ECHILD */
    }
    if (info.si_pid == 0) return;
    long slot = pid_find(info.si_pid);
    if (slot < 0) { /* not a task of ours: cannot happen, but never leave a zombie */
      int status;
      waitpid(info.si_pid, &status, 0);
      continue;
    }
    uint32_t id = pids[slot].id;
    if (reap_task(id, 0)) progress(id);
  }
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0) die("sigprocmask");
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");
  /* each task holds 2-3 descriptors here: use all the descriptors we may */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (devnull < 0 || ep < 0) die("setup");
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_NONBLOCK);
  fcntl(0, F_SETFD, FD_CLOEXEC);
  fcntl(1, F_SETFD, FD_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = CTL_IN << 2 | TAG_CTL};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) die("epoll_ctl stdin");
  ev.data.u64 = CTL_SIG << 2 | TAG_CTL;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) < 0) die("epoll_ctl signalfd");

  frame_head(1 + strlen(MAGIC), 'H');
  uint8_t v = VERSION;
  buf_put(&outbuf, &v, 1);
  buf_put(&outbuf, MAGIC, strlen(MAGIC));
  flush_out();
  urgent = 0;

  struct epoll_event evs[256];
  for (;;) {
    /* lazy or held frames only: wake up when they are due, to send them anyway */
    int timeout = -1;
    if ((outbuf.len && lazy_since >= 0 && !out_blocked) || held) {
      long long due = held ? held_since + hold_ms : lazy_since + LAZY_MS;
      if (held && lazy_since >= 0 && lazy_since + LAZY_MS < due) due = lazy_since + LAZY_MS;
      long long left = due - now_ms();
      timeout = left > 0 ? (int)left : 0;
    }
    int n = epoll_wait(ep, evs, 256, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    int alive = 1;
    for (int k = 0; k < n; k++) {
      uint64_t tag = evs[k].data.u64;
      uint32_t which = tag & 3, id = (uint32_t)(tag >> 2);
      if (which == TAG_CTL) {
        if (id == CTL_IN) alive = read_requests();
        else if (id == CTL_SIG) reap(sfd);
        /* CTL_OUT: flush_out below */
      } else if (which == 2) {
        if (tasks[id].used && tasks[id].fd[2] >= 0) feed_stdin(&tasks[id]);
      } else if (tasks[id].used && tasks[id].fd[which] >= 0) {
        progress(id);
      }
    }
    if (reaped_inline) {
      /* drains the signalfd, then reaps whatever else exited: a drained SIGCHLD may have been
       * another child's too */
      reaped_inline = 0;
      reap(sfd);
    }
    if (!alive) {
      kill_all();
      return 0;
    }
    int release = held_due();
    if (release) {
      buf_put(&outbuf, heldbuf.p, heldbuf.len);
      heldbuf.len = 0;
      held = 0;
      qpeak = qlen; /* the next batch waits until the queue drains to half of what is there now */
    }
    if (urgent || out_blocked || release || (lazy_since >= 0 && now_ms() - lazy_since >= LAZY_MS)) {
      flush_out();
      urgent = 0;
      lazy_since = outbuf.len ? lazy_since : -1;
    }
  }
}
