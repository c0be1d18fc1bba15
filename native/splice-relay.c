/*
 * splice-relay: moves bytes between two connected stream sockets on a native thread (Linux splice(2)
 * through a pipe per direction, or read/write through one buffer while few tunnels are busy: see pump()),
 * so a plain TCP or unix tunnel costs no copies into JavaScript. Two background threads, each with its own
 * epoll set, serve the spliced tunnels: one the busy ones, a capped visit per busy direction at a time (see
 * VISIT_BYTES), the other those that move little, so a ping never waits behind bulk (see relay_thread).
 * They only ever see sockets whose Node handles stopped reading and have no pending writes; when a tunnel finishes (both directions ended), fails, or is stopped, the thread
 * forgets the file descriptors and tells JavaScript, which then destroys the sockets (closing the fds).
 * JavaScript must not close a tunnel's fds before that final event: the thread may still use them.
 *
 * This is an optimisation with a pure-JavaScript fallback: the relay works without it.
 *
 * JS API (every argument is checked; a bad one throws a TypeError/RangeError and changes nothing):
 *   init(onEvent, budgetPages?, copy?) budgetPages: the pipe page budget to size pipes against (0 or
 *                                     absent: none; see PIPE_BYTES). copy: true or absent = copy mode,
 *                                     false = zero-copy splicing (see pump()); later calls may change it. onEvent(id, kind, dir, errno): kind 0 = half (direction `dir` ended,
 *                                     its write side shut), 1 = done, 2 = error, 3 = stopped. Exactly one
 *                                     of 1/2/3 (the final event) arrives per started tunnel, always.
 *   start(id, fdA, fdB, counters)     counters: BigUint64Array(2) receiving bytes moved A→B and B→A; fdA
 *                                     and fdB: two distinct connected stream sockets
 *   stop(id)                          asks for the final event `stopped` (no-op when id is unknown/finished)
 *   ref(on)                           keep the event loop alive while tunnels are spliced
 *   spin(micros)                      LIGHT's longest spin before it sleeps, 0..SPIN_MAX_MICROS (0: never;
 *                                     see wait_events())
 *   stats()                           { pagesUsed, budgetPages, grown, pipeless, light, spinNs } (see js_stats)
 *   _faults(mask)                     test hook (see FAULT_*); the relay never calls it
 *
 * Memory: everything an event or a command needs lives in the tunnel itself (allocated by start(), which
 * fails cleanly when it cannot), so no event or stop ever depends on an allocation that could fail. A
 * tunnel is freed when its final event has been delivered (or Node tore the event callback down at exit)
 * and no stop command for it is still queued (a reference count, as those happen on different threads).
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sched.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Pipe capacity asked for, and bytes asked of one splice into a pipe. 256 KiB moves about twice the bytes
   per system call of the kernel's default 64 KiB. An unprivileged user (no CAP_SYS_RESOURCE) has a pipe
   page budget (fs.pipe-user-pages-soft, 16,384 pages = 64 MiB by default) shared by all its pipes: 128
   tunnels at 256 KiB use it all, after which the kernel hands out 8 KiB pipes, which splice slower than
   JavaScript copies. So with a budget (init's second argument, in pages; 0 = none) a tunnel's pipes start
   at the kernel's default 64 KiB and grow to 256 KiB only while this addon's pipes stay within half the
   budget (the other half keeps room for 64 KiB pipes of new tunnels: 64 + 256 tunnels in 64 MiB); a pipe
   that is full tries to grow again once another tunnel has freed pages. A direction that cannot have a
   pipe of at least 64 KiB (the budget is spent, or pipe2 fails: no fds left) runs without one: it always
   copies, peeking at its source so that what the destination does not take stays in the source socket
   (see pump_peek()); so every tunnel stays on the kernel path, whatever the budget. */
#define PIPE_BYTES (256 * 1024)
#define PIPE_MIN_BYTES (64 * 1024)
/* Bytes one direction may read per visit before the thread turns to other tunnels. Without a cap a busy
   direction ran until its source was empty, which at 2 GB/s and several MiB queued per socket kept a quiet
   tunnel waiting a whole sweep over the busy ones (64 busy tunnels: ping p50 0.3-0.4 s in copy mode). A
   direction that used its visit goes to the back of the ready list (edge-triggered epoll will not report
   it again), and each pass of the loop serves at most READY_SLICE of those before it polls for new
   events, so a quiet tunnel waits for about READY_SLICE visits (256 KiB, ~0.1 ms), not for every busy
   tunnel. A visit is one read in copy mode (socat's reads averaged ~130 KiB on the same transfer). */
#define VISIT_BYTES (128 * 1024)
/* While few directions are heavy (COPY_MAX_HEAVY) nobody waits long behind a visit: twice as much per
   visit, read at once, halves the loop passes of a lone busy tunnel. */
#define VISIT_FEW_BYTES (256 * 1024)
#define READY_SLICE 2
/* A direction whose last visit read at least this much is heavy: its next epoll event only queues it on
   the ready list. A light one (a quiet tunnel: pings, requests) is pumped as soon as its event arrives,
   ahead of the busy ones, much as the kernel's scheduler favours a process that mostly sleeps (each of
   socat's connections is one). So a loop pass does at most READY_SLICE visits of bulk work before it
   looks at new events again. */
#define LIGHT_BYTES (16 * 1024)
/* A tunnel on the BULK thread moves to LIGHT after this many visits in a row that moved something, all light (see
   relay_thread). */
#define LIGHT_STREAK 4
/* LIGHT's visit cap: a tunnel that turned heavy leaves LIGHT after one such visit. */
#define LIGHT_VISIT_BYTES (64 * 1024)
/* Copy mode copies only while at most this many directions are heavy (see pump()): with many busy
   tunnels the thread itself is the bottleneck, and a quiet tunnel waits less behind it when it splices
   (64 busy tunnels, copying every visit: ping p99 2.4 ms; splicing: 0.8 ms, socat 0.4). */
#define COPY_MAX_HEAVY 4
/* LIGHT's spin (wait_events()): the window starts at SPIN_GROW_START_NS once an idle spell was short, doubles
   after each short one up to the configured maximum (spin(), at most SPIN_MAX_MICROS), halves after each
   long one and is 0 below SPIN_GROW_START_NS, as Linux's guest halt-polling adapts its window. */
#define SPIN_GROW_START_NS 10000L
#define SPIN_MAX_MICROS 1000
#define EV_HALF 0
#define EV_DONE 1
#define EV_ERROR 2
#define EV_STOPPED 3

