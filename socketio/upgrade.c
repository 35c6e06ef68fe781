/*
 * upgrade.c - the HTTP side of the engine: a GET /socket.io/?EIO=4&transport=websocket
 * request is validated on a libmicrohttpd thread, answered 101, and its socket is taken out
 * of libmicrohttpd and handed to a loop thread (STACK-NOTES §2, §9).
 *
 * In the upgrade callback: dup the socket (F_DUPFD_CLOEXEC), copy extra_in (it lives in
 * libmicrohttpd's connection pool), MHD_upgrade_action(CLOSE) so libmicrohttpd frees its pool
 * and forgets the connection (it no longer counts against its connection limit), and post the
 * fd to a loop, round-robin. The gateway owns and closes the dup'ed fd from then on.
 *
 * What the session needs from the request (Authorization: Bearer, X-Session-Token, the token
 * query parameter) is copied before the upgrade: MHD's strings die with the request.
 *
 * Errors follow the reference server: {"code":0,"message":"Transport unknown"},
 * {"code":1,"message":"Session ID unknown"}, {"code":2,"message":"Bad handshake method"},
 * {"code":3,"message":"Bad request"}, {"code":5,"message":"Unsupported protocol version"},
 * all 400. Long-polling requests go to polling.c.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "socketio/sio_internal.h"

/* The per-request state of a WebSocket handshake (*con_cls), freed by
 * sio_engine_http_request_done. Polling requests have their own (polling.c); kind tells. */
struct sio_req {
    int kind; /* 0; must stay first */
    struct sio_engine *e;
    struct sio_poll *poll; /* the polling session this WebSocket upgrades, with a ref */
    char *jwt;
    char *session;
    char *qtoken;
    bool eio_echo; /* --conformance /engine.io/ */
    bool refuse;   /* a second upgrade of a session: closed once upgraded */
    bool probing;  /* counted in poll->probing (polling.c: GETs wait for the probe) */
};

static enum MHD_Result reply_json(struct MHD_Connection *conn, unsigned status, const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *conn, int code, const char *message)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"code\":%d,\"message\":\"%s\"}", code, message);
    return reply_json(conn, MHD_HTTP_BAD_REQUEST, body);
}

