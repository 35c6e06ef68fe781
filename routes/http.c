/*
 * http.c - the libmicrohttpd daemon of the gateway: request lifecycle, dispatch through the
 * route table of api.c, authentication and the activity throttle, CORS, error answers,
 * /healthz, /readyz, /metrics, the request timeout, and the hand-off of /socket.io/ (and
 * /engine.io/ in conformance mode) to the Socket.IO engine's hook.
 *
 * Request lifecycle (STACK-NOTES §3, keep-alive pitfall): the first access-handler call only
 * allocates the request and returns MHD_YES; body chunks go to our own buffer, bounded by
 * MAX_PAYLOAD_BYTES (so MHD's per-connection pool stays small); the last call (upload size 0)
 * dispatches and queues the answer. The request is freed in the completion callback.
 * The one exception is a Content-Length above the limit: 413 is queued on the first call, so
 * that MHD never reads the body and closes the connection after the answer. A chunked body
 * that outgrows the limit is discarded as it comes (within the request timeout) and answered
 * 413 with Connection: close once it ends, so that the client, still sending, reads it.
 *
 * DESIGN (accept loop). libmicrohttpd has no listening socket (MHD_USE_NO_LISTEN_SOCKET |
 * MHD_USE_ITC): acceptor.c owns it (its workers run on the engine's loops when the engine hosts
 * them, else on threads of their own), answers nothing itself, and either hands a complete
 * WebSocket upgrade head under the engine's paths to the engine's engine_ws_take hook (the
 * fast path: no MHD connection, pool or upgrade at all) or passes the socket to
 * MHD_add_connection with nothing consumed. An upgrade that arrives later on a kept-alive
 * connection still goes through engine_request (the dup recipe in socketio/upgrade.c). The
 * acceptor closes heads that do not complete within REQUEST_TIMEOUT_MS and keeps its sockets
 * plus MHD's within MAX_CONNECTIONS (mhd_conns counts MHD's: up on MHD_add_connection, down on
 * NOTIFY_CONNECTION "closed").
 *
 * DESIGN (request timeout). MHD's CONNECTION_TIMEOUT is an idle timeout: a client that sends
 * one header byte every 300 ms never trips it. Every connection therefore gets a small record
 * (struct route_conn, via MHD_OPTION_NOTIFY_CONNECTION) with a deadline: accept or end of the
 * previous request + REQUEST_TIMEOUT_MS while waiting for a request line, then request line +
 * REQUEST_TIMEOUT_MS (the URI log callback fires when the line is parsed) until the request
 * is complete. A watchdog thread scans the records a few times per timeout and, for an expired
 * one, writes a 408 (when a request was under way, or none was ever seen on the connection;
 * an idle keep-alive connection is closed silently) and shutdown()s the socket; MHD then sees
 * the end of stream on its own thread and closes the connection. A request that completes
 * late is answered 408 with Connection: close by the access handler itself.
 * shutdown() is safe from another thread because MHD fires NOTIFY_CONNECTION "closed" (which
 * removes the record under the same mutex) before it close()s the fd, so the fd number
 * cannot have been reused while we hold the mutex. Connections handed to the Socket.IO engine
 * for a WebSocket upgrade are exempt for good (the engine takes the socket and runs its own
 * ping deadlines); polling requests are exempt while the engine holds them.
 * The record costs ~64 bytes per connection MHD holds; upgraded sockets leave MHD at once
 * (STACK-NOTES §9) and so do not keep one.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <utlist.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xmalloc.h"
#include "middleware/throttle.h"
#include "routes/http.h"
#include "routes/route_internal.h"

#define CORS_ALLOW_HEADERS "Authorization, Content-Type, X-Session-Token"
#define CORS_MAX_AGE "600"
#define DEFAULT_CONNECTION_LIMIT 4096
#define MHD_POOL_BYTES (16 * 1024)
#define BODY_INITIAL_CAP 1024

enum conn_phase {
    CONN_WAITING = 0, /* between requests, or before the request line */
    CONN_REQUEST,     /* request line seen, head or body still arriving */
    CONN_BUSY,        /* answer queued, or request held by the engine: not timed by us */
};

