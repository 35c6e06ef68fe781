/*
 * acceptor.c - the gateway's own accept loop in front of libmicrohttpd (STACK-NOTES §9, "own
 * accept loop"). libmicrohttpd runs without a listening socket; the accept workers own it.
 *
 * Why: a WebSocket handshake through libmicrohttpd costs a connection pool, its request parser,
 * an upgrade response, a dup and MHD_upgrade_action(CLOSE) on its threads: more than half the
 * CPU of a Socket.IO connect. Here a connection costs accept4, one MSG_PEEK read of its head,
 * one read of exactly the head's bytes, and a small strict parser; the 101 is written by the
 * Socket.IO loop that takes the socket, in the same write as the Engine.IO open packet.
 *
 * Each accepted socket (non-blocking) goes into an edge-triggered epoll. On each readable edge
 * the head is peeked (up to ROUTE_ACCEPT_PEEK bytes) and searched for CRLFCRLF:
 *   - a complete head that parses as a WebSocket upgrade and that the owner's ws_accepts
 *     wants: its bytes (exactly) are read off the socket and the socket goes to ws_take;
 *   - any other complete head, a head that does not fit the peek buffer: the socket goes to
 *     libmicrohttpd (pass) with nothing consumed, so that it parses and answers the request
 *     itself, keep-alive and all;
 *   - a peer that closed or half-closed before its head was complete: closed here;
 *   - an incomplete head waits for the next edge.
 * A socket that sits here without a complete head for timeout_ms (slowloris) gets a 408 and is
 * closed, as the request-timeout watchdog of http.c does for connections libmicrohttpd holds.
 * The listening socket has TCP_DEFER_ACCEPT (http.c): a connection usually arrives with its
 * head, and one that sends nothing waits in the kernel, not here.
 *
 * Connection limit: sockets held here plus those the owner reports (others: libmicrohttpd's)
 * never exceed limit. At the limit the listening socket leaves the epoll set and new
 * connections wait in the kernel backlog; it comes back when the count drops (checked on each
 * pass, and every ROUTE_ACCEPT_PAUSE_MS while paused, since libmicrohttpd frees connections
 * without telling the acceptor).
 *
 * DESIGN (threads). nworkers workers each have an epoll set and own the sockets they
 * accepted; they share the listening socket (EPOLLEXCLUSIVE: a connection wakes one) and an
 * atomic count of held sockets for the limit. route__acceptor_quiesce and route__acceptor_stop
 * talk to them through flags and one eventfd each. A worker runs either on its own thread
 * (acceptor_main) or, hosted, inside another event loop: the host polls the worker's epoll fd
 * (route__acceptor_fd) and calls route__acceptor_run on its own thread when it is readable, so
 * that the callbacks (ws_take above all) run on the thread that serves the socket next, with no
 * hand-off. A hosted worker keeps its deadlines (slowloris, the pause at the limit) in a
 * timerfd inside its epoll set; route__acceptor_release gives it a thread of its own when the
 * host stops (the listening socket must keep serving until route__acceptor_quiesce). Callbacks
 * run on the workers' threads, several at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <utlist.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "routes/route_internal.h"

#define ROUTE_ACCEPT_PEEK 8192
#define ROUTE_ACCEPT_EVENTS 256
#define ROUTE_ACCEPT_BATCH 64
#define ROUTE_ACCEPT_PAUSE_MS 10

struct acc_conn {
    int fd;
    socklen_t salen;
    bool in_set;         /* registered in the epoll set and counted in held */
    int64_t deadline_ms; /* monotonic: accept + timeout */
    struct sockaddr_storage sa;
    struct acc_conn *prev, *next; /* in accept order, so deadlines ascend */
};

struct acc_worker;

struct route_acceptor {
    struct route_acceptor_ops ops;
    int lfd; /* shared by the workers (EPOLLEXCLUSIVE); closed by route__acceptor_stop */
    int64_t timeout_ms;
    unsigned limit;
    atomic_uint held; /* sockets every worker holds */
    atomic_bool quiesce;
    atomic_bool stop;
    char r408[256];
    size_t r408_len;
    int nworkers;
    struct acc_worker *workers;
};

