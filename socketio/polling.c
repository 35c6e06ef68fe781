/*
 * polling.c - the Engine.IO HTTP long-polling transport (the socket.io-client's default
 * first transport), and the upgrade of a polling session to WebSocket.
 *
 * A polling session is a connection like any other, owned by a loop thread (its fd is -1):
 * the session layer (session.c) does not know the difference. What the loop sends is
 * appended, as a polling payload, to the shared struct sio_poll; a GET takes that payload at
 * once, or is suspended (MHD_suspend_connection) until the loop has something and resumes
 * it. A POST's body is decoded on the loop into packets for the session. Only the sid map and
 * the sio_poll struct are shared, each under its own mutex; the connection stays the loop's.
 *
 * Upgrade: the client opens a WebSocket with the sid, sends "2probe", gets "3probe"; pending
 * and later GETs are answered with a noop so the client can pause polling; then "5" moves the
 * WebSocket's fd into the session's connection (loop.c, sio__conn_upgrade), and packets still
 * queued for polling go out on the WebSocket.
 *
 * Errors, as the reference server: unknown sid → 400 {"code":1,"message":"Session ID
 * unknown"}; a second GET while one waits closes the session; a body over MAX_PAYLOAD_BYTES →
 * 413.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xmalloc.h"
#include "socketio/sio_internal.h"

/* The per-request state of a polling request (*con_cls). */
struct sio_preq {
    int kind; /* must stay first: 1 = polling (see upgrade.c's struct sio_req) */
    struct sio_engine *e;
    struct sio_poll *poll;
    bool suspended;
    bool too_large;
    uint8_t *body;
    size_t body_len;
    bool eio_echo; /* --conformance /engine.io/ */
    int64_t t0_ms; /* the request's start: its body must be complete within REQUEST_TIMEOUT_MS */
};

#define PREQ_KIND 1

static void poll_free(struct sio_poll *p)
{
    pthread_mutex_destroy(&p->mu);
    free(p->out);
    free(p);
}

void sio__poll_release(struct sio_poll *p)
{
    if (p != NULL && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        poll_free(p);
}

struct sio_poll *sio__poll_find(struct sio_engine *e, const char *sid)
{
    struct sio_poll *p = NULL;
    pthread_mutex_lock(&e->polls_mu);
    HASH_FIND_STR(e->polls, sid, p);
    if (p != NULL)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&e->polls_mu);
    return p;
}

static void poll_unmap(struct sio_engine *e, struct sio_poll *p)
{
    bool had = false;
    pthread_mutex_lock(&e->polls_mu);
    struct sio_poll *q = NULL;
    HASH_FIND_STR(e->polls, p->sid, q);
    if (q == p) {
        HASH_DEL(e->polls, p);
        had = true;
    }
    pthread_mutex_unlock(&e->polls_mu);
    if (had)
        sio__poll_release(p);
}

/* CORS for browsers polling from another origin (SPEC §3: CORS_ORIGINS, credentials), with
 * the same allowlist check as the REST routes. */
static void add_cors(const struct sio_engine *e, struct MHD_Connection *conn,
                     struct MHD_Response *r, bool preflight)
{
    const char *allow = e->cfg->cors_origins;
    if (allow == NULL || *allow == '\0')
        return;
    MHD_add_response_header(r, "Vary", "Origin");
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (!util_cors_origin_allowed(allow, origin))
        return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(r, "Access-Control-Allow-Credentials", "true");
    if (preflight) {
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, X-Session-Token");
        MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    }
}

/* Tells keep-alive clients when an idle connection is dropped (routes/' watchdog closes it
 * after REQUEST_TIMEOUT_MS), so that they do not reuse a socket being closed. */
static void add_keep_alive(const struct sio_engine *e, struct MHD_Response *r)
{
    char ka[48];
    int64_t s = e->cfg->request_timeout_ms / 1000;
    snprintf(ka, sizeof(ka), "timeout=%lld", (long long)(s > 0 ? s : 1));
    MHD_add_response_header(r, "Keep-Alive", ka);
}