struct route_conn {
    int fd;
    enum conn_phase phase;
    bool exempt;         /* taken by the Socket.IO engine for an upgrade */
    bool killed;         /* the watchdog already shut it down */
    bool served;         /* a request completed on it: waiting now means idle keep-alive */
    int64_t deadline_ms; /* monotonic */
    struct route_conn *prev, *next;
};

struct http_server {
    struct http_server_view v;
    struct MHD_Daemon *daemon;
    int port;
    int64_t timeout_ms;
    /* connection records and the watchdog */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct route_conn *conns;
    bool stopping;
    bool watchdog_started;
    pthread_t watchdog;
    /* the accept loop (acceptor.c) and what libmicrohttpd holds of the connection limit */
    struct route_acceptor *acc;
    unsigned limit;
    atomic_uint mhd_conns; /* passed to MHD_add_connection and not yet closed */
};

const struct http_server_view *route__server(const struct route_req *r)
{
    return &r->srv->v;
}

/* --- answers --------------------------------------------------------------------------------- */

void route__json(struct route_req *r, unsigned int status, json_t *body)
{
    if (r->json != NULL)
        json_decref(r->json);
    r->status = status;
    r->json = body;
}

void route__error(struct route_req *r, unsigned int status, const char *code, const char *message)
{
    route__json(r, status, json_pack("{s:s, s:s}", "error", code, "message", message));
    if (status == MHD_HTTP_UNAUTHORIZED)
        r->www_authenticate = true;
}

void route__store_error(struct route_req *r, int err, const char *what)
{
    char msg[160];

    switch (err) {
    case STORE_ERR_NOT_FOUND:
        snprintf(msg, sizeof(msg), "%s not found", what);
        route__error(r, MHD_HTTP_NOT_FOUND, "not_found", msg);
        break;
    case STORE_ERR_CONFLICT:
        snprintf(msg, sizeof(msg), "%s already exists", what);
        route__error(r, MHD_HTTP_CONFLICT, "conflict", msg);
        break;
    case STORE_ERR_INVALID:
        snprintf(msg, sizeof(msg), "invalid %s", what);
        route__error(r, MHD_HTTP_BAD_REQUEST, "bad_request", msg);
        break;
    case STORE_ERR_UNAVAILABLE:
        route__error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "the store is unavailable");
        break;
    default:
        route__error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "internal error");
        break;
    }
}

json_t *route__body_object(struct route_req *r)
{
    json_error_t jerr;
    json_t *j;

    if (r->body_len == 0) {
        route__error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "a JSON object body is required");
        return NULL;
    }
    j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        route__error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "the body is not valid JSON");
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        route__error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

bool route__live(struct route_req *r, const char *person_id)
{
    const struct http_hooks *h = r->srv->v.hooks;

    if (h == NULL || h->live_connections == NULL)
        return false;
    return h->live_connections(h->cls, person_id) > 0;
}

/* --- connection records (timeout) ------------------------------------------------------------ */

static struct route_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    struct route_conn *c;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c = xcalloc(1, sizeof(*c));
        c->fd = ci != NULL ? ci->connect_fd : -1;
        c->phase = CONN_WAITING;
        c->deadline_ms = util_mono_ms() + s->timeout_ms;
        pthread_mutex_lock(&s->lock);
        DL_APPEND(s->conns, c);
        pthread_mutex_unlock(&s->lock);
        *socket_context = c;
        return;
    }
    c = *socket_context;
    if (c == NULL)
        return;
    atomic_fetch_sub_explicit(&s->mhd_conns, 1, memory_order_relaxed);
    pthread_mutex_lock(&s->lock);
    DL_DELETE(s->conns, c);
    pthread_mutex_unlock(&s->lock);
    free(c);
    *socket_context = NULL;
}