/* One accept worker: its epoll set and the sockets it accepted. */
struct acc_worker {
    struct route_acceptor *g;
    int epfd;
    int efd;
    int tfd;          /* hosted: the next deadline (-1 on a thread, which uses a timeout) */
    int64_t armed_ms; /* hosted: what tfd is armed for (INT64_MAX: disarmed) */
    bool listening;   /* lfd in this epoll set */
    bool paused;      /* at the connection limit */
    bool started;     /* its own thread runs */
    bool hosted;      /* a host loop drives it (until released) */
    pthread_t thread;
    struct acc_conn *conns;
    char buf[ROUTE_ACCEPT_PEEK + 1];
};

/* epoll tags of the three non-connection fds */
static char tag_listen, tag_wake, tag_timer;

/* --- the head parser ------------------------------------------------------------------------ */

static bool is_tchar(unsigned char ch)
{
    if (ch >= 'a' && ch <= 'z')
        return true;
    if (ch >= 'A' && ch <= 'Z')
        return true;
    if (ch >= '0' && ch <= '9')
        return true;
    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool is_ws_key(const char *k)
{
    /* base64 of 16 bytes: 22 characters of the alphabet, then "==" */
    if (strlen(k) != 24 || k[22] != '=' || k[23] != '=')
        return false;
    for (int i = 0; i < 22; i++) {
        unsigned char ch = (unsigned char)k[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return false;
    }
    return true;
}

/* Parses the head in buf[0, len) (len includes the final CRLFCRLF; buf[len] is writable) in
 * place: strings of *out point into buf. Returns true for a well-formed WebSocket upgrade
 * request; false for anything else, which libmicrohttpd is to serve (buf is then garbage). */
bool route__ws_head_parse(char *buf, size_t len, struct http_ws_head *out)
{
    static const char method[] = "GET ";
    static const char version[] = " HTTP/1.1";
    const char *host = NULL, *upgrade = NULL, *connection = NULL, *wsver = NULL, *key = NULL;
    const char *authz = NULL, *session = NULL;
    char *p = buf, *end = buf + len, *eol, *target, *query;

    if (len < 4 || memcmp(end - 4, "\r\n\r\n", 4) != 0)
        return false;
    /* Every CR is followed by LF and every LF preceded by CR; no NUL. */
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\0')
            return false;
        if (buf[i] == '\r' && (i + 1 >= len || buf[i + 1] != '\n'))
            return false;
        if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
            return false;
    }

    /* request line */
    eol = memchr(p, '\r', (size_t)(end - p));
    if ((size_t)(eol - p) < sizeof(method) - 1 + 1 + sizeof(version) - 1 ||
        memcmp(p, method, sizeof(method) - 1) != 0 ||
        memcmp(eol - (sizeof(version) - 1), version, sizeof(version) - 1) != 0)
        return false;
    target = p + sizeof(method) - 1;
    *(eol - (sizeof(version) - 1)) = '\0';
    if (*target != '/')
        return false;
    query = NULL;
    for (char *q = target; *q != '\0'; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch <= 0x20 || ch >= 0x7f || ch == '#')
            return false;
        if (ch == '?' && query == NULL) {
            *q = '\0';
            query = q + 1;
        } else if (ch == '%' && query == NULL) {
            return false; /* libmicrohttpd decodes paths; keep them out of this one */
        }
    }
    p = eol + 2;

    /* header lines, up to the empty one */
    while (p < end - 2) {
        char *name = p, *colon, *v, *vend;
        eol = memchr(p, '\r', (size_t)(end - p));
        if (*p == ' ' || *p == '\t')
            return false; /* obsolete line folding */
        colon = name;
        while (colon < eol && is_tchar((unsigned char)*colon))
            colon++;
        if (colon == name || colon == eol || *colon != ':')
            return false;
        *colon = '\0';
        v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        vend = eol;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        for (char *q = v; q < vend; q++) {
            unsigned char ch = (unsigned char)*q;
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return false;
        }
        *vend = '\0';
        p = eol + 2;

        const char **slot = NULL;
        if (strcasecmp(name, "Host") == 0)
            slot = &host;
        else if (strcasecmp(name, "Upgrade") == 0)
            slot = &upgrade;
        else if (strcasecmp(name, "Connection") == 0)
            slot = &connection;
        else if (strcasecmp(name, "Sec-WebSocket-Version") == 0)
            slot = &wsver;
        else if (strcasecmp(name, "Sec-WebSocket-Key") == 0)
            slot = &key;
        else if (strcasecmp(name, "Authorization") == 0)
            slot = &authz;
        else if (strcasecmp(name, "X-Session-Token") == 0)
            slot = &session;
        else if (strcasecmp(name, "Content-Length") == 0 ||
                 strcasecmp(name, "Transfer-Encoding") == 0)
            return false; /* a body on a handshake: libmicrohttpd's business */
        if (slot != NULL) {
            if (*slot != NULL)
                return false; /* repeated: ambiguous */
            *slot = v;
        }
    }

    if (host == NULL || *host == '\0' || upgrade == NULL ||
        !util_header_has_token(upgrade, "websocket") || connection == NULL ||
        !util_header_has_token(connection, "upgrade") || wsver == NULL ||
        strcmp(wsver, "13") != 0 || key == NULL || !is_ws_key(key))
        return false;
    out->path = target;
    out->query = query != NULL ? query : "";
    out->key = key;
    out->authorization = authz;
    out->session_token = session != NULL && *session != '\0' ? session : NULL;
    out->len = len;
    return true;
}