static enum MHD_Result reply(const struct sio_engine *e, struct MHD_Connection *conn,
                             unsigned status, const char *type, const void *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    add_cors(e, conn, r, false);
    add_keep_alive(e, r);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_error(const struct sio_engine *e, struct MHD_Connection *conn,
                                   unsigned status, int code, const char *message)
{
    char body[128];
    int n = snprintf(body, sizeof(body), "{\"code\":%d,\"message\":\"%s\"}", code, message);
    return reply(e, conn, status, "application/json", body, (size_t)n);
}

/* Answers a GET with what is queued (poll locked). *done is set when that was the last
 * answer of a closed session (then unmap it). As the reference server does, a session closed
 * with packets still queued (a 41) sends them first and its close packet on the next GET, so
 * the client sees the disconnect before the transport closes. */
static enum MHD_Result reply_payload(struct MHD_Connection *conn, struct sio_poll *p, bool *done)
{
    const struct sio_engine *e = p->loop->e;
    enum MHD_Result r;
    if (p->out_len == 0) {
        static const char noop[] = "6";
        r = reply(e, conn, MHD_HTTP_OK, "text/plain; charset=UTF-8", noop, 1);
    } else {
        r = reply(e, conn, MHD_HTTP_OK, "text/plain; charset=UTF-8", p->out, p->out_len);
        p->out_len = 0;
    }
    *done = false;
    if (p->closed) {
        if (p->close_after) {
            static const uint8_t none[1] = {0};
            p->close_after = false;
            eio_payload_append(&p->out, &p->out_len, &p->out_cap, EIO_CLOSE, false, none, 0);
        } else {
            *done = true;
        }
    }
    return r;
}

static void wake(struct sio_poll *p);

/* Queues a message of type about p for its loop (with a reference), body (malloc'ed, taken)
 * and body_len for a POLL_DATA; a POLL_DATA without a body closes the session. */
static void tell_loop(struct sio_poll *p, enum sio_msg_type type, uint8_t *body, size_t body_len)
{
    struct sio_msg *m = xcalloc(1, sizeof(*m));
    m->type = type;
    m->fd = -1;
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    m->poll = p;
    m->body = body;
    m->body_len = body_len;
    sio__mpsc_push(&p->loop->q, m);
}

/* Closes the session at once for requests (they get 400 from now on; a waiting GET gets the
 * close packet) and asks the loop to close its connection (a message without a body): an
 * expired or malformed session is gone, as in the reference server, with no last words. */
static void poll_kill(struct sio_poll *p)
{
    pthread_mutex_lock(&p->mu);
    if (!p->closed && !p->upgraded) {
        p->closed = true;
        p->close_after = false;
        p->out_len = 0;
        if (p->waiting != NULL) {
            static const uint8_t none[1] = {0};
            eio_payload_append(&p->out, &p->out_len, &p->out_cap, EIO_CLOSE, false, none, 0);
            wake(p);
        }
    }
    pthread_mutex_unlock(&p->mu);
    tell_loop(p, SIO_MSG_POLL_DATA, NULL, 0);
}

/* True when the client let pingInterval + pingTimeout pass without the pong that was due
 * (scheduled times: the loop's timer may fire a little later than a request arrives). */
static bool poll_expired(const struct sio_engine *e, struct sio_poll *p)
{
    pthread_mutex_lock(&p->mu);
    bool x = !p->upgrading && !p->upgraded &&
             sio__mono_ms() >= p->ping_sched_ms + e->cfg->ping_timeout_ms;
    pthread_mutex_unlock(&p->mu);
    return x;
}

struct post_scan {
    bool pong;
    bool close;
};

static int post_scan_cb(void *cls, const struct eio_packet *pk)
{
    struct post_scan *s = cls;
    if (pk->type == EIO_PONG)
        s->pong = true;
    else if (pk->type == EIO_CLOSE)
        s->close = true;
    return 0;
}

static enum MHD_Result handshake(struct sio_preq *rq, struct MHD_Connection *conn)
{
    struct sio_engine *e = rq->e;
    struct sio_poll *p = xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    util_random_bytes(&p->sid_u64, sizeof(p->sid_u64));
    p->ping_sched_ms = sio__mono_ms() + e->cfg->ping_interval_ms;
    sio__sid_string(p->sid_u64, p->sid);
    unsigned i = atomic_fetch_add_explicit(&e->rr, 1, memory_order_relaxed) % (unsigned)e->nloops;
    p->loop = &e->loops[i];
    /* refs: the sid map, this request, the message (then the connection) */
    atomic_init(&p->refs, 3);
    pthread_mutex_lock(&e->polls_mu);
    HASH_ADD_STR(e->polls, sid, p);
    pthread_mutex_unlock(&e->polls_mu);
    rq->poll = p;

    struct sio_msg *m = xcalloc(1, sizeof(*m));
    m->type = SIO_MSG_NEW_POLL;
    m->fd = -1;
    m->poll = p;
    m->eio_echo = rq->eio_echo;
    const char *authz = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    const char *bearer = authz ? auth_bearer_from_header(authz) : NULL;
    const char *session = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Session-Token");
    const char *qtoken = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "token");
    m->jwt = (bearer && *bearer) ? xstrdup(bearer) : NULL;
    m->session = (session && *session) ? xstrdup(session) : NULL;
    m->qtoken = (qtoken && *qtoken) ? xstrdup(qtoken) : NULL;

    /* The loop answers with the open packet: wait for it like any GET. */
    pthread_mutex_lock(&p->mu);
    p->waiting = conn;
    rq->suspended = true;
    METRIC_ADD(polling_requests_held, 1);
    MHD_suspend_connection(conn);
    pthread_mutex_unlock(&p->mu);
    sio__mpsc_push(&p->loop->q, m);
    return MHD_YES;
}