static void upgrade_cb(void *cls, struct MHD_Connection *connection, void *con_cls,
                       const char *extra_in, size_t extra_in_size, MHD_socket sock,
                       struct MHD_UpgradeResponseHandle *urh)
{
    (void)connection;
    (void)con_cls;
    struct sio_req *rq = cls;
    struct sio_engine *e = rq->e;
    if (rq->refuse) {
        /* WebSocket close 1000, then libmicrohttpd closes the socket. */
        static const uint8_t close_frame[4] = {0x88, 0x02, 0x03, 0xe8};
        ssize_t w = send(sock, close_frame, sizeof(close_frame), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    int fd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
    uint8_t *extra = NULL;
    if (fd >= 0 && extra_in_size > 0) {
        extra = xmalloc(extra_in_size);
        memcpy(extra, extra_in, extra_in_size);
    }
    /* libmicrohttpd closes its own fd and frees the pool; ours stays open. Never touch urh or
     * extra_in again. */
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    if (fd < 0) {
        log_warn("socketio: dup of an upgraded socket");
        return;
    }
    if (!atomic_load(&e->running)) {
        free(extra);
        close(fd);
        return;
    }
    struct sio_msg *m = xcalloc(1, sizeof(*m));
    m->type = SIO_MSG_NEW_CONN;
    m->fd = fd;
    m->extra = extra;
    m->extra_len = extra ? extra_in_size : 0;
    m->jwt = rq->jwt;
    m->session = rq->session;
    m->qtoken = rq->qtoken;
    m->eio_echo = rq->eio_echo;
    rq->jwt = rq->session = rq->qtoken = NULL;
    if (rq->poll != NULL) {
        /* The probe goes to the loop of the session it upgrades. */
        m->poll = rq->poll;
        m->probing = rq->probing;
        rq->poll = NULL;
        rq->probing = false;
        sio__mpsc_push(&m->poll->loop->q, m);
        return;
    }
    unsigned i = atomic_fetch_add_explicit(&e->rr, 1, memory_order_relaxed) % (unsigned)e->nloops;
    sio__mpsc_push(&e->loops[i].q, m);
}

enum MHD_Result sio_engine_http_request(void *cls, struct MHD_Connection *conn, const char *url,
                                        const char *method, const char *upload_data,
                                        size_t *upload_data_size, void **con_cls)
{
    (void)url;
    (void)upload_data;
    struct sio_engine *e = cls;
    const char *eio = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "EIO");
    const char *transport = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "transport");
    const char *sid = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "sid");
    if (eio != NULL && strcmp(eio, "4") == 0 && transport != NULL &&
        strcmp(transport, "polling") == 0)
        return sio__polling_request(e, conn, url, method, sid, upload_data, upload_data_size,
                                    con_cls);
    if (*con_cls == NULL) {
        /* First call: headers only. Answering now would cost keep-alive (STACK-NOTES §3). */
        struct sio_req *rq = xcalloc(1, sizeof(*rq));
        rq->e = e;
        rq->eio_echo = sio__conformance_eio_path(e, url);
        *con_cls = rq;
        return MHD_YES;
    }
    struct sio_req *rq = *con_cls;
    if (*upload_data_size > 0) {
        *upload_data_size = 0; /* a body on a handshake is ignored */
        return MHD_YES;
    }
    if (eio == NULL || strcmp(eio, "4") != 0)
        return reply_error(conn, 5, "Unsupported protocol version");
    if (transport == NULL || strcmp(transport, "websocket") != 0)
        return reply_error(conn, 0, "Transport unknown");
    if (strcmp(method, "GET") != 0)
        return reply_error(conn, 2, "Bad handshake method");
    const char *upgrade = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade");
    const char *connection = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Connection");
    const char *version =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    char accept[29];
    if (!util_header_has_token(upgrade, "websocket") ||
        !util_header_has_token(connection, "upgrade") || version == NULL ||
        strcmp(version, "13") != 0 || key == NULL || strlen(key) != 24 ||
        sio__ws_accept(key, accept) != 0)
        return reply_error(conn, 3, "Bad request");
    if (!atomic_load(&e->running))
        return reply_error(conn, 3, "Bad request");
    if (sid != NULL) {
        /* The upgrade of a polling session: it must exist and not be upgraded already. */
        if (rq->poll == NULL)
            rq->poll = sio__poll_find(e, sid);
        bool ok = false, busy = false;
        if (rq->poll != NULL) {
            pthread_mutex_lock(&rq->poll->mu);
            ok = !rq->poll->closed && !rq->poll->upgraded && !rq->poll->upgrading;
            busy = !rq->poll->closed && (rq->poll->upgraded || rq->poll->upgrading);
            if (ok && !rq->probing) {
                /* From now on GETs of the session wait until the loop has read this probe:
                 * the client may send "5" on it and then a GET (polling.c). */
                rq->poll->probing++;
                rq->probing = true;
            }
            pthread_mutex_unlock(&rq->poll->mu);
        }
        if (busy) {
            /* A second upgrade of a live session: the reference accepts the WebSocket and
             * closes it at once (upgrade_cb). */
            sio__poll_release(rq->poll);
            rq->poll = NULL;
            rq->refuse = true;
        } else if (!ok) {
            return reply_error(conn, 1, "Session ID unknown");
        }
    }

    const char *authz = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    const char *bearer = authz ? auth_bearer_from_header(authz) : NULL;
    const char *session = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Session-Token");
    const char *qtoken = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "token");
    sio__free_secret(rq->jwt);
    sio__free_secret(rq->session);
    sio__free_secret(rq->qtoken);
    rq->jwt = (bearer && *bearer) ? xstrdup(bearer) : NULL;
    rq->session = (session && *session) ? xstrdup(session) : NULL;
    rq->qtoken = (qtoken && *qtoken) ? xstrdup(qtoken) : NULL;

    struct MHD_Response *r = MHD_create_response_for_upgrade(upgrade_cb, rq);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
    MHD_destroy_response(r);
    return ret;
}

void sio_engine_http_request_done(void *cls, void *con_cls)
{
    (void)cls;
    struct sio_req *rq = con_cls;
    if (rq == NULL)
        return;
    if (rq->kind != 0) {
        sio__polling_request_done(con_cls);
        return;
    }
    if (rq->probing && rq->poll != NULL)
        sio__poll_probe_gone(rq->poll);
    sio__poll_release(rq->poll);
    sio__free_secret(rq->jwt);
    sio__free_secret(rq->session);
    sio__free_secret(rq->qtoken);
    free(rq);
}