/* Called by MHD once the request line is parsed: the request's clock starts here (the
 * closest to its first byte that MHD tells). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_server *s = cls;
    struct route_conn *c = conn_of(conn);

    (void)uri;
    if (c != NULL) {
        pthread_mutex_lock(&s->lock);
        if (c->phase == CONN_WAITING) {
            c->phase = CONN_REQUEST;
            c->deadline_ms = util_mono_ms() + s->timeout_ms;
        }
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

static void *watchdog_main(void *arg)
{
    static const char body[] =
        "{\"error\":\"request_timeout\",\"message\":\"the request was not complete in time\"}";
    struct http_server *s = arg;
    util_thread_name("watchdog");
    int64_t period_ms = s->timeout_ms / 5;
    char head[256];
    int head_len;

    if (period_ms < 20)
        period_ms = 20;
    if (period_ms > 250)
        period_ms = 250;
    head_len = snprintf(head, sizeof(head),
                        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                        sizeof(body) - 1, body);

    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(period_ms % 1000) * 1000000L;
        ts.tv_sec += period_ms / 1000 + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        if (s->stopping)
            break;

        int64_t now = util_mono_ms();
        struct route_conn *c;
        DL_FOREACH(s->conns, c)
        {
            if (c->exempt || c->killed || c->fd < 0 || c->phase == CONN_BUSY ||
                now < c->deadline_ms)
                continue;
            /* MHD is not writing to this socket (no answer queued), so our 408 cannot
             * interleave with its output; the fd stays valid while we hold the lock. An idle
             * keep-alive connection is closed silently: a client may be sending its next
             * request right now and must not take a 408 for its answer. A fresh connection
             * with no request line yet gets the 408 (it may be dribbling that line). */
            if ((c->phase == CONN_REQUEST || !c->served) && head_len > 0)
                (void)send(c->fd, head, (size_t)head_len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (shutdown(c->fd, SHUT_RDWR) != 0 && errno != ENOTCONN)
                log_warn("%s: shutdown", __func__);
            c->killed = true;
            log_debug("%s: closed a connection with no complete request after %" PRId64 " ms",
                      __func__, s->timeout_ms);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* --- MHD plumbing ---------------------------------------------------------------------------- */

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    size_t n;

    (void)cls;
    vsnprintf(buf, sizeof(buf), fmt, ap);
    n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    /* Peers that vanish or time out are routine on a public port; keep them out of warn. */
    if (strstr(buf, "closure") != NULL || strstr(buf, "closed") != NULL ||
        strstr(buf, "timed out") != NULL || strstr(buf, "reset") != NULL)
        log_debug("[HTTP] %s", buf);
    else
        log_warnx("[HTTP] %s", buf);
}

static void req_free(struct route_req *r)
{
    if (r->authed)
        auth_result_clear(&r->auth);
    if (r->json != NULL)
        json_decref(r->json);
    free(r->text);
    free(r->body);
    free(r->path);
    free(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *s = cls;
    struct route_req *r = *con_cls;

    (void)toe;
    if (r == NULL)
        return;
    *con_cls = NULL;
    if (r->engine && s->v.hooks != NULL && s->v.hooks->engine_request_done != NULL)
        s->v.hooks->engine_request_done(s->v.hooks->cls, r->engine_cls);
    if (r->track != NULL) {
        pthread_mutex_lock(&s->lock);
        r->track->served = true;
        if (!r->track->exempt) {
            r->track->phase = CONN_WAITING;
            r->track->deadline_ms = util_mono_ms() + s->timeout_ms;
        }
        pthread_mutex_unlock(&s->lock);
    }
    req_free(r);
}

static const char *header(struct route_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static void add_cors(struct route_req *r, struct MHD_Response *resp, bool preflight, int methods)
{
    const char *allow = r->srv->v.cfg->cors_origins;
    const char *origin;

    if (allow == NULL || *allow == '\0')
        return;
    MHD_add_response_header(resp, "Vary", "Origin");
    origin = header(r, "Origin");
    if (!route__cors_allowed(allow, origin))
        return;
    /* Echo the origin even for "*": a wildcard forbids credentials in browsers. */
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Access-Control-Allow-Credentials", "true");
    if (preflight) {
        char text[96];
        route__allow_text(methods | ROUTE_OPTIONS, text, sizeof(text));
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", text);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
        MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE);
    }
}

/* Queues r's answer. */
static enum MHD_Result send_answer(struct route_req *r, bool preflight, int methods)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    char ka[48];

    if (r->status == 0)
        route__error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "no answer");
    if (r->text != NULL) {
        resp = MHD_create_response_from_buffer(r->text_len, r->text, MHD_RESPMEM_MUST_FREE);
        r->text = NULL;
    } else if (r->json != NULL) {
        char *s = json_dumps(r->json, JSON_COMPACT);
        if (s == NULL)
            fatal("%s: out of memory", __func__);
        resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
        r->content_type = "application/json; charset=utf-8";
    } else {
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    }
    if (resp == NULL)
        return MHD_NO;
    if (r->content_type != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (r->www_authenticate)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->allow != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    add_cors(r, resp, preflight, methods);
    if (r->close) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    } else {
        /* Tell keep-alive clients when we drop an idle connection, so they do not reuse a
         * socket we are closing. */
        snprintf(ka, sizeof(ka), "timeout=%" PRId64,
                 r->srv->timeout_ms / 1000 > 0 ? r->srv->timeout_ms / 1000 : 1);
        MHD_add_response_header(resp, "Keep-Alive", ka);
    }
    r->responded = true;
    ret = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* --- authentication -------------------------------------------------------------------------- */