/* Test hook bits for _faults(mask). FAULT_ALLOC: every allocation the addon makes fails (the event and
   stop paths must not notice). FAULT_THREAD: init() cannot start its thread (init must release what it
   created). FAULT_IGNORE_STOP: the thread ignores stop requests (the relay's shutdown deadline). */
#define FAULT_ALLOC 1
#define FAULT_THREAD 2
#define FAULT_IGNORE_STOP 4

struct tunnel;

typedef struct event {
  struct tunnel *t;
  int kind, dir, err;
} event;

typedef struct command {
  int stop;
  struct tunnel *t;
  struct command *next;
} command;

typedef struct direction {
  struct tunnel *t;
  int idx;             /* 0 or 1: t->d[idx] is this direction */
  int ready;           /* queued on the ready list (used its visit with input left, maybe) */
  int heavy;           /* its last visit read at least LIGHT_BYTES */
  size_t moved;        /* bytes read in the current (or last) visit */
  struct direction *ready_next;
  int src, dst;
  int pipe_r, pipe_w;
  size_t in_pipe;
  size_t pipe_size;    /* capacity the kernel granted (accounted in pages_used); 0 and pipe_w < 0: no pipe */
  int dst_full;        /* without a pipe: the destination refused a write; wait for its EPOLLOUT */
  int src_tcp;         /* the source is a TCP socket (recv(MSG_TRUNC) discards without copying) */
  /* An event reported the source's end (EPOLLRDHUP), hang-up, error or urgent data (EPOLLPRI: a read stops
     short at the urgent mark with bytes left behind it). Until then a read that returns less
     than asked emptied the source's receive queue, and any byte that arrives later raises a new
     edge-triggered event (the kernel re-arms the item on every wake-up after it was reported), so the
     pump stops there instead of reading once more for EAGAIN: a system call less per visit that empties
     its socket (most ping hops, most visits of a tunnel whose sender is slower than the relay). The end
     of the stream is the exception: a FIN that came with the data may already have been reported, and
     would not be again, so once one was reported the pump reads until EAGAIN or 0 as before. */
  int src_hup;
  uint64_t grow_gen;   /* freed_gen at the last failed attempt to grow */
  int eof, done;
} direction;

/* One per socket of a tunnel, registered as that socket's epoll data: socket k is the source of direction
   k and the destination of direction !k, so its readiness names the one direction that can move. */
typedef struct side {
  struct tunnel *t;
  int k;
} side;

typedef struct tunnel {
  uint32_t id;
  direction d[2];
  side sides[2];
  uint64_t *counters;
  napi_ref counters_ref;
  int finished;         /* owner thread */
  int owner;            /* BULK or LIGHT: the thread whose epoll set holds it (or will: queued adopt); under `lock` */
  int moving;           /* on its owner's movers list */
  int light_streak;     /* BULK: visits in a row that moved something and nothing heavy */
  int pipeless;         /* counted in tunnels_pipeless */
  int stop_queued;      /* JS thread */
  int refs;             /* atomic: 1 until the final event is delivered, +1 while a stop is queued */
  command start_cmd, stop_cmd;
  event half[2], final; /* each posted at most once */
  struct tunnel *next;  /* graveyard or movers list */
  struct tunnel *js_prev, *js_next; /* JS thread: tunnels whose final event is not delivered yet */
} tunnel;

/* The relay threads. Each has its own epoll set, command queue, ready list and copy buffer, and owns the
   tunnels registered in its set (only the owner touches a tunnel's directions). BULK serves every tunnel
   that moves much; LIGHT only tunnels whose visits read little (pings, requests: see LIGHT_STREAK). With
   one thread for all, a ping waited behind the bulk visits and, on a busy machine, for the scheduler to
   give that always-busy thread its turn; LIGHT mostly sleeps, so the scheduler wakes it at once (as it
   does each of socat's per-connection processes). A tunnel moves between them at the end of a batch of
   events (move_to(), flush_moves()). */
#define BULK 0
#define LIGHT 1
typedef struct relay_thread {
  int idx;
  int epfd, wakefd;
  pthread_t tid;
  command *queue_head, *queue_tail; /* under `lock` */
  /* Tunnels finished during the current batch of epoll events. Their final events are posted once the
     batch is done: from then on the JS thread may free them, and a later event in the same batch could
     still point at one. */
  struct tunnel *graveyard;
  /* Tunnels to hand to the other thread once the batch is done (for the same reason). */
  struct tunnel *movers;
  /* Directions that used their visit (VISIT_BYTES), served in order. */
  struct direction *ready_head, *ready_tail;
  int ready_count;
  int heavy_count; /* directions of this thread's tunnels with `heavy` set */
  int moved_any;   /* the last batch moved bytes (LIGHT spins only then: see wait_events()) */
  long spin_ns;    /* LIGHT's current spin window (see wait_events()) */
  char copy_buf[VISIT_FEW_BYTES]; /* one pump at a time per thread */
} relay_thread;

static napi_threadsafe_function tsfn;
static relay_thread threads[2] = {{.idx = BULK, .epfd = -1, .wakefd = -1}, {.idx = LIGHT, .epfd = -1, .wakefd = -1}};
static int started = 0;
static int light_running = 0; /* LIGHT's thread started (else nothing moves there) */
static int faults = 0; /* written on the JS thread, read by both: a test hook, races are harmless */
/* Guards both command queues and every tunnel's `owner`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread relay_thread *self; /* the relay thread running this code */
static tunnel *js_live = NULL;
/* The pipe page budget (0: none), the pages this addon's pipes hold, and a counter bumped whenever pipes
   are closed (a pipe that could not grow tries again only after that). Atomic: both threads touch them. */
static uint64_t budget_pages = 0;
static uint64_t pages_used = 0;
static uint64_t freed_gen = 0;
static uint64_t tunnels_grown = 0;
static uint64_t tunnels_light = 0;    /* live tunnels on the LIGHT thread (see relay_thread) */
static uint64_t tunnels_pipeless = 0; /* live tunnels with a direction that has no pipe (see pump_peek()) */
/* Copy mode (init's third argument; see pump()): 1 = read/write through copy_buf, the pipe only holding
   what a destination did not take; 0 = splice(2) through the pipe, no copy in the relay. */
static int copy_mode = 1;
/* LIGHT's longest spin in ns (spin(); 0: never), the ns it spent spinning in all (stats().spinNs), and
   whether BULK is asleep in epoll_wait with nothing ready (LIGHT spins only then). Atomic. */