/* ---- the accept loop's fast path ------------------------------------------------------- */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes [s, e) ("%XX" and '+' as libmicrohttpd does) into out (cap > e - s). Returns the
 * length, or -1 on a malformed escape. */
static ssize_t query_decode(const char *s, const char *e, char *out)
{
    size_t n = 0;
    while (s < e) {
        if (*s == '%') {
            int hi, lo;
            if (e - s < 3 || (hi = hexval(s[1])) < 0 || (lo = hexval(s[2])) < 0)
                return -1;
            out[n++] = (char)(hi * 16 + lo);
            s += 3;
        } else {
            out[n++] = *s == '+' ? ' ' : *s;
            s++;
        }
    }
    out[n] = '\0';
    return (ssize_t)n;
}

/* The first value of name in the raw query: *val (malloc'ed, decoded) or NULL when absent.
 * Returns false on a malformed query (then the request goes the slow way). */
static bool query_get(const char *q, const char *name, char **val)
{
    size_t nl = strlen(name);
    *val = NULL;
    while (*q != '\0') {
        const char *amp = strchr(q, '&');
        const char *end = amp != NULL ? amp : q + strlen(q);
        const char *eq = memchr(q, '=', (size_t)(end - q));
        const char *kend = eq != NULL ? eq : end;
        if ((size_t)(kend - q) == nl && memcmp(q, name, nl) == 0) {
            const char *vs = eq != NULL ? eq + 1 : end;
            char *out = xmalloc((size_t)(end - vs) + 1);
            ssize_t n = query_decode(vs, end, out);
            if (n < 0 || strlen(out) != (size_t)n) { /* a NUL would cut the value */
                free(out);
                return false;
            }
            *val = out;
            return true;
        }
        q = amp != NULL ? amp + 1 : end;
    }
    return true;
}

/* True when the query's value of name is exactly want. */
static bool query_is(const char *q, const char *name, const char *want)
{
    char *v;
    bool ok;
    if (!query_get(q, name, &v) || v == NULL)
        return false;
    ok = strcmp(v, want) == 0;
    free(v);
    return ok;
}

bool sio_engine_ws_accepts(struct sio_engine *e, const struct sio_ws_handshake *h)
{
    char *sid, *tok;
    if (!atomic_load(&e->running))
        return false;
    if (!query_is(h->query, "EIO", "4") || !query_is(h->query, "transport", "websocket"))
        return false;
    /* The upgrade of a polling session (sid) is rare: libmicrohttpd's path serves it. */
    if (!query_get(h->query, "sid", &sid) || sid != NULL) {
        free(sid);
        return false;
    }
    if (!query_get(h->query, "token", &tok))
        return false;
    sio__free_secret(tok);
    return true;
}

void sio_engine_ws_take(struct sio_engine *e, int fd, const struct sio_ws_handshake *h)
{
    static const char fmt[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n";
    char accept[29];
    char *tok = NULL;

    if (!atomic_load(&e->running) || sio__ws_accept(h->key, accept) != 0 ||
        !query_get(h->query, "token", &tok)) {
        close(fd);
        return;
    }
    struct sio_msg *m = xcalloc(1, sizeof(*m));
    m->type = SIO_MSG_NEW_CONN;
    m->fd = fd;
    char head[sizeof(fmt) + 32];
    int n = snprintf(head, sizeof(head), fmt, accept);
    m->hello = sio_sbuf_new((size_t)n);
    memcpy(m->hello->data, head, (size_t)n);
    const char *bearer = h->authorization ? auth_bearer_from_header(h->authorization) : NULL;
    m->jwt = (bearer && *bearer) ? xstrdup(bearer) : NULL;
    m->session = (h->session_token && *h->session_token) ? xstrdup(h->session_token) : NULL;
    if (tok != NULL && *tok != '\0')
        m->qtoken = tok;
    else
        sio__free_secret(tok);
    m->eio_echo = sio__conformance_eio_path(e, h->path);
    /* Accepted by a loop's hosted accept worker: that loop serves it, with no hand-off. */
    struct sio_loop *self = sio__loop_current();
    if (self != NULL && self->e == e) {
        sio__loop_take(self, m);
        return;
    }
    unsigned i = atomic_fetch_add_explicit(&e->rr, 1, memory_order_relaxed) % (unsigned)e->nloops;
    sio__mpsc_push(&e->loops[i].q, m);
}