static bool role_is_admin(const char *role)
{
    return strcmp(role, "ADMIN") == 0 || strcmp(role, "BIGBOSS") == 0;
}

static void auth_error(struct route_req *r, int err)
{
    switch (err) {
    case AUTH_ERR_MISSING:
        route__error(r, MHD_HTTP_UNAUTHORIZED, "unauthorized", "authentication required");
        break;
    case AUTH_ERR_INVALID_TOKEN:
        route__error(r, MHD_HTTP_UNAUTHORIZED, "unauthorized", "invalid or expired token");
        break;
    case AUTH_ERR_UNKNOWN_PERSON:
        route__error(r, MHD_HTTP_UNAUTHORIZED, "unauthorized", "unknown or inactive account");
        break;
    case AUTH_ERR_FORBIDDEN:
        route__error(r, MHD_HTTP_FORBIDDEN, "forbidden", "admin role required");
        break;
    case AUTH_ERR_STORE:
        route__error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "the store is unavailable");
        break;
    default:
        route__error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "authentication failed");
        break;
    }
}

/* Authenticates r at the route's level. Returns true when the handler may run; otherwise the
 * error answer is set. */
static bool authenticate(struct route_req *r, enum route_auth level)
{
    const struct http_server_view *v = &r->srv->v;
    const char *authz = header(r, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *bearer = NULL, *session = NULL;
    int64_t now_s = util_now_ms() / 1000;
    int err;

    if (level == ROUTE_OPEN)
        return true;
    if (authz != NULL) {
        bearer = auth_bearer_from_header(authz);
        if (bearer == NULL) {
            auth_error(r, AUTH_ERR_INVALID_TOKEN);
            return false;
        }
    } else {
        session = header(r, "X-Session-Token");
        if (session != NULL && *session == '\0')
            session = NULL;
    }

    err = auth_authenticate(v->auth, bearer, session, level == ROUTE_ADMIN, now_s, &r->auth);
    if (err == AUTH_ERR_UNKNOWN_PERSON && level == ROUTE_MEMBER && bearer != NULL) {
        /* An admin service token whose id is not in the store may read any conversation. */
        err = auth_authenticate(v->auth, bearer, NULL, true, now_s, &r->auth);
        if (err == AUTH_ERR_FORBIDDEN)
            err = AUTH_ERR_UNKNOWN_PERSON;
    }
    if (err != 0) {
        auth_error(r, err);
        return false;
    }
    r->authed = true;
    /* Admin: the claim, and the stored role when the id is in the store (a demoted admin's
     * old token no longer counts). */
    r->is_admin =
        r->auth.claims.is_admin &&
        (!r->auth.has_person || (!r->auth.person.is_anonymous && r->auth.person.is_active &&
                                 role_is_admin(r->auth.person.role)));
    if (level == ROUTE_ADMIN && !r->is_admin) {
        route__error(r, MHD_HTTP_FORBIDDEN, "forbidden", "admin role required");
        return false;
    }

    /* The activity throttle (SPEC §2.3): one lastActiveAt write per person per window. The
     * person was read before the write was queued: show the caller what was written. */
    /* Wall time, as the Socket.IO engine uses: the throttle keeps one clock for a person
     * whose activity arrives through both paths. */
    int64_t now_ms = util_now_ms();
    if (r->auth.has_person && v->throttle != NULL &&
        throttle_should_write(v->throttle, r->auth.person.id, now_ms)) {
        store_presence_activity(v->store, r->auth.person.id, r->auth.person.is_anonymous, now_ms);
        r->auth.person.last_active_at_ms = now_ms;
    }
    return true;
}

/* --- built-in routes ------------------------------------------------------------------------- */

static void handle_healthz(struct route_req *r)
{
    route__json(r, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"));
}

static void handle_readyz(struct route_req *r)
{
    struct store *st = r->srv->v.store;

    if (st != NULL && store_ping(st))
        route__json(r, MHD_HTTP_OK,
                    json_pack("{s:s, s:s}", "status", "ready", "store", store_backend_name(st)));
    else
        route__error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "the store is not ready");
}

static void handle_metrics(struct route_req *r)
{
    const struct http_server_view *v = &r->srv->v;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    struct metrics_external ext = {0};

    if (ci == NULL || !route__is_loopback(ci->client_addr)) {
        /* Off loopback, /metrics needs an admin token. */
        if (!authenticate(r, ROUTE_ADMIN))
            return;
    }
    if (v->throttle != NULL) {
        struct throttle_stats ts;
        throttle_get_stats(v->throttle, &ts);
        ext.activity_written = ts.written;
        ext.activity_throttled = ts.throttled;
    }
    if (v->store != NULL) {
        struct store_stats ss;
        store_get_stats(v->store, &ss);
        ext.db_updates_total = ss.rows_written;
        ext.db_write_failures_total = ss.write_failures;
        ext.db_queue_length = ss.queue_length;
        ext.db_queue_dropped_total = ss.queue_dropped;
        struct store_cache_stats cs;
        store_cache_get_stats(v->store, &cs);
        ext.person_cache_hits_total = cs.hits;
        ext.person_cache_misses_total = cs.misses;
        ext.reconnect_tickets_used_total = cs.ticket_hits;
    }
    r->text = metrics_render(&ext, &r->text_len);
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    r->status = MHD_HTTP_OK;
}

static const struct route_def builtin_routes[] = {
    {ROUTE_GET, "/healthz", handle_healthz, ROUTE_OPEN},
    {ROUTE_GET, "/readyz", handle_readyz, ROUTE_OPEN},
    {ROUTE_GET, "/metrics", handle_metrics, ROUTE_OPEN},
};

/* --- dispatch -------------------------------------------------------------------------------- */

static bool is_engine_path(const struct http_server *s, const char *url)
{
    if (strncmp(url, "/socket.io/", 11) == 0 || strcmp(url, "/socket.io") == 0)
        return true;
    return s->v.cfg->conformance &&
           (strncmp(url, "/engine.io/", 11) == 0 || strcmp(url, "/engine.io") == 0);
}

/* Finds the route for r: sets r->route and the params, or returns the mask of the methods the
 * path accepts (0: unknown path). */
static int find_route(struct route_req *r)
{
    int mask = 0;
    int want = r->method == ROUTE_HEAD ? ROUTE_GET : r->method;
    const struct route_def *tables[2] = {builtin_routes, route__table};
    size_t lens[2] = {sizeof(builtin_routes) / sizeof(builtin_routes[0]), route__table_len};
    int ntables = r->srv->v.cfg->conformance ? 1 : 2; /* no product API in conformance mode */

    for (int t = 0; t < ntables; t++) {
        for (size_t i = 0; i < lens[t]; i++) {
            const struct route_def *d = &tables[t][i];
            char params[ROUTE_MAX_PARAMS][ROUTE_PARAM_LEN];
            int n = 0;
            if (!route__match(d->pattern, r->path, params, &n))
                continue;
            mask |= d->method;
            if (d->method == want && r->route == NULL) {
                r->route = d;
                memcpy(r->params, params, sizeof(params));
                r->nparams = n;
            }
        }
    }
    if (mask & ROUTE_GET)
        mask |= ROUTE_HEAD;
    return mask;
}

static enum MHD_Result dispatch(struct route_req *r)
{
    char allow[96];
    int mask = find_route(r);

    if (r->track != NULL) {
        bool late;
        /* The request is in: from here its time is the handler's (the store bounds its own
         * waits), and the watchdog must not write a 408 while MHD may write our answer. */
        pthread_mutex_lock(&r->srv->lock);
        late = util_mono_ms() > r->track->deadline_ms && r->track->phase == CONN_REQUEST;
        r->track->phase = CONN_BUSY;
        pthread_mutex_unlock(&r->srv->lock);
        if (late) {
            r->close = true;
            route__error(r, MHD_HTTP_REQUEST_TIMEOUT, "request_timeout",
                         "the request was not complete in time");
            return send_answer(r, false, 0);
        }
    }
    if (r->too_large) {
        r->close = true;
        route__error(r, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                     "the body is larger than MAX_PAYLOAD_BYTES");
        return send_answer(r, false, 0);
    }
    if (mask == 0) {
        route__error(r, MHD_HTTP_NOT_FOUND, "not_found", "no such route");
        return send_answer(r, false, 0);
    }
    route__allow_text(mask | ROUTE_OPTIONS, allow, sizeof(allow));
    if (r->method == ROUTE_OPTIONS) {
        r->status = MHD_HTTP_NO_CONTENT;
        r->allow = allow;
        return send_answer(r, true, mask);
    }
    if (r->route == NULL) {
        r->allow = allow;
        route__error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                     "method not allowed on this route");
        return send_answer(r, false, 0);
    }
    if (authenticate(r, r->route->auth))
        r->route->handler(r);
    return send_answer(r, false, 0);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_server *s = cls;
    struct route_req *r = *con_cls;

    (void)version;
    if (r == NULL) {
        r = xcalloc(1, sizeof(*r));
        r->srv = s;
        r->conn = conn;
        r->track = conn_of(conn);
        r->method = route__method_bit(method);
        r->path = xstrdup(url);
        *con_cls = r;
        METRIC_INC(http_requests_total);

        if (is_engine_path(s, url)) {
            const struct http_hooks *h = s->v.hooks;
            if (h != NULL && h->engine_request != NULL) {
                const char *up = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade");
                r->engine = true;
                if (r->track != NULL) {
                    pthread_mutex_lock(&s->lock);
                    r->track->phase = CONN_BUSY;
                    /* An upgrade takes the socket out of MHD: never time it here. */
                    if (up != NULL)
                        r->track->exempt = true;
                    pthread_mutex_unlock(&s->lock);
                }
            }
        }
        if (!r->engine) {
            const char *cl =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl != NULL) {
                char *end;
                errno = 0;
                unsigned long long n = strtoull(cl, &end, 10);
                if (errno != 0 || end == cl ||
                    n > (unsigned long long)s->v.cfg->max_payload_bytes) {
                    /* Answer now: MHD then skips the body and closes the connection. */
                    r->too_large = true;
                    return dispatch(r);
                }
            }
            return MHD_YES;
        }
    }

    if (r->engine)
        return s->v.hooks->engine_request(s->v.hooks->cls, conn, url, method, upload_data,
                                          upload_data_size, &r->engine_cls);

    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large || r->responded)
            return MHD_YES;
        if (r->body_len + n > (size_t)s->v.cfg->max_payload_bytes) {
            /* A chunked body has no Content-Length to refuse up front. Drop what came and
             * discard the rest (the request timeout bounds how long), then answer 413: a
             * client still sending would miss an answer queued now. */
            r->too_large = true;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return MHD_YES;
        }
        if (r->body_len + n > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : BODY_INITIAL_CAP;
            while (cap < r->body_len + n)
                cap *= 2;
            r->body = xrealloc(r->body, cap);
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        return MHD_YES;
    }
    if (r->responded)
        return MHD_YES;
    return dispatch(r);
}