static enum MHD_Result get(struct sio_preq *rq, struct MHD_Connection *conn)
{
    const struct sio_engine *e = rq->e;
    struct sio_poll *p = rq->poll;
    pthread_mutex_lock(&p->mu);
    bool done = false;
    if (rq->suspended && p->upgraded && p->out_len == 0) {
        /* held during the upgrade, which completed meanwhile */
        rq->suspended = false;
        METRIC_SUB(polling_requests_held, 1);
        pthread_mutex_unlock(&p->mu);
        return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 1, "Session ID unknown");
    }
    if (rq->suspended || (p->closed && p->out_len > 0)) {
        /* Resumed by the loop, or the last words of a closed session (41, the close
         * packet): answer with what is queued. */
        rq->suspended = false;
        METRIC_SUB(polling_requests_held, 1);
        enum MHD_Result r = reply_payload(conn, p, &done);
        pthread_mutex_unlock(&p->mu);
        if (done)
            poll_unmap(rq->e, p);
        return r;
    }
    if (p->closed || p->upgraded || !atomic_load(&rq->e->running)) {
        /* (the loops have stopped: nothing would ever answer a GET held now) */
        pthread_mutex_unlock(&p->mu);
        return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 1, "Session ID unknown");
    }
    if (p->waiting != NULL) {
        /* Two GETs at once: the reference closes the session. */
        pthread_mutex_unlock(&p->mu);
        log_debug("socketio: overlapping polling GETs on sid=%s", p->sid);
        tell_loop(p, SIO_MSG_POLL_DATA, NULL, 0); /* no body: close the session */
        return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 3, "Bad request");
    }
    if ((p->upgrading || p->probing > 0) && p->out_len == 0) {
        /* A GET during an upgrade: the client may have sent "5" on the WebSocket just before
         * it, and the reference server, one thread, reads it first (this GET then gets 400).
         * So the loop reads the probe before this GET is answered: 400 if that completed the
         * upgrade, else a noop (sio__poll_sync_done). */
        p->waiting = conn;
        rq->suspended = true;
        METRIC_ADD(polling_requests_held, 1);
        MHD_suspend_connection(conn);
        pthread_mutex_unlock(&p->mu);
        tell_loop(p, SIO_MSG_POLL_SYNC, NULL, 0);
        return MHD_YES;
    }
    /* Mid-POST (batch) the answer is not complete yet: wait, the batch's end wakes us. */
    if ((p->out_len > 0 && !p->batch) || p->upgrading) {
        enum MHD_Result r = reply_payload(conn, p, &done);
        pthread_mutex_unlock(&p->mu);
        return r;
    }
    p->waiting = conn;
    rq->suspended = true;
    METRIC_ADD(polling_requests_held, 1);
    MHD_suspend_connection(conn);
    pthread_mutex_unlock(&p->mu);
    return MHD_YES;
}