static long spin_max_ns = 0;
static uint64_t spin_total_ns = 0;
static int bulk_sleeping = 0;

static int fault(int bit) { return __atomic_load_n(&faults, __ATOMIC_RELAXED) & bit; }

static void *xcalloc(size_t n, size_t size) {
  if (fault(FAULT_ALLOC)) return NULL;
  return calloc(n, size);
}

/* Drops one reference (either thread); the last one frees the tunnel. */
static void release(tunnel *t) {
  if (__atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0) free(t);
}

/* ---- worker thread --------------------------------------------------------------------------------- */

/* Hands an event (embedded in its tunnel) to the JS thread. Fails only while Node tears the callback
   down (process exit); the caller then owns the tunnel again. */
static int post(event *e) {
  return napi_call_threadsafe_function(tsfn, e, napi_tsfn_blocking) == napi_ok;
}

static void close_pipes(tunnel *t) {
  int freed = 0;
  if (t->pipeless) __atomic_sub_fetch(&tunnels_pipeless, 1, __ATOMIC_RELAXED);
  t->pipeless = 0;
  for (int i = 0; i < 2; i++) {
    if (t->d[i].pipe_r >= 0) close(t->d[i].pipe_r);
    if (t->d[i].pipe_w >= 0) close(t->d[i].pipe_w);
    t->d[i].pipe_r = t->d[i].pipe_w = -1;
    if (t->d[i].pipe_size > 0) {
      __atomic_sub_fetch(&pages_used, t->d[i].pipe_size / 4096, __ATOMIC_RELAXED);
      t->d[i].pipe_size = 0;
      freed = 1;
    }
  }
  if (freed) __atomic_add_fetch(&freed_gen, 1, __ATOMIC_RELAXED);
}

/* Grows a pipe to PIPE_BYTES when there is no budget, or when this addon's pipes stay within half of it
   afterwards (see PIPE_BYTES). Returns 1 when it grew. Either thread (the pipe is the caller's alone). */
static int try_grow(direction *d) {
  if (d->pipe_size >= PIPE_BYTES || d->pipe_w < 0) return 0;
  uint64_t extra = (PIPE_BYTES - d->pipe_size) / 4096;
  uint64_t budget = __atomic_load_n(&budget_pages, __ATOMIC_RELAXED);
  if (budget > 0 && __atomic_load_n(&pages_used, __ATOMIC_RELAXED) + extra > budget / 2) return 0;
  int got = fcntl(d->pipe_w, F_SETPIPE_SZ, PIPE_BYTES);
  if (got < 0 || (size_t)got <= d->pipe_size) return 0;
  __atomic_add_fetch(&pages_used, ((size_t)got - d->pipe_size) / 4096, __ATOMIC_RELAXED);
  d->pipe_size = (size_t)got;
  return 1;
}

/* Forgets the tunnel's fds (the sockets stay open: JavaScript owns them); `kind` is reported by bury(). */
/* Takes a finishing tunnel's directions off the ready list (it is freed once buried). Linear, but a tunnel
   is on the list only while busy, and finishes once. */
static void unready(tunnel *t) {
  if (!t->d[0].ready && !t->d[1].ready) return;
  direction **p = &self->ready_head;
  self->ready_tail = NULL;
  while (*p) {
    direction *d = *p;
    if (d->t == t) {
      d->ready = 0;
      self->ready_count--;
      *p = d->ready_next;
    } else {
      self->ready_tail = d;
      p = &d->ready_next;
    }
  }
}

static void mark_ready(direction *d) {
  if (d->ready) return;
  d->ready = 1;
  self->ready_count++;
  d->ready_next = NULL;
  if (self->ready_tail) self->ready_tail->ready_next = d;
  else self->ready_head = d;
  self->ready_tail = d;
}

static void finish(tunnel *t, int kind, int err) {
  if (t->finished) return;
  t->finished = 1;
  if (self->idx == LIGHT) __atomic_sub_fetch(&tunnels_light, 1, __ATOMIC_RELAXED);
  unready(t);
  self->heavy_count -= t->d[0].heavy + t->d[1].heavy;
  t->d[0].heavy = t->d[1].heavy = 0;
  epoll_ctl(self->epfd, EPOLL_CTL_DEL, t->d[0].src, NULL);
  epoll_ctl(self->epfd, EPOLL_CTL_DEL, t->d[1].src, NULL);
  close_pipes(t);
  t->final.kind = kind;
  t->final.dir = -1;
  t->final.err = err;
  /* A mover that finished stays off the movers list's work (flush_moves() skips it); a tunnel is on at
     most one list at a time, so the graveyard takes it once it left the movers list. */
  if (!t->moving) {
    t->next = self->graveyard;
    self->graveyard = t;
  }
}

/* Posts the final event of every tunnel finished in this batch; the worker never touches them again. */
static void bury(void) {
  while (self->graveyard) {
    tunnel *t = self->graveyard;
    self->graveyard = t->next;
    /* Only at exit: nobody will read the event; the counters reference dies with the environment. */
    if (!post(&t->final)) release(t);
  }
}

/* Moves what can move now in one direction. Returns 0, or an errno that fails the tunnel.

   Two ways to move bytes, chosen per visit: copy while copy_mode is on and at most COPY_MAX_HEAVY
   directions are heavy, splice otherwise (both leave the pipe empty before reading, so a direction may
   switch between visits). Splicing costs the relay no copy, but the receiver then
   gets socket buffers built from the sender's own pages: one fragment per pipe buffer, pages written long
   before (cold in cache) and still referenced, so the sender cannot recycle its page fragments. With the
   sender and receiver in one process (whose thread is the bottleneck) that cost the client 20-40 % more
   CPU per GiB than socat's plain read/write, and the tunnel trailed socat (0.7-0.96x; copying: 0.96-1.1x). Copy mode reads
   into copy_buf and writes it to the destination as socat does (a copy each way in the relay, fresh
   large buffers for the receiver); whatever the destination does not take now goes into the pipe (a
   copy into pipe pages, at most the pipe's size, which the read was limited to) and leaves by splice
   before the next read, so a tunnel's buffered bytes stay bounded by its pipe as before. */
static int pump_peek(tunnel *t, int i, size_t visit);