/* --- lifecycle ------------------------------------------------------------------------------- */

static int resolve(const char *host, int port, struct sockaddr_storage *out, socklen_t *len)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[8];
    int rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(host != NULL && *host != '\0' ? host : NULL, portstr, &hints, &res);
    if (rc != 0) {
        log_warnx("%s: cannot resolve HOST %s: %s", __func__, host ? host : "", gai_strerror(rc));
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* --- the accept loop's side ------------------------------------------------------------------ */

static bool acc_ws_accepts(void *cls, const struct http_ws_head *h)
{
    struct http_server *s = cls;
    const struct http_hooks *hk = s->v.hooks;

    return hk != NULL && hk->engine_ws_accepts != NULL && hk->engine_ws_take != NULL &&
           is_engine_path(s, h->path) && hk->engine_ws_accepts(hk->cls, h);
}

static void acc_ws_take(void *cls, int fd, const struct http_ws_head *h)
{
    struct http_server *s = cls;

    METRIC_INC(http_requests_total);
    s->v.hooks->engine_ws_take(s->v.hooks->cls, fd, h);
}

static void acc_host_run(void *arg, int i)
{
    route__acceptor_run(((struct http_server *)arg)->acc, i);
}

static void acc_host_release(void *arg, int i)
{
    struct http_server *s = arg;
    if (route__acceptor_release(s->acc, i) != 0)
        log_warnx("%s: accept worker %d stopped: no thread for it", __func__, i);
    else
        log_info("[SHUTDOWN] accept worker %d on its own thread until the listener closes", i);
}

static void acc_pass(void *cls, int fd, const struct sockaddr *sa, socklen_t salen)
{
    struct http_server *s = cls;

    /* Counted before MHD sees it: its own count and NOTIFY_CONNECTION come later, on its
     * thread. The "closed" notification takes it back. */
    atomic_fetch_add_explicit(&s->mhd_conns, 1, memory_order_relaxed);
    if (MHD_add_connection(s->daemon, fd, sa, salen) != MHD_YES) {
        /* MHD closed the socket (and never announced the connection). */
        atomic_fetch_sub_explicit(&s->mhd_conns, 1, memory_order_relaxed);
        log_debug("%s: libmicrohttpd refused a connection", __func__);
    }
}

static unsigned acc_others(void *cls)
{
    struct http_server *s = cls;

    return atomic_load_explicit(&s->mhd_conns, memory_order_relaxed);
}

/* The listening socket: non-blocking, the acceptor's. Returns the fd or -1 (logged). */
static int listen_socket(const struct sockaddr_storage *ss, socklen_t sslen, int *port_out)
{
    int fd, one = 1;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);

    fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_warn("%s: socket", __func__);
        return -1;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Accepted sockets inherit it: the Socket.IO loops need not set it on each one. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* Accept a connection once its first bytes are in: the accept loop then finds the head
     * there at once (no epoll round trip: ≈ 10 % less CPU per Socket.IO connect), a client
     * that connects and says nothing costs the process no descriptor and no slot of
     * MAX_CONNECTIONS (the kernel holds it, then hands it over after about a second, and the
     * request timeout runs from there), and REQUEST_TIMEOUT_MS counts from the first byte
     * (SPEC §4). */
    int defer_s = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_s, sizeof(defer_s));
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)ss;
        /* "::" means every address, IPv4 included. */
        int v6only = IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? 0 : 1;
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
    }
    if (bind(fd, (const struct sockaddr *)ss, sslen) != 0) {
        log_warn("%s: bind", __func__);
        goto fail;
    }
    if (listen(fd, 4096) != 0) {
        log_warn("%s: listen", __func__);
        goto fail;
    }
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
        log_warn("%s: getsockname", __func__);
        goto fail;
    }
    *port_out = bound.ss_family == AF_INET6
                    ? ntohs(((struct sockaddr_in6 *)(void *)&bound)->sin6_port)
                    : ntohs(((struct sockaddr_in *)(void *)&bound)->sin_port);
    return fd;