enum MHD_Result sio__polling_request(struct sio_engine *e, struct MHD_Connection *conn,
                                     const char *url, const char *method, const char *sid,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    struct sio_preq *rq = *con_cls;
    if (rq == NULL) {
        rq = xcalloc(1, sizeof(*rq));
        rq->kind = PREQ_KIND;
        rq->eio_echo = sio__conformance_eio_path(e, url);
        rq->t0_ms = sio__mono_ms();
        rq->e = e;
        atomic_fetch_add_explicit(&e->poll_requests, 1, memory_order_relaxed);
        *con_cls = rq;
        return MHD_YES;
    }
    bool is_get = strcmp(method, "GET") == 0;
    bool is_post = strcmp(method, "POST") == 0;
    if (is_post && *upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        /* routes/' watchdog does not time requests the engine holds: a body trickled in
         * slower than REQUEST_TIMEOUT_MS allows closes the connection here. */
        if (e->cfg->request_timeout_ms > 0 &&
            sio__mono_ms() - rq->t0_ms > e->cfg->request_timeout_ms)
            return MHD_NO;
        if (rq->too_large || rq->body_len + n > (size_t)e->cfg->max_payload_bytes) {
            rq->too_large = true;
            return MHD_YES;
        }
        rq->body = xrealloc(rq->body, rq->body_len + n);
        memcpy(rq->body + rq->body_len, upload_data, n);
        rq->body_len += n;
        return MHD_YES;
    }
    if (strcmp(method, "OPTIONS") == 0) {
        /* A browser's CORS preflight. */
        struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (r == NULL)
            return MHD_NO;
        add_cors(e, conn, r, true);
        add_keep_alive(e, r);
        enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_NO_CONTENT, r);
        MHD_destroy_response(r);
        return ret;
    }
    /* Once the loops have stopped (shutdown), a held GET still gets its answer, and so does the
     * next GET of a session they closed: its goodbye (41, the close packet) waits in it, and
     * sio_engine_shutdown keeps such sessions mapped a bounded moment for that GET. */
    if (!atomic_load(&e->running) && !rq->suspended && (sid == NULL || !is_get))
        return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 3, "Bad request");
    if (sid == NULL) {
        if (rq->poll != NULL)
            return get(rq, conn); /* the handshake's GET, resumed */
        if (!is_get)
            return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 2, "Bad handshake method");
        return handshake(rq, conn);
    }
    if (rq->poll == NULL) {
        rq->poll = sio__poll_find(e, sid);
        if (rq->poll == NULL)
            return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 1, "Session ID unknown");
    }
    if (!rq->suspended && poll_expired(e, rq->poll)) {
        /* Deadlines are checked when a request arrives, not only by the loop's timer. */
        poll_kill(rq->poll);
        return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 1, "Session ID unknown");
    }
    if (is_get)
        return get(rq, conn);
    if (!is_post)
        return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 3, "Bad request");
    struct sio_poll *p = rq->poll;
    if (rq->too_large) {
        poll_kill(p); /* over maxPayload: the session closes */
        return reply_error(e, conn, MHD_HTTP_CONTENT_TOO_LARGE, 3, "Payload too large");
    }
    pthread_mutex_lock(&p->mu);
    bool gone = p->closed || p->upgraded;
    pthread_mutex_unlock(&p->mu);
    if (gone)
        return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 1, "Session ID unknown");
    /* The payload is checked here, so that a malformed one is answered 400 (and the session
     * closed) as the reference does; the loop decodes it again for the session. */
    struct post_scan scan = {false, false};
    if (rq->body_len > 0 && eio_decode_payload(rq->body, rq->body_len, post_scan_cb, &scan) < 0) {
        poll_kill(p);
        return reply_error(e, conn, MHD_HTTP_BAD_REQUEST, 3, "Bad request");
    }
    if (scan.pong || scan.close) {
        pthread_mutex_lock(&p->mu);
        if (scan.pong)
            p->ping_sched_ms += e->cfg->ping_interval_ms;
        if (scan.close)
            p->client_closed = true;
        pthread_mutex_unlock(&p->mu);
    }
    tell_loop(p, SIO_MSG_POLL_DATA, rq->body ? rq->body : xmalloc(1), rq->body_len);
    rq->body = NULL;
    rq->body_len = 0;
    static const char ok[] = "ok";
    return reply(e, conn, MHD_HTTP_OK, "text/html", ok, 2);
}

void sio__polling_request_done(void *con_cls)
{
    struct sio_preq *rq = con_cls;
    if (rq->poll != NULL) {
        /* A suspended GET that ends otherwise (daemon stop) must not stay registered. */
        pthread_mutex_lock(&rq->poll->mu);
        if (rq->suspended) {
            rq->poll->waiting = NULL;
            METRIC_SUB(polling_requests_held, 1);
        }
        pthread_mutex_unlock(&rq->poll->mu);
        sio__poll_release(rq->poll);
    }
    atomic_fetch_sub_explicit(&rq->e->poll_requests, 1, memory_order_relaxed);
    free(rq->body);
    free(rq);
}

/* ---- loop side ------------------------------------------------------------------------ */

/* Wakes the waiting GET, if any (poll locked). */
static void wake(struct sio_poll *p)
{
    if (p->batch)
        return; /* sio__poll_batch wakes it once the whole POST is answered */
    if (p->waiting != NULL) {
        MHD_resume_connection(p->waiting);
        p->waiting = NULL;
    }
}