static int pump(tunnel *t, int i) {
  direction *d = &t->d[i];
  d->moved = 0;
  size_t visit = self->idx == LIGHT ? LIGHT_VISIT_BYTES : self->heavy_count <= COPY_MAX_HEAVY ? VISIT_FEW_BYTES : VISIT_BYTES;
  if (d->pipe_w < 0) return pump_peek(t, i, visit);
  char *copy_buf = self->copy_buf;
  while (!d->done) {
    if (d->in_pipe > 0) {
      ssize_t m = splice(d->pipe_r, NULL, d->dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m > 0) {
        d->in_pipe -= (size_t)m;
        __atomic_add_fetch(&t->counters[i], (uint64_t)m, __ATOMIC_RELAXED);
        continue;
      }
      if (m < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
      return m < 0 ? errno : EPIPE;
    }
    if (d->eof) {
      shutdown(d->dst, SHUT_WR);
      d->done = 1;
      post(&t->half[i]);
      return 0;
    }
    if (d->moved >= visit) {
      mark_ready(d);
      return 0;
    }
    if (self->heavy_count <= COPY_MAX_HEAVY && __atomic_load_n(&copy_mode, __ATOMIC_RELAXED)) {
      size_t room = d->pipe_size < visit ? d->pipe_size : visit;
      ssize_t n = read(d->src, copy_buf, room);
      if (n > 0) {
        d->moved += (size_t)n;
        ssize_t m = write(d->dst, copy_buf, (size_t)n);
        if (m < 0) {
          if (errno != EAGAIN && errno != EINTR) return errno;
          m = 0;
        }
        if (m > 0) __atomic_add_fetch(&t->counters[i], (uint64_t)m, __ATOMIC_RELAXED);
        if (m < n) {
          /* The pipe is empty here and the read no larger than it: all of the rest fits. */
          ssize_t p = write(d->pipe_w, copy_buf + m, (size_t)(n - m));
          if (p != n - m) return p < 0 ? errno : ENOBUFS;
          d->in_pipe = (size_t)p;
        }
        /* A short read emptied the source: stop here instead of reading again for EAGAIN (see src_hup). */
        if ((size_t)n < room && !d->src_hup && d->in_pipe == 0) return 0;
        continue;
      }
      if (n == 0) {
        d->eof = 1;
        continue;
      }
      if (errno == EAGAIN || errno == EINTR) return 0;
      return errno;
    }
    ssize_t n = splice(d->src, NULL, d->pipe_w, NULL, PIPE_BYTES, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->moved += (size_t)n;
      d->in_pipe += (size_t)n;
      /* A full small pipe grows once pages were freed since its last try (a cheap check per fill). */
      if (d->in_pipe >= d->pipe_size && d->pipe_size < PIPE_BYTES) {
        uint64_t gen = __atomic_load_n(&freed_gen, __ATOMIC_RELAXED);
        if (gen != d->grow_gen) {
          d->grow_gen = gen;
          if (try_grow(d) && t->d[!i].pipe_size >= PIPE_BYTES) __atomic_add_fetch(&tunnels_grown, 1, __ATOMIC_RELAXED);
        }
      }
      continue;
    }
    if (n == 0) {
      d->eof = 1;
      continue;
    }
    if (errno == EAGAIN || errno == EINTR) return 0;
    return errno;
  }
  return 0;
}

/* pump() for a direction without a pipe (the pipe budget was spent when its tunnel started). It copies,
   whatever the mode, and keeps nothing itself: it peeks at the source (recv MSG_PEEK), writes what it saw,
   and only then consumes from the source what the destination took (for TCP by recv(MSG_TRUNC), which
   discards without a copy). What the destination refuses stays in the source socket's receive buffer,
   which is backpressure as the peer sees it anyway. One system call more per visit than with a pipe, no
   memory and no pipe pages per tunnel. After a refused write (EAGAIN, so the kernel will report EPOLLOUT
   when room frees) the direction waits for that event (dst_full) instead of peeking again at every bit of
   input. */
static int pump_peek(tunnel *t, int i, size_t visit) {
  direction *d = &t->d[i];
  char *copy_buf = self->copy_buf;
  while (!d->done) {
    if (d->eof) {
      shutdown(d->dst, SHUT_WR);
      d->done = 1;
      post(&t->half[i]);
      return 0;
    }
    if (d->dst_full) return 0;
    if (d->moved >= visit) {
      mark_ready(d);
      return 0;
    }
    size_t asked = visit - d->moved;
    ssize_t n = recv(d->src, copy_buf, asked, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) {
      d->eof = 1;
      continue;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : errno;
    }
    size_t off = 0;
    while (off < (size_t)n) {
      ssize_t m = write(d->dst, copy_buf + off, (size_t)n - off);
      if (m > 0) off += (size_t)m;
      else if (m < 0 && errno == EINTR) continue;
      else if (m < 0 && errno == EAGAIN) {
        d->dst_full = 1;
        break;
      } else return m < 0 ? errno : EPIPE;
    }
    /* Consumes exactly what went out (it is in the receive queue, which only this thread reads). */
    size_t left = off;
    while (left > 0) {
      ssize_t c = recv(d->src, copy_buf, left, MSG_DONTWAIT | (d->src_tcp ? MSG_TRUNC : 0));
      if (c > 0) left -= (size_t)c;
      else if (c < 0 && errno == EINTR) continue;
      else return c < 0 ? errno : EIO;
    }
    d->moved += off;
    if (off > 0) __atomic_add_fetch(&t->counters[i], (uint64_t)off, __ATOMIC_RELAXED);
    if ((size_t)n < asked && !d->src_hup) return 0; /* it emptied the source (see src_hup) */
  }
  return 0;
}

static void enqueue(int to, command *c);

/* Marks the tunnel to move to the other thread once this batch is done (flush_moves()); until then its
   events are skipped (the new owner pumps both directions when it adopts it). */
static void move_to(tunnel *t) {
  if (t->moving) return;
  unready(t);
  t->moving = 1;
  t->next = self->movers;
  self->movers = t;
}

/* Pumps the directions in `mask` (bit i: direction i), then finishes the tunnel when both are done.
   Then decides where the tunnel belongs: BULK hands a tunnel to LIGHT after LIGHT_STREAK visits in a row
   that moved something and were all light; LIGHT hands it back as soon as a visit is heavy. */
static void pump_dirs(tunnel *t, int mask) {
  int moved = 0, heavy_seen = 0;
  for (int i = 0; i < 2; i++) {
    if (!(mask & (1 << i))) continue;
    int err = pump(t, i);
    int heavy = t->d[i].moved >= LIGHT_BYTES;
    self->heavy_count += heavy - t->d[i].heavy;
    t->d[i].heavy = heavy;
    moved |= t->d[i].moved > 0;
    self->moved_any |= t->d[i].moved > 0;
    heavy_seen |= heavy;
    if (err) {
      finish(t, EV_ERROR, err);
      return;
    }
  }
  if (t->d[0].done && t->d[1].done) {
    finish(t, EV_DONE, 0);
    return;
  }
  if (self->idx == LIGHT) {
    if (heavy_seen) {
      t->light_streak = 0;
      move_to(t);
    }
  } else if (heavy_seen || t->d[0].heavy || t->d[1].heavy) {
    t->light_streak = 0;
  } else if (moved && ++t->light_streak >= LIGHT_STREAK && __atomic_load_n(&light_running, __ATOMIC_ACQUIRE)) {
    move_to(t);
  }
}

/* The directions an epoll event on socket k can unblock: input (or its end) moves direction k, room to
   write moves direction !k, an error or hang-up both (the failing splice reports it). Pumping only those
   saves the splice that would find nothing on the other one: on a ping-pong tunnel a quarter of the
   system calls per hop, and its latency. */
static int dirs_for(int k, uint32_t events) {
  int mask = 0;
  if (events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) mask |= 1 << k;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) mask |= 1 << !k;
  return mask;
}