/* --- the loop ------------------------------------------------------------------------------- */

static void listen_set(struct acc_worker *a, bool on)
{
    if (a->listening == on)
        return;
    if (on) {
        /* every worker waits on the one socket; a connection wakes one of them */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &tag_listen};
        if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->g->lfd, &ev) != 0) {
            log_warn("%s: epoll_ctl(ADD listen)", __func__);
            return;
        }
    } else {
        epoll_ctl(a->epfd, EPOLL_CTL_DEL, a->g->lfd, NULL);
    }
    a->listening = on;
}

static bool at_limit(struct acc_worker *a)
{
    unsigned others = a->g->ops.others != NULL ? a->g->ops.others(a->g->ops.cls) : 0;
    return atomic_load_explicit(&a->g->held, memory_order_relaxed) + others >= a->g->limit;
}

/* Takes c out of the set (the epoll registration first: the fd is about to change hands). */
static void conn_forget(struct acc_worker *a, struct acc_conn *c)
{
    if (!c->in_set)
        return;
    epoll_ctl(a->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    DL_DELETE(a->conns, c);
    atomic_fetch_sub_explicit(&a->g->held, 1, memory_order_relaxed);
    c->in_set = false;
}

static void conn_pass(struct acc_worker *a, struct acc_conn *c)
{
    int fd = c->fd;

    conn_forget(a, c);
    a->g->ops.pass(a->g->ops.cls, fd, (const struct sockaddr *)&c->sa, c->salen);
    free(c);
}

static void conn_close(struct acc_worker *a, struct acc_conn *c)
{
    conn_forget(a, c);
    close(c->fd);
    free(c);
}

/* Serves c's head if it is complete. Returns true while c waits for more (c stays), false
 * when c was handed on or closed (c is freed). */
static bool on_readable(struct acc_worker *a, struct acc_conn *c, uint32_t events)
{
    ssize_t n;
    char *crlf2;

    do {
        n = recv(c->fd, a->buf, ROUTE_ACCEPT_PEEK, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return true;
        conn_close(a, c);
        return false;
    }
    if (n == 0) {
        conn_close(a, c); /* gone before sending anything */
        return false;
    }
    a->buf[n] = '\0';
    crlf2 = memmem(a->buf, (size_t)n, "\r\n\r\n", 4);
    if (crlf2 == NULL) {
        /* Too long for us: libmicrohttpd answers. */
        if (n >= ROUTE_ACCEPT_PEEK) {
            conn_pass(a, c);
            return false;
        }
        /* The peer stopped sending before its head was complete: it never will be. Closed
         * here, at once (libmicrohttpd would hold it until its timeout). */
        if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
            conn_close(a, c);
            return false;
        }
        return true;
    }

    size_t head_len = (size_t)(crlf2 - a->buf) + 4;
    struct http_ws_head h;
    if (a->g->ops.ws_accepts == NULL || !route__ws_head_parse(a->buf, head_len, &h) ||
        !a->g->ops.ws_accepts(a->g->ops.cls, &h)) {
        conn_pass(a, c);
        return false;
    }
    /* Read exactly the head: what follows (a first frame) stays in the socket for the loop
     * that takes it. The bytes are already queued, so one read gets them all. The parsed
     * strings live in a->buf, which the read must not overwrite: read into the tail. */
    char sink[512];
    size_t left = head_len;
    while (left > 0) {
        ssize_t r = recv(c->fd, sink, left < sizeof(sink) ? left : sizeof(sink), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            conn_close(a, c);
            return false;
        }
        left -= (size_t)r;
    }
    int fd = c->fd;
    conn_forget(a, c);
    free(c);
    a->g->ops.ws_take(a->g->ops.cls, fd, &h);
    return false;
}

static void accept_some(struct acc_worker *a)
{
    for (int i = 0; i < ROUTE_ACCEPT_BATCH; i++) {
        struct acc_conn *c;
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        int fd;

        if (at_limit(a)) {
            listen_set(a, false);
            a->paused = true;
            return;
        }
        fd = accept4(a->g->lfd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: leave the backlog alone for a while. */
                log_warn("%s: accept4, pausing", __func__);
                listen_set(a, false);
                a->paused = true;
                return;
            }
            if (errno == EINVAL) /* shut down by quiesce */
                return;
            log_warn("%s: accept4", __func__);
            return;
        }
        c = xmalloc(sizeof(*c));
        c->fd = fd;
        c->in_set = false;
        c->salen = salen;
        memcpy(&c->sa, &sa, salen);
        /* Under load the head is often there already: serve it without a trip through the
         * epoll set (two epoll_ctl and a wake-up saved). */
        if (!on_readable(a, c, 0))
            continue;
        c->deadline_ms = util_mono_ms() + a->g->timeout_ms;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            log_warn("%s: epoll_ctl(ADD)", __func__);
            close(fd);
            free(c);
            continue;
        }
        c->in_set = true;
        DL_APPEND(a->conns, c);
        atomic_fetch_add_explicit(&a->g->held, 1, memory_order_relaxed);
    }
}

