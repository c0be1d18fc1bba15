/*
 * splice-relay: moves bytes between two connected stream sockets inside the kernel (Linux splice(2)),
 * so a plain TCP or unix tunnel costs no copies into JavaScript. One background thread with one epoll set
 * serves every spliced tunnel. It only ever sees sockets whose Node handles stopped reading and have no
 * pending writes; when a tunnel finishes (both directions ended), fails, or is stopped, the thread
 * forgets the file descriptors and tells JavaScript, which then destroys the sockets (closing the fds).
 *
 * This is an optimisation with a pure-JavaScript fallback: the relay works without it.
 *
 * JS API:
 *   init(onEvent)                     onEvent(id, kind, dir, errno): kind 0 = half (direction `dir` ended,
 *                                     its write side shut), 1 = done, 2 = error, 3 = stopped
 *   start(id, fdA, fdB, counters)     counters: BigUint64Array(2) receiving bytes moved A→B and B→A
 *   stop(id)
 *   ref(on)                           keep the event loop alive while tunnels are spliced
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* Pipe capacity asked for, and bytes asked of one splice into a pipe. 256 KiB moves about twice the bytes
   per system call of the kernel's default 64 KiB. An unprivileged user's pipe page budget
   (fs.pipe-user-pages-soft, 16,384 pages) covers ~128 such tunnels at once; past it the kernel hands out
   8 KiB pipes, which would splice slower than JavaScript copies: such a tunnel is refused (ENOBUFS) and
   stays on the JavaScript path. */
#define PIPE_BYTES (256 * 1024)
#define EV_HALF 0
#define EV_DONE 1
#define EV_ERROR 2
#define EV_STOPPED 3

typedef struct {
  int src, dst;
  int pipe_r, pipe_w;
  size_t in_pipe;
  int eof, done;
} direction;

typedef struct tunnel {
  uint32_t id;
  direction d[2];
  uint64_t *counters;
  napi_ref counters_ref;
  int finished;
  struct tunnel *next; /* registry list (thread-owned) */
} tunnel;

typedef struct command {
  int stop;
  uint32_t id;
  tunnel *t;
  struct command *next;
} command;

typedef struct {
  uint32_t id;
  int kind, dir, err;
  napi_ref counters_ref; /* released on the JS thread for final events */
} event;

static napi_threadsafe_function tsfn;
static pthread_t worker;
static int started = 0;
static int epfd = -1, wakefd = -1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static command *queue_head = NULL, *queue_tail = NULL;
static tunnel *tunnels = NULL;
/* Tunnels finished during the current batch of epoll events; freed once the batch is done, so a later
   event in the same batch can still look at (and skip) them. */
static tunnel *graveyard = NULL;

static void post(uint32_t id, int kind, int dir, int err, napi_ref ref) {
  event *e = malloc(sizeof(event));
  if (!e) return;
  e->id = id;
  e->kind = kind;
  e->dir = dir;
  e->err = err;
  e->counters_ref = ref;
  napi_call_threadsafe_function(tsfn, e, napi_tsfn_blocking);
}

static void close_pipes(tunnel *t) {
  for (int i = 0; i < 2; i++) {
    if (t->d[i].pipe_r >= 0) close(t->d[i].pipe_r);
    if (t->d[i].pipe_w >= 0) close(t->d[i].pipe_w);
    t->d[i].pipe_r = t->d[i].pipe_w = -1;
  }
}

static void unlink_tunnel(tunnel *t) {
  tunnel **p = &tunnels;
  while (*p && *p != t) p = &(*p)->next;
  if (*p) *p = t->next;
}

/* Forgets the tunnel's fds (the sockets stay open: JavaScript owns them) and reports `kind`. */
static void finish(tunnel *t, int kind, int err) {
  if (t->finished) return;
  t->finished = 1;
  epoll_ctl(epfd, EPOLL_CTL_DEL, t->d[0].src, NULL);
  epoll_ctl(epfd, EPOLL_CTL_DEL, t->d[1].src, NULL);
  close_pipes(t);
  unlink_tunnel(t);
  post(t->id, kind, -1, err, t->counters_ref);
  t->next = graveyard;
  graveyard = t;
}

static void bury(void) {
  while (graveyard) {
    tunnel *next = graveyard->next;
    free(graveyard);
    graveyard = next;
  }
}