/* Registers a tunnel (new, or handed over by the other thread) in this thread's epoll set and pumps both
   directions: edges that arrived while it was in no set are not reported again. */
static void adopt(tunnel *t) {
  if (self->idx == LIGHT) __atomic_add_fetch(&tunnels_light, 1, __ATOMIC_RELAXED);
  self->heavy_count += t->d[0].heavy + t->d[1].heavy;
  t->d[0].dst_full = t->d[1].dst_full = 0;
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  int err = 0;
  ev.data.ptr = &t->sides[0];
  if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, t->d[0].src, &ev) != 0) err = errno;
  ev.data.ptr = &t->sides[1];
  if (!err && epoll_ctl(self->epfd, EPOLL_CTL_ADD, t->d[1].src, &ev) != 0) err = errno;
  if (err) finish(t, EV_ERROR, err);
  else pump_dirs(t, 3);
}

/* Hands this batch's movers to the other thread (their final events, if they finished meanwhile, go to
   the graveyard). Before bury(): a finished mover is buried in this batch. */
static void flush_moves(void) {
  while (self->movers) {
    tunnel *t = self->movers;
    self->movers = t->next;
    t->moving = 0;
    if (t->finished) {
      t->next = self->graveyard;
      self->graveyard = t;
      continue;
    }
    epoll_ctl(self->epfd, EPOLL_CTL_DEL, t->d[0].src, NULL);
    epoll_ctl(self->epfd, EPOLL_CTL_DEL, t->d[1].src, NULL);
    self->heavy_count -= t->d[0].heavy + t->d[1].heavy;
    if (self->idx == LIGHT) __atomic_sub_fetch(&tunnels_light, 1, __ATOMIC_RELAXED);
    t->light_streak = 0;
    t->start_cmd.stop = 0;
    enqueue(!self->idx, &t->start_cmd);
  }
}

static void run_commands(void) {
  pthread_mutex_lock(&lock);
  command *c = self->queue_head;
  self->queue_head = self->queue_tail = NULL;
  pthread_mutex_unlock(&lock);
  while (c) {
    command *next = c->next;
    tunnel *t = c->t;
    if (c->stop) {
      /* The queued stop holds a reference, so `t` is valid even when its final event was posted (and
         delivered) meanwhile; finish() ignores a tunnel that already finished. A tunnel handed to the
         other thread after the stop was queued here: the stop follows it (only the owner changes
         `owner`, so reading our own is safe; the other thread's queue is behind the lock). */
      pthread_mutex_lock(&lock);
      int owner = t->owner;
      pthread_mutex_unlock(&lock);
      if (owner != self->idx) enqueue(-1, c);
      else {
        if (!fault(FAULT_IGNORE_STOP)) finish(t, EV_STOPPED, 0);
        release(t);
      }
    } else {
      adopt(t);
    }
    c = next;
  }
}

static long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Waits for events when nothing is ready. LIGHT first spins a while (polls without sleeping) after a
   batch that moved bytes, while BULK sleeps: on a ping-pong tunnel the answer comes back within tens of
   microseconds, and a thread that went to sleep must be woken by the kernel, which on a virtual machine
   whose idle vCPUs halt (this VM's guest halt-polling is off) cost ~60 us per wake-up: one tunnel's 64-byte
   round trip took 135-200 us through either this relay or socat, 40-60 us with the polling
   (docs/benchmarks.md, "Polling before sleeping"). What it costs is CPU: the window adapts to the gaps between batches (see
   SPIN_GROW_START_NS), so a quiet tunnel, whose gaps are long, soon spins not at all; a busy BULK thread
   stops it at once (on a small machine LIGHT would spin on the core BULK needs), and each poll yields
   the core to any other runnable thread first. Operators turn it off with relay.splice.spinMicros = 0. */
static int wait_events(struct epoll_event *events, int max_events) {
  if (self->idx == BULK) {
    __atomic_store_n(&bulk_sleeping, 1, __ATOMIC_RELAXED);
    int n = epoll_wait(self->epfd, events, max_events, -1);
    __atomic_store_n(&bulk_sleeping, 0, __ATOMIC_RELAXED);
    return n;
  }
  long max = __atomic_load_n(&spin_max_ns, __ATOMIC_RELAXED);
  if (max <= 0) {
    self->spin_ns = 0;
    return epoll_wait(self->epfd, events, max_events, -1);
  }
  if (self->spin_ns > max) self->spin_ns = max;
  long t0 = now_ns();
  if (self->moved_any && self->spin_ns > 0 && __atomic_load_n(&bulk_sleeping, __ATOMIC_RELAXED)) {
    long until = t0 + self->spin_ns, t;
    int n;
    do {
      sched_yield();
      n = epoll_wait(self->epfd, events, max_events, 0);
      t = now_ns();
    } while (n == 0 && t < until && __atomic_load_n(&bulk_sleeping, __ATOMIC_RELAXED));
    __atomic_add_fetch(&spin_total_ns, (uint64_t)(t - t0), __ATOMIC_RELAXED);
    if (n != 0) return n; /* caught within the window: keep it */
  }
  int n = epoll_wait(self->epfd, events, max_events, -1);
  /* The whole idle spell, spin included: short ones grow the window, long ones shrink it. */
  if (now_ns() - t0 <= max) self->spin_ns = self->spin_ns > 0 ? self->spin_ns * 2 : SPIN_GROW_START_NS;
  else self->spin_ns = self->spin_ns / 2 >= SPIN_GROW_START_NS ? self->spin_ns / 2 : 0;
  return n;
}

static void *loop(void *arg) {
  self = arg;
  struct epoll_event events[64];
  for (;;) {
    int n = self->ready_head ? epoll_wait(self->epfd, events, 64, 0) : wait_events(events, 64);
    self->moved_any = 0;
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int k = 0; k < n; k++) {
      if (events[k].data.ptr == NULL) {
        uint64_t v;
        if (read(self->wakefd, &v, sizeof v) < 0) { /* nothing to do: the counter is drained */ }
        continue;
      }
    }
    /* Commands first: a stop may name a tunnel that also has events in this batch. */
    run_commands();
    for (int k = 0; k < n; k++) {
      side *s = events[k].data.ptr;
      /* A tunnel may have finished (or be leaving) earlier in this batch: it stays allocated, and ours,
         until bury() (flush_moves()). */
      if (s == NULL || s->t->finished || s->t->moving) continue;
      tunnel *t = s->t;
      /* Room to write (or an error to find) on socket k: a pipe-less direction k^1 may peek again. */
      if (events[k].events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) t->d[!s->k].dst_full = 0;
      if (events[k].events & (EPOLLRDHUP | EPOLLPRI | EPOLLHUP | EPOLLERR)) t->d[s->k].src_hup = 1;
      /* A direction on the ready list waits for its turn there (busy sockets report edges all the time). */
      int mask = dirs_for(s->k, events[k].events) & ~(t->d[0].ready | (t->d[1].ready << 1));
      for (int i = 0; i < 2; i++) {
        if ((mask & (1 << i)) && t->d[i].heavy) {
          mark_ready(&t->d[i]);
          mask &= ~(1 << i);
        }
      }
      if (mask) pump_dirs(t, mask);
    }
    for (int k = 0; k < READY_SLICE && self->ready_head; k++) {
      direction *d = self->ready_head;
      self->ready_head = d->ready_next;
      if (!self->ready_head) self->ready_tail = NULL;
      d->ready = 0;
      self->ready_count--;
      pump_dirs(d->t, 1 << d->idx);
    }
    flush_moves();
    bury();
  }
  return NULL;
}