/* Closes the connections whose head did not complete in time; returns the next deadline. */
static int64_t expire(struct acc_worker *a, int64_t now)
{
    while (a->conns != NULL && a->conns->deadline_ms <= now) {
        struct acc_conn *c = a->conns;
        /* Read what came first, so that close() sends a FIN after the 408 and not a reset. */
        (void)recv(c->fd, a->buf, ROUTE_ACCEPT_PEEK, MSG_DONTWAIT);
        (void)send(c->fd, a->g->r408, a->g->r408_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        log_debug("%s: closed a connection with no complete request after %" PRId64 " ms", __func__,
                  a->g->timeout_ms);
        conn_close(a, c);
    }
    return a->conns != NULL ? a->conns->deadline_ms : INT64_MAX;
}

/* One pass: deadlines, the pause at the limit, then the events (waiting up to wait_ms, -1 for
 * the next deadline; 0 for a hosted pass). Returns the monotonic time of the next deadline
 * (INT64_MAX: none). */
static int64_t worker_pass(struct acc_worker *a, int wait_ms)
{
    struct epoll_event evs[ROUTE_ACCEPT_EVENTS];
    int64_t now = util_mono_ms();
    int64_t next = expire(a, now);

    bool quiesced = atomic_load(&a->g->quiesce);
    if (quiesced) {
        listen_set(a, false);
        a->paused = false;
    }
    if (a->paused && !quiesced && !at_limit(a)) {
        a->paused = false;
        listen_set(a, true);
    }
    if (a->paused && next > now + ROUTE_ACCEPT_PAUSE_MS)
        next = now + ROUTE_ACCEPT_PAUSE_MS;
    int timeout = wait_ms;
    if (timeout < 0 && next != INT64_MAX)
        timeout = next - now > 1000 ? 1000 : (int)(next - now);

    int n = epoll_wait(a->epfd, evs, ROUTE_ACCEPT_EVENTS, timeout);
    if (n < 0) {
        if (errno != EINTR)
            log_warn("%s: epoll_wait", __func__);
        return next;
    }
    bool accept_ready = false;
    for (int i = 0; i < n; i++) {
        void *tag = evs[i].data.ptr;
        if (tag == &tag_listen) {
            accept_ready = true;
        } else if (tag == &tag_wake) {
            uint64_t v;
            (void)read(a->efd, &v, sizeof(v));
        } else if (tag == &tag_timer) {
            uint64_t v;
            (void)read(a->tfd, &v, sizeof(v));
            a->armed_ms = INT64_MAX;
        } else {
            on_readable(a, tag, evs[i].events);
        }
    }
    /* Accept after serving the ready heads: a connection passed on above frees a slot, and
     * the ones just accepted were registered after this batch of events. */
    if (accept_ready && !atomic_load(&a->g->quiesce))
        accept_some(a);
    if (n > 0) {
        /* what this pass did may have moved the next deadline */
        next = a->conns != NULL ? a->conns->deadline_ms : INT64_MAX;
        if (a->paused && next > util_mono_ms() + ROUTE_ACCEPT_PAUSE_MS)
            next = util_mono_ms() + ROUTE_ACCEPT_PAUSE_MS;
    }
    return next;
}

static void *acceptor_main(void *arg)
{
    struct acc_worker *a = arg;
    util_thread_name("accept");
    while (!atomic_load(&a->g->stop))
        (void)worker_pass(a, -1);
    return NULL;
}

/* --- lifecycle ------------------------------------------------------------------------------ */

static void worker_close(struct acc_worker *w)
{
    while (w->conns != NULL)
        conn_close(w, w->conns);
    if (w->tfd >= 0)
        close(w->tfd);
    if (w->efd >= 0)
        close(w->efd);
    if (w->epfd >= 0)
        close(w->epfd);
}

static int worker_init(struct route_acceptor *a, struct acc_worker *w, bool hosted)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_wake};
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = &tag_timer};

    w->g = a;
    w->hosted = hosted;
    w->armed_ms = INT64_MAX;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->epfd < 0 || w->efd < 0) {
        log_warn("%s: epoll/eventfd", __func__);
        return -1;
    }
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->efd, &ev) != 0) {
        log_warn("%s: epoll_ctl", __func__);
        return -1;
    }
    if (hosted) {
        w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (w->tfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->tfd, &tev) != 0) {
            log_warn("%s: timerfd", __func__);
            return -1;
        }
    }
    listen_set(w, true);
    return w->listening ? 0 : -1;
}