fail:
    close(fd);
    return -1;
}

struct http_server *http_start(const struct gw_config *cfg, struct store *store,
                               struct auth_ctx *auth, struct throttle *throttle,
                               const struct http_hooks *hooks)
{
    struct http_server *s;
    struct sockaddr_storage ss;
    socklen_t sslen;
    /* No listening socket: the acceptor owns it and hands MHD what it should serve; ITC so
     * that MHD_add_connection from the acceptor's thread (a loop's, or its own) wakes MHD's
     * threads. */
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG |
                         MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    unsigned int threads, limit;
    long ncpu;
    int lfd;

    if (resolve(cfg->host, cfg->port, &ss, &sslen) != 0)
        return NULL;

    s = xcalloc(1, sizeof(*s));
    s->v.cfg = cfg;
    s->v.store = store;
    s->v.auth = auth;
    s->v.throttle = throttle;
    s->v.hooks = hooks;
    s->timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 10000;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);

    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    threads = cfg->http_threads > 0 ? (unsigned int)cfg->http_threads
                                    : (unsigned int)(ncpu > 0 ? ncpu : 1);
    limit =
        cfg->max_connections > 0 ? (unsigned int)cfg->max_connections : DEFAULT_CONNECTION_LIMIT;

    s->limit = limit;
    atomic_init(&s->mhd_conns, 0);

    /* The acceptor enforces the limit over its connections and MHD's together; MHD's own
     * limit is split across its workers and counted late, so it gets room to never refuse
     * what the acceptor admitted. */
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger,
        s, /* first, so that it logs the rest */
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, limit * threads + 64u,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MHD_POOL_BYTES,
        /* MHD's own timeout is an idle timeout in whole seconds; the watchdog enforces the
         * budget from the request line. */
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)((s->timeout_ms + 999) / 1000),
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        s, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s, MHD_OPTION_END);
    if (s->daemon == NULL) {
        log_warnx("%s: cannot start the HTTP daemon on %s:%d", __func__, cfg->host, cfg->port);
        goto fail;
    }

    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) {
        log_warnx("%s: cannot start the request-timeout thread", __func__);
        goto fail_daemon;
    }
    s->watchdog_started = true;

    lfd = listen_socket(&ss, sslen, &s->port);
    if (lfd < 0) {
        log_warnx("%s: cannot listen on %s:%d", __func__, cfg->host, cfg->port);
        goto fail_watchdog;
    }
    struct route_acceptor_ops ops = {
        .cls = s,
        .ws_accepts = acc_ws_accepts,
        .ws_take = acc_ws_take,
        .pass = acc_pass,
        .others = acc_others,
    };
    /* Accept on the engine's loops when it can host them: a WebSocket is then taken on the
     * thread that serves it, with no hand-off between threads (bench/results). Otherwise half
     * as many accept threads as HTTP threads: one takes more than 20 000 connects/s, and on 2
     * cores a second one cost ≈ 15 % more CPU per Socket.IO connect than it saved. */
    int hosts = hooks != NULL && hooks->engine_loops != NULL && hooks->engine_host != NULL
                    ? hooks->engine_loops(hooks->cls)
                    : 0;
    unsigned accept_workers = hosts > 0 ? (unsigned)hosts : threads / 2 > 0 ? threads / 2 : 1;
    s->acc = route__acceptor_start(lfd, (int)accept_workers, hosts > 0, s->timeout_ms, limit, &ops);
    if (s->acc == NULL) {
        close(lfd);
        goto fail_watchdog;
    }
    unsigned hosted = 0;
    for (int i = 0; i < hosts; i++) {
        struct http_hosted w = {
            .fd = route__acceptor_fd(s->acc, i),
            .index = i,
            .run = acc_host_run,
            .release = acc_host_release,
            .arg = s,
        };
        if (hooks->engine_host(hooks->cls, i, &w))
            hosted++;
        else if (route__acceptor_release(s->acc, i) != 0)
            log_warnx("%s: accept worker %d has neither a loop nor a thread", __func__, i);
    }
    log_debug("%s: %u HTTP threads, %u accept workers (%u on the engine's loops), connection "
              "limit %u, request timeout %" PRId64 " ms",
              __func__, threads, accept_workers, hosted, limit, s->timeout_ms);
    return s;

fail_watchdog:
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->watchdog, NULL);
fail_daemon:
    MHD_stop_daemon(s->daemon);
fail:
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return NULL;
}

int http_port(const struct http_server *h)
{
    return h->port;
}

void http_quiesce(struct http_server *h)
{
    if (h == NULL)
        return;
    /* MHD has no listening socket of its own: the acceptor's is the only way in. */
    route__acceptor_quiesce(h->acc);
}

void http_stop(struct http_server *h)
{
    if (h == NULL)
        return;
    /* First, so that nothing is handed to the daemon while it stops. */
    route__acceptor_stop(h->acc);
    if (h->watchdog_started) {
        pthread_mutex_lock(&h->lock);
        h->stopping = true;
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->watchdog, NULL);
    }
    /* MHD closes the remaining connections and fires "closed" for each: the records go. */
    if (h->daemon != NULL)
        MHD_stop_daemon(h->daemon);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