/* Queues a command for thread `to` and wakes it: an adopt makes `to` the tunnel's owner (under the lock,
   so a stop from JavaScript goes to the same queue, behind it); `to` = -1 (a stop) sends it to the owner. */
static void enqueue(int to, command *c) {
  c->next = NULL;
  pthread_mutex_lock(&lock);
  if (to < 0) to = c->t->owner; /* a stop: to whoever owns the tunnel now */
  else c->t->owner = to;
  relay_thread *th = &threads[to];
  if (th->queue_tail) th->queue_tail->next = c;
  else th->queue_head = c;
  th->queue_tail = c;
  pthread_mutex_unlock(&lock);
  uint64_t one = 1;
  if (write(th->wakefd, &one, sizeof one) < 0) { /* the eventfd only fails when saturated: already awake */ }
}

/* ---- JS thread ------------------------------------------------------------------------------------- */

/* Throws a JS error for a failed napi_* call (unless one is already pending) and returns NULL. */
static napi_value napi_failed(napi_env env, const char *what) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return NULL;
  char msg[160];
  snprintf(msg, sizeof msg, "splice-relay: %s failed", what);
  napi_throw_error(env, "ERR_SPLICE_RELAY_NAPI", msg);
  return NULL;
}
#define CALL(env, what, call) \
  do { \
    if ((call) != napi_ok) return napi_failed((env), (what)); \
  } while (0)

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

/* An integral number in [min, max]; anything else (not a number, NaN, fraction, out of range) is refused. */
static int get_integer(napi_env env, napi_value v, double min, double max, double *out) {
  napi_valuetype type;
  if (napi_typeof(env, v, &type) != napi_ok || type != napi_number) return 0;
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return 0;
  if (!isfinite(d) || d != floor(d) || d < min || d > max) return 0;
  *out = d;
  return 1;
}