static void wake_all(struct route_acceptor *a)
{
    uint64_t one = 1;
    for (int i = 0; i < a->nworkers; i++)
        if (a->workers[i].efd >= 0)
            (void)write(a->workers[i].efd, &one, sizeof(one));
}

/* Stops and frees the workers. False (nothing freed, logged) while a host still drives one:
 * a bug of the caller, which must stop its hosts first; the acceptor is then left as it is. */
static bool stop_workers(struct route_acceptor *a)
{
    for (int i = 0; i < a->nworkers; i++) {
        if (a->workers[i].hosted && !a->workers[i].started) {
            log_warnx("%s: accept worker %d is still hosted: left running", __func__, i);
            return false;
        }
    }
    atomic_store(&a->stop, true);
    wake_all(a);
    for (int i = 0; i < a->nworkers; i++) {
        struct acc_worker *w = &a->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        worker_close(w);
    }
    free(a->workers);
    return true;
}

static int worker_spawn(struct acc_worker *w)
{
    if (pthread_create(&w->thread, NULL, acceptor_main, w) != 0) {
        log_warnx("%s: cannot start an acceptor thread", __func__);
        return -1;
    }
    w->started = true;
    return 0;
}

struct route_acceptor *route__acceptor_start(int listen_fd, int nworkers, bool hosted,
                                             int64_t timeout_ms, unsigned limit,
                                             const struct route_acceptor_ops *ops)
{
    static const char body[] =
        "{\"error\":\"request_timeout\",\"message\":\"the request was not complete in time\"}";
    struct route_acceptor *a = xcalloc(1, sizeof(*a));

    a->ops = *ops;
    a->r408_len =
        (size_t)snprintf(a->r408, sizeof(a->r408),
                         "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         sizeof(body) - 1, body);
    a->lfd = listen_fd;
    a->timeout_ms = timeout_ms;
    a->limit = limit > 0 ? limit : 1;
    atomic_init(&a->held, 0);
    a->nworkers = nworkers > 0 ? nworkers : 1;
    a->workers = xcalloc((size_t)a->nworkers, sizeof(*a->workers));
    for (int i = 0; i < a->nworkers; i++)
        a->workers[i].epfd = a->workers[i].efd = a->workers[i].tfd = -1;
    for (int i = 0; i < a->nworkers; i++) {
        struct acc_worker *w = &a->workers[i];
        if (worker_init(a, w, hosted) != 0 || (!hosted && worker_spawn(w) != 0))
            goto fail;
    }
    return a;

fail:
    for (int i = 0; i < a->nworkers; i++)
        a->workers[i].hosted = false; /* nobody hosts them yet */
    (void)stop_workers(a);
    free(a);
    return NULL;
}

int route__acceptor_fd(const struct route_acceptor *a, int i)
{
    return a->workers[i].epfd;
}

void route__acceptor_run(struct route_acceptor *a, int i)
{
    struct acc_worker *w = &a->workers[i];
    int64_t next = worker_pass(w, 0);
    /* Only an earlier deadline is worth a syscall: a timer armed for a later or a vanished
     * one fires, finds nothing due, and the pass after it arms the right one. */
    if (next >= w->armed_ms)
        return;
    /* util_mono_ms counts CLOCK_MONOTONIC milliseconds */
    struct itimerspec its = {0};
    its.it_value.tv_sec = next / 1000;
    its.it_value.tv_nsec = (next % 1000) * 1000000L + 1;
    if (timerfd_settime(w->tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        log_warn("%s: timerfd_settime", __func__);
    else
        w->armed_ms = next;
}

int route__acceptor_release(struct route_acceptor *a, int i)
{
    struct acc_worker *w = &a->workers[i];
    if (!w->hosted || w->started)
        return 0;
    return worker_spawn(w);
}

void route__acceptor_quiesce(struct route_acceptor *a)
{
    if (a == NULL)
        return;
    /* Refuse new connections now; the workers take the socket out of their sets when they
     * see the flag (it is closed only by route__acceptor_stop). */
    if (shutdown(a->lfd, SHUT_RDWR) != 0 && errno != ENOTCONN)
        log_warn("%s: shutdown", __func__);
    atomic_store(&a->quiesce, true);
    wake_all(a);
}

void route__acceptor_stop(struct route_acceptor *a)
{
    if (a == NULL)
        return;
    if (!stop_workers(a))
        return;
    close(a->lfd);
    free(a);
}