void sio__poll_send(struct sio_conn *c, bool binary, const void *data, size_t len)
{
    struct sio_poll *p = c->aux->poll;
    const uint8_t *d = data;
    pthread_mutex_lock(&p->mu);
    if (!p->closed && !p->upgraded) {
        if (binary)
            eio_payload_append(&p->out, &p->out_len, &p->out_cap, EIO_MESSAGE, true, d, len);
        else if (len > 0)
            eio_payload_append(&p->out, &p->out_len, &p->out_cap, (enum eio_type)(d[0] - '0'),
                               false, d + 1, len - 1);
        wake(p);
    }
    pthread_mutex_unlock(&p->mu);
}

void sio__poll_close(struct sio_conn *c)
{
    struct sio_poll *p = c->aux->poll;
    bool delivered = true;
    pthread_mutex_lock(&p->mu);
    if (!p->closed && !p->upgraded) {
        p->closed = true;
        if (p->client_closed) {
            /* The client closed: the waiting GET (or one racing the close, within the
             * linger) just ends with a noop, as the reference does; then the sid is gone. */
            static const uint8_t none[1] = {0};
            p->out_len = 0;
            eio_payload_append(&p->out, &p->out_len, &p->out_cap, EIO_NOOP, false, none, 0);
        } else if (p->out_len == 0) {
            static const uint8_t none[1] = {0};
            eio_payload_append(&p->out, &p->out_len, &p->out_cap, EIO_CLOSE, false, none, 0);
        } else {
            p->close_after = true;
        }
        delivered = p->waiting != NULL && !p->close_after;
        wake(p);
    }
    pthread_mutex_unlock(&p->mu);
    if (delivered) {
        poll_unmap(c->loop->e, p);
        return;
    }
    /* Nobody waits: the next GET gets the last packets, if it comes within pingTimeout. */
    struct sio_loop *l = c->loop;
    struct sio_linger *g = xcalloc(1, sizeof(*g));
    g->deadline_ms = sio__mono_ms() + l->e->cfg->ping_timeout_ms;
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    g->poll = p;
    if (l->linger_tail != NULL)
        l->linger_tail->next = g;
    else
        l->linger_head = g;
    l->linger_tail = g;
}

void sio__poll_probe_gone(struct sio_poll *p)
{
    pthread_mutex_lock(&p->mu);
    p->probing--;
    /* A probe that never reached the loop: a GET held for it needs no loop's answer. */
    if (p->probing == 0 && !p->upgrading)
        wake(p);
    pthread_mutex_unlock(&p->mu);
}

void sio__poll_sync_done(struct sio_poll *p)
{
    pthread_mutex_lock(&p->mu);
    wake(p); /* upgraded: the GET gets its 400; else a noop (or what is queued) */
    pthread_mutex_unlock(&p->mu);
}

void sio__poll_upgrading(struct sio_poll *p)
{
    pthread_mutex_lock(&p->mu);
    p->upgrading = true;
    wake(p); /* answered with a noop (or what is queued) so the client can pause */
    pthread_mutex_unlock(&p->mu);
}

struct replay {
    void (*fn)(void *cls, const struct eio_packet *pk);
    void *cls;
};

static int replay_cb(void *cls, const struct eio_packet *pk)
{
    struct replay *r = cls;
    r->fn(r->cls, pk);
    return 0;
}

void sio__poll_upgraded(struct sio_poll *p, void (*fn)(void *cls, const struct eio_packet *pk),
                        void *cls)
{
    pthread_mutex_lock(&p->mu);
    p->upgraded = true;
    if (p->out_len > 0) {
        struct replay r = {fn, cls};
        eio_decode_payload((const uint8_t *)p->out, p->out_len, replay_cb, &r);
        p->out_len = 0;
    }
    /* The entry stays mapped while the WebSocket lives: keep it small. */
    free(p->out);
    p->out = NULL;
    p->out_cap = 0;
    wake(p);
    pthread_mutex_unlock(&p->mu);
}

/* Called by loop.c: the session went to a WebSocket, or its linger ended. */
void sio__poll_unmap(struct sio_engine *e, struct sio_poll *p)
{
    poll_unmap(e, p);
}

void sio__poll_forget(struct sio_engine *e, uint64_t sid)
{
    char s[21];
    sio__sid_string(sid, s);
    struct sio_poll *p = sio__poll_find(e, s);
    if (p == NULL)
        return;
    poll_unmap(e, p);
    sio__poll_release(p);
}

void sio__poll_batch(struct sio_poll *p, bool begin)
{
    pthread_mutex_lock(&p->mu);
    p->batch = begin;
    /* Only with something to say: a POST whose packets went elsewhere (a CONNECT handed to
     * an auth worker) must not release the waiting GET with a bare noop. */
    if (!begin && (p->out_len > 0 || p->closed))
        wake(p);
    pthread_mutex_unlock(&p->mu);
}