/* A connected-or-not stream socket fd (never a file, pipe or the worker's own fds). */
static int is_stream_socket(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  int type = 0;
  socklen_t len = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

static void js_list_remove(tunnel *t) {
  if (t->js_prev) t->js_prev->js_next = t->js_next;
  else js_live = t->js_next;
  if (t->js_next) t->js_next->js_prev = t->js_prev;
  t->js_prev = t->js_next = NULL;
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  (void)context;
  event *e = data;
  tunnel *t = e->t;
  int final = e->kind != EV_HALF;
  if (env != NULL && cb != NULL) {
    napi_value argv[4], undefined;
    if (napi_create_uint32(env, t->id, &argv[0]) == napi_ok && napi_create_int32(env, e->kind, &argv[1]) == napi_ok &&
        napi_create_int32(env, e->dir, &argv[2]) == napi_ok && napi_create_int32(env, e->err, &argv[3]) == napi_ok &&
        napi_get_undefined(env, &undefined) == napi_ok) {
      /* A throwing callback leaves its exception pending: Node reports it as uncaught. */
      napi_call_function(env, undefined, cb, 4, argv, NULL);
    }
  }
  if (!final) return;
  /* The worker let go of the tunnel in bury(); a stop still queued holds its own reference. */
  if (env != NULL) {
    js_list_remove(t);
    if (t->counters_ref != NULL) napi_delete_reference(env, t->counters_ref);
  }
  release(t);
}

/* Undoes a partial init: the caller has thrown (or will throw) the JS error. */
static void close_thread_fds(relay_thread *th) {
  if (th->epfd >= 0) close(th->epfd);
  if (th->wakefd >= 0) close(th->wakefd);
  th->epfd = th->wakefd = -1;
}

static void init_cleanup(int have_tsfn) {
  if (have_tsfn) napi_release_threadsafe_function(tsfn, napi_tsfn_abort);
  tsfn = NULL;
  close_thread_fds(&threads[BULK]);
  close_thread_fds(&threads[LIGHT]);
}

/* A relay thread's epoll set with its wake-up eventfd in it (data NULL). 0 or -1 (fds closed again). */
static int make_thread_fds(relay_thread *th) {
  th->epfd = epoll_create1(EPOLL_CLOEXEC);
  th->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.ptr = NULL;
  if (th->epfd < 0 || th->wakefd < 0 || epoll_ctl(th->epfd, EPOLL_CTL_ADD, th->wakefd, &ev) != 0) {
    close_thread_fds(th);
    return -1;
  }
  return 0;
}

static napi_value js_init(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], name;
  CALL(env, "init: reading arguments", napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype type;
  if (argc < 1 || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_function)
    return throw_type(env, "splice-relay: init(onEvent): onEvent must be a function");
  double budget = 0;
  if (argc >= 2 && napi_typeof(env, argv[1], &type) == napi_ok && type != napi_undefined &&
      !get_integer(env, argv[1], 0, 1e15, &budget))
    return throw_type(env, "splice-relay: init(onEvent, budgetPages?): budgetPages must be a non-negative integer");
  bool copy = true;
  if (argc >= 3 && napi_typeof(env, argv[2], &type) == napi_ok && type != napi_undefined &&
      (type != napi_boolean || napi_get_value_bool(env, argv[2], &copy) != napi_ok))
    return throw_type(env, "splice-relay: init(onEvent, budgetPages?, copy?): copy must be a boolean");
  __atomic_store_n(&budget_pages, (uint64_t)budget, __ATOMIC_RELAXED);
  __atomic_store_n(&copy_mode, copy ? 1 : 0, __ATOMIC_RELAXED);
  if (started) return NULL;
  if (make_thread_fds(&threads[BULK]) != 0) {
    init_cleanup(0);
    napi_throw_error(env, NULL, "splice-relay: cannot create epoll/eventfd");
    return NULL;
  }
  if (napi_create_string_utf8(env, "splice-relay", NAPI_AUTO_LENGTH, &name) != napi_ok) {
    init_cleanup(0);
    return napi_failed(env, "init: napi_create_string_utf8");
  }
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &tsfn) != napi_ok) {
    init_cleanup(0);
    return napi_failed(env, "init: creating the event callback");
  }
  if (napi_unref_threadsafe_function(env, tsfn) != napi_ok) {
    init_cleanup(1);
    return napi_failed(env, "init: napi_unref_threadsafe_function");
  }
  if (fault(FAULT_THREAD) || pthread_create(&threads[BULK].tid, NULL, loop, &threads[BULK]) != 0) {
    init_cleanup(1);
    napi_throw_error(env, NULL, "splice-relay: cannot start the worker thread");
    return NULL;
  }
  pthread_detach(threads[BULK].tid);
  started = 1;
  /* LIGHT is an improvement, not a need: without it every tunnel stays on BULK. */
  if (make_thread_fds(&threads[LIGHT]) == 0) {
    if (pthread_create(&threads[LIGHT].tid, NULL, loop, &threads[LIGHT]) == 0) {
      pthread_detach(threads[LIGHT].tid);
      __atomic_store_n(&light_running, 1, __ATOMIC_RELEASE);
    } else {
      close_thread_fds(&threads[LIGHT]);
    }
  }
  return NULL;
}

/* Gives the direction a pipe of at least PIPE_MIN_BYTES, or none (pipe_w stays -1: see pump_peek()) when
   the budget has no room for it, the kernel makes it smaller (over the budget it hands out 8 KiB pipes,
   which splice slower than peeking copies), or pipe2 fails. */
static void make_pipe(direction *d) {
  uint64_t budget = __atomic_load_n(&budget_pages, __ATOMIC_RELAXED);
  if (budget > 0 && __atomic_load_n(&pages_used, __ATOMIC_RELAXED) + PIPE_MIN_BYTES / 4096 > budget) return;
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return;
  int size = fcntl(p[1], F_GETPIPE_SZ);
  if (size < PIPE_MIN_BYTES) {
    close(p[0]);
    close(p[1]);
    return;
  }
  d->pipe_r = p[0];
  d->pipe_w = p[1];
  d->pipe_size = (size_t)size;
  __atomic_add_fetch(&pages_used, (size_t)size / 4096, __ATOMIC_RELAXED);
  try_grow(d);
  d->grow_gen = __atomic_load_n(&freed_gen, __ATOMIC_RELAXED);
}

/* AF_INET or AF_INET6 (a TCP socket, as start() checked SOCK_STREAM). */
static int is_inet(int fd) {
  int domain = 0;
  socklen_t len = sizeof domain;
  return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && (domain == AF_INET || domain == AF_INET6);
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CALL(env, "start: reading arguments", napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!started) {
    napi_throw_error(env, NULL, "splice-relay: start() before init()");
    return NULL;
  }
  if (argc < 4) return throw_type(env, "splice-relay: start(id, fdA, fdB, counters) takes four arguments");
  double id, fa, fb;
  if (!get_integer(env, argv[0], 0, 4294967295.0, &id)) return throw_type(env, "splice-relay: start(): id must be an integer in [0, 2^32)");
  if (!get_integer(env, argv[1], 0, 2147483647.0, &fa) || !get_integer(env, argv[2], 0, 2147483647.0, &fb))
    return throw_type(env, "splice-relay: start(): fdA and fdB must be non-negative integer file descriptors");
  if (fa == fb) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "splice-relay: start(): fdA and fdB must differ");
    return NULL;
  }
  if (!is_stream_socket((int)fa) || !is_stream_socket((int)fb)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "splice-relay: start(): fdA and fdB must be stream sockets");
    return NULL;
  }
  bool is_typed = false;
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_is_typedarray(env, argv[3], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[3], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_biguint64_array || length < 2)
    return throw_type(env, "splice-relay: start(): counters must be a BigUint64Array(2)");
  for (tunnel *o = js_live; o; o = o->js_next) {
    if (o->id == (uint32_t)id) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "splice-relay: start(): id is in use");
      return NULL;
    }
  }
  tunnel *t = xcalloc(1, sizeof(tunnel));
  if (!t) {
    napi_throw_error(env, "ENOMEM", "splice-relay: out of memory");
    return NULL;
  }
  t->id = (uint32_t)id;
  t->refs = 1;
  t->counters = data;
  t->d[0].src = (int)fa; t->d[0].dst = (int)fb;
  t->d[1].src = (int)fb; t->d[1].dst = (int)fa;
  t->d[0].pipe_r = t->d[0].pipe_w = t->d[1].pipe_r = t->d[1].pipe_w = -1;
  for (int i = 0; i < 2; i++) {
    t->d[i].t = t;
    t->d[i].idx = i;
    t->sides[i].t = t;
    t->sides[i].k = i;
    t->half[i].t = t;
    t->half[i].kind = EV_HALF;
    t->half[i].dir = i;
  }
  t->final.t = t;
  t->start_cmd.t = t;
  t->stop_cmd.t = t;
  t->stop_cmd.stop = 1;
  for (int i = 0; i < 2; i++) {
    make_pipe(&t->d[i]);
    t->d[i].src_tcp = is_inet(t->d[i].src);
  }
  if (t->d[0].pipe_w < 0 || t->d[1].pipe_w < 0) {
    t->pipeless = 1;
    __atomic_add_fetch(&tunnels_pipeless, 1, __ATOMIC_RELAXED);
  }
  if (napi_create_reference(env, argv[3], 1, &t->counters_ref) != napi_ok) {
    close_pipes(t);
    free(t);
    return napi_failed(env, "start: napi_create_reference");
  }
  t->js_next = js_live;
  if (js_live) js_live->js_prev = t;
  js_live = t;
  t->owner = BULK;
  enqueue(BULK, &t->start_cmd);
  return NULL;
}