/* Moves what can move now in one direction. Returns 0, or an errno that fails the tunnel. */
static int pump(tunnel *t, int i) {
  direction *d = &t->d[i];
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
      post(t->id, EV_HALF, i, 0, NULL);
      return 0;
    }
    ssize_t n = splice(d->src, NULL, d->pipe_w, NULL, PIPE_BYTES, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->in_pipe += (size_t)n;
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

static void pump_all(tunnel *t) {
  for (int i = 0; i < 2; i++) {
    int err = pump(t, i);
    if (err) {
      finish(t, EV_ERROR, err);
      return;
    }
  }
  if (t->d[0].done && t->d[1].done) finish(t, EV_DONE, 0);
}

static void run_commands(void) {
  pthread_mutex_lock(&lock);
  command *c = queue_head;
  queue_head = queue_tail = NULL;
  pthread_mutex_unlock(&lock);
  while (c) {
    command *next = c->next;
    if (c->stop) {
      for (tunnel *t = tunnels; t; t = t->next) {
        if (t->id == c->id) {
          finish(t, EV_STOPPED, 0);
          break;
        }
      }
    } else {
      tunnel *t = c->t;
      t->next = tunnels;
      tunnels = t;
      struct epoll_event ev;
      memset(&ev, 0, sizeof ev);
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.ptr = t;
      int ok = epoll_ctl(epfd, EPOLL_CTL_ADD, t->d[0].src, &ev) == 0;
      if (ok && epoll_ctl(epfd, EPOLL_CTL_ADD, t->d[1].src, &ev) != 0) ok = 0;
      if (!ok) finish(t, EV_ERROR, errno);
      else pump_all(t);
    }
    free(c);
    c = next;
  }
}

static void *loop(void *arg) {
  (void)arg;
  struct epoll_event events[64];
  for (;;) {
    int n = epoll_wait(epfd, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int k = 0; k < n; k++) {
      if (events[k].data.ptr == NULL) {
        uint64_t v;
        if (read(wakefd, &v, sizeof v) < 0) { /* nothing to do: the counter is drained */ }
        continue;
      }
    }
    /* Commands first: a stop may name a tunnel that also has events in this batch. */
    run_commands();
    for (int k = 0; k < n; k++) {
      tunnel *t = events[k].data.ptr;
      /* A tunnel may have finished earlier in this batch: it stays allocated until bury(). */
      if (t != NULL && !t->finished) pump_all(t);
    }
    bury();
  }
  return NULL;
}

static void enqueue(command *c) {
  pthread_mutex_lock(&lock);
  if (queue_tail) queue_tail->next = c;
  else queue_head = c;
  queue_tail = c;
  pthread_mutex_unlock(&lock);
  uint64_t one = 1;
  if (write(wakefd, &one, sizeof one) < 0) { /* the eventfd only fails when saturated: already awake */ }
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  (void)context;
  event *e = data;
  if (env != NULL && cb != NULL) {
    napi_value argv[4], undefined;
    napi_create_uint32(env, e->id, &argv[0]);
    napi_create_int32(env, e->kind, &argv[1]);
    napi_create_int32(env, e->dir, &argv[2]);
    napi_create_int32(env, e->err, &argv[3]);
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, cb, 4, argv, NULL);
  }
  if (env != NULL && e->counters_ref != NULL) napi_delete_reference(env, e->counters_ref);
  free(e);
}

static napi_value js_init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (started) return NULL;
  epfd = epoll_create1(EPOLL_CLOEXEC);
  wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epfd < 0 || wakefd < 0) {
    napi_throw_error(env, NULL, "splice-relay: cannot create epoll/eventfd");
    return NULL;
  }
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.ptr = NULL;
  epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev);
  napi_create_string_utf8(env, "splice-relay", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &tsfn) != napi_ok) {
    napi_throw_error(env, NULL, "splice-relay: cannot create the event callback");
    return NULL;
  }
  napi_unref_threadsafe_function(env, tsfn);
  if (pthread_create(&worker, NULL, loop, NULL) != 0) {
    napi_throw_error(env, NULL, "splice-relay: cannot start the worker thread");
    return NULL;
  }
  pthread_detach(worker);
  started = 1;
  return NULL;
}

static int make_pipe(direction *d) {
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return errno;
  d->pipe_r = p[0];
  fcntl(p[1], F_SETPIPE_SZ, PIPE_BYTES); /* best effort, see PIPE_BYTES */
  d->pipe_w = p[1];
  return 0;
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!started || argc < 4) {
    napi_throw_error(env, NULL, "splice-relay: start(id, fdA, fdB, counters) before init()");
    return NULL;
  }
  uint32_t id;
  int32_t fa, fb;
  napi_get_value_uint32(env, argv[0], &id);
  napi_get_value_int32(env, argv[1], &fa);
  napi_get_value_int32(env, argv[2], &fb);
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, argv[3], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_biguint64_array || length < 2) {
    napi_throw_type_error(env, NULL, "splice-relay: counters must be a BigUint64Array(2)");
    return NULL;
  }
  tunnel *t = calloc(1, sizeof(tunnel));
  if (!t) {
    napi_throw_error(env, NULL, "splice-relay: out of memory");
    return NULL;
  }
  t->id = id;
  t->counters = data;
  t->d[0].src = fa; t->d[0].dst = fb;
  t->d[1].src = fb; t->d[1].dst = fa;
  t->d[0].pipe_r = t->d[0].pipe_w = t->d[1].pipe_r = t->d[1].pipe_w = -1;
  int err = make_pipe(&t->d[0]);
  if (!err) err = make_pipe(&t->d[1]);
  if (err) {
    close_pipes(t);
    free(t);
    napi_throw_error(env, err == ENOBUFS ? "ENOBUFS" : NULL, err == ENOBUFS ? "splice-relay: the pipe page budget is used up (fs.pipe-user-pages-soft)" : "splice-relay: cannot create pipes");
    return NULL;
  }
  napi_create_reference(env, argv[3], 1, &t->counters_ref);
  command *c = calloc(1, sizeof(command));
  if (!c) {
    close_pipes(t);
    napi_delete_reference(env, t->counters_ref);
    free(t);
    napi_throw_error(env, NULL, "splice-relay: out of memory");
    return NULL;
  }
  c->t = t;
  enqueue(c);
  return NULL;
}

static napi_value js_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t id;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &id) != napi_ok) return NULL;
  command *c = calloc(1, sizeof(command));
  if (!c) return NULL;
  c->stop = 1;
  c->id = id;
  enqueue(c);
  return NULL;
}

/* While the kernel relay holds tunnels their events must keep the event loop alive (Node no longer
   watches those sockets itself); JavaScript refs on the first tunnel and unrefs after the last. */
static napi_value js_ref(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool on = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc > 0) napi_get_value_bool(env, argv[0], &on);
  if (started) {
    if (on) napi_ref_threadsafe_function(env, tsfn);
    else napi_unref_threadsafe_function(env, tsfn);
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    {"init", NULL, js_init, NULL, NULL, NULL, napi_default, NULL},
    {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
    {"ref", NULL, js_ref, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 4, props);
  return exports;
}