static napi_value js_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CALL(env, "stop: reading arguments", napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double id;
  if (argc < 1 || !get_integer(env, argv[0], 0, 4294967295.0, &id)) return throw_type(env, "splice-relay: stop(id): id must be an integer in [0, 2^32)");
  /* Linear in the number of spliced tunnels (bounded by the pipe budget); a stop is rare. */
  for (tunnel *t = js_live; t; t = t->js_next) {
    if (t->id == (uint32_t)id) {
      if (!t->stop_queued) {
        t->stop_queued = 1;
        __atomic_add_fetch(&t->refs, 1, __ATOMIC_ACQ_REL);
        enqueue(-1, &t->stop_cmd);
      }
      break;
    }
  }
  return NULL;
}

/* While the kernel relay holds tunnels their events must keep the event loop alive (Node no longer
   watches those sockets itself); JavaScript refs on the first tunnel and unrefs after the last. */
static napi_value js_ref(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool on = false;
  CALL(env, "ref: reading arguments", napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_bool(env, argv[0], &on) != napi_ok) return throw_type(env, "splice-relay: ref(on): on must be a boolean");
  if (started) {
    if (on) CALL(env, "napi_ref_threadsafe_function", napi_ref_threadsafe_function(env, tsfn));
    else CALL(env, "napi_unref_threadsafe_function", napi_unref_threadsafe_function(env, tsfn));
  }
  return NULL;
}

/* { pagesUsed, budgetPages, grown, pipeless, light, spinNs }: this addon's pipe pages, the budget it sizes
   against, tunnels whose pipes grew to 256 KiB after they started, live tunnels running without a pipe
   (in at least one direction: the budget was spent when they started; see pump_peek()), live tunnels on
   the LIGHT thread (see relay_thread), nanoseconds LIGHT spent spinning since init (see wait_events()). */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, v;
  CALL(env, "stats: napi_create_object", napi_create_object(env, &out));
  const char *names[6] = {"pagesUsed", "budgetPages", "grown", "pipeless", "light", "spinNs"};
  uint64_t vals[6] = {__atomic_load_n(&pages_used, __ATOMIC_RELAXED), __atomic_load_n(&budget_pages, __ATOMIC_RELAXED),
                      __atomic_load_n(&tunnels_grown, __ATOMIC_RELAXED), __atomic_load_n(&tunnels_pipeless, __ATOMIC_RELAXED),
                      __atomic_load_n(&tunnels_light, __ATOMIC_RELAXED), __atomic_load_n(&spin_total_ns, __ATOMIC_RELAXED)};
  for (int k = 0; k < 6; k++) {
    CALL(env, "stats: napi_create_double", napi_create_double(env, (double)vals[k], &v));
    CALL(env, "stats: napi_set_named_property", napi_set_named_property(env, out, names[k], v));
  }
  return out;
}

/* spin(micros): LIGHT's longest spin before it sleeps (see wait_events()); 0 turns spinning off. Takes
   effect at LIGHT's next wait. */
static napi_value js_spin(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double micros;
  CALL(env, "spin: reading arguments", napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !get_integer(env, argv[0], 0, SPIN_MAX_MICROS, &micros))
    return throw_type(env, "splice-relay: spin(micros): micros must be an integer in [0, 1000]");
  __atomic_store_n(&spin_max_ns, (long)micros * 1000L, __ATOMIC_RELAXED);
  return NULL;
}

static napi_value js_faults(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double mask;
  CALL(env, "_faults: reading arguments", napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !get_integer(env, argv[0], 0, 7, &mask)) return throw_type(env, "splice-relay: _faults(mask): mask must be an integer in [0, 7]");
  __atomic_store_n(&faults, (int)mask, __ATOMIC_RELAXED);
  for (int k = 0; started && k < 2; k++) {
    uint64_t one = 1; /* a stop ignored under FAULT_IGNORE_STOP stays ignored; nothing to re-run */
    if (threads[k].wakefd >= 0 && write(threads[k].wakefd, &one, sizeof one) < 0) { /* already awake */ }
  }
  return NULL;
}

/* mallocTune(trimBytes, mmapBytes): glibc keeps up to trimBytes of freed memory at the top of its heap
   and serves allocations below mmapBytes from its arenas (both fixed, so no dynamic threshold moves
   them). For the JavaScript data path: its read buffers are freed by every young-generation collection,
   and with glibc's defaults the freed pages went back to the kernel and were faulted in again by the next
   reads (twice the CPU per GiB at 64 busy tunnels). True when glibc took both. */
static napi_value js_malloc_tune(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  double trim, mmap_at;
  CALL(env, "mallocTune: reading arguments", napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || !get_integer(env, argv[0], 0, 1 << 30, &trim) || !get_integer(env, argv[1], 0, 32 << 20, &mmap_at))
    return throw_type(env, "splice-relay: mallocTune(trimBytes, mmapBytes): integers, trimBytes <= 1 GiB, mmapBytes <= 32 MiB");
  int ok = 0;
#ifdef __GLIBC__
  ok = mallopt(M_TRIM_THRESHOLD, (int)trim) == 1 && mallopt(M_MMAP_THRESHOLD, (int)mmap_at) == 1;
#endif
  CALL(env, "mallocTune: napi_get_boolean", napi_get_boolean(env, ok, &out));
  return out;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    {"init", NULL, js_init, NULL, NULL, NULL, napi_default, NULL},
    {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
    {"ref", NULL, js_ref, NULL, NULL, NULL, napi_default, NULL},
    {"_faults", NULL, js_faults, NULL, NULL, NULL, napi_default, NULL},
    {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
    {"mallocTune", NULL, js_malloc_tune, NULL, NULL, NULL, napi_default, NULL},
    {"spin", NULL, js_spin, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, 8, props) != napi_ok) return napi_failed(env, "napi_define_properties");
  return exports;
}
