/*
 * test_http.c - the MHD daemon of routes/ in-process, on 127.0.0.1 port 0, driven by raw
 * sockets: keep-alive, 404/405, hooks absent or present (the engine's con_cls protocol), a
 * failing store (503 everywhere it is read), 413 and the request-timeout watchdog.
 *
 * The store, auth and throttle are fakes defined below (this test links routes/ sources
 * alone), so each store call can be made to fail on demand.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/metrics.h"
#include "middleware/throttle.h"
#include "routes/http.h"

/* --- fakes ----------------------------------------------------------------------------------- */

static int fake_store_err; /* when non-zero, every store read/provisioning call returns it */
static atomic_int fake_activity_writes; /* bumped on MHD threads */

struct store {
    int unused;
};
struct auth_ctx {
    int unused;
};
struct throttle {
    int unused;
};

#define USER_ID "0123456789abcdef01234567"

void store_person_clear(struct store_person *p)
{
    free(p->username);
    free(p->display_name);
    free(p->first_name);
    free(p->last_name);
    free(p->email);
    free(p->avatar);
    memset(p, 0, sizeof(*p));
}

static void fake_user(struct store_person *p)
{
    memset(p, 0, sizeof(*p));
    strcpy(p->id, USER_ID);
    p->username = strdup("alice");
    strcpy(p->role, "USER");
    p->is_active = true;
}

void store_conversation_clear(struct store_conversation *c)
{
    free(c->title);
    free(c->type);
    memset(c, 0, sizeof(*c));
}
void store_person_list_free(struct store_person_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        store_person_clear(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof(*l));
}
bool store_ping(struct store *s)
{
    (void)s;
    return fake_store_err == 0;
}
const char *store_backend_name(const struct store *s)
{
    (void)s;
    return "sqlite";
}
void store_get_stats(struct store *s, struct store_stats *out)
{
    (void)s;
    memset(out, 0, sizeof(*out));
}
void store_cache_get_stats(struct store *s, struct store_cache_stats *out)
{
    (void)s;
    memset(out, 0, sizeof(*out));
}
void store_presence_activity(struct store *s, const char *id, bool anon, int64_t at)
{
    (void)s, (void)id, (void)anon, (void)at;
    fake_activity_writes++;
}
int store_person_get(struct store *s, const char *id, struct store_person *out)
{
    (void)s;
    if (fake_store_err)
        return fake_store_err;
    if (strcmp(id, USER_ID) != 0)
        return STORE_ERR_NOT_FOUND;
    fake_user(out);
    return 0;
}
int store_is_member(struct store *s, const char *cid, const struct store_person *p, bool *out)
{
    (void)s, (void)cid, (void)p;
    if (fake_store_err)
        return fake_store_err;
    *out = false;
    return 0;
}
int store_conversation_get(struct store *s, const char *id, struct store_conversation *out)
{
    (void)s, (void)id, (void)out;
    return fake_store_err ? fake_store_err : STORE_ERR_NOT_FOUND;
}
int store_conversation_participants(struct store *s, const char *cid, struct store_person_list *out)
{
    (void)s, (void)cid, (void)out;
    return fake_store_err ? fake_store_err : STORE_ERR_NOT_FOUND;
}
int store_user_create(struct store *s, const struct store_user_new *u, struct store_person *out)
{
    (void)s;
    if (fake_store_err)
        return fake_store_err;
    fake_user(out);
    free(out->username);
    out->username = strdup(u->username);
    return 0;
}
int store_conversation_create(struct store *s, const char *id, const char *title, const char *type,
                              struct store_conversation *out)
{
    (void)s, (void)id, (void)title, (void)type, (void)out;
    return fake_store_err ? fake_store_err : STORE_ERR_INTERNAL;
}
int store_member_add(struct store *s, const char *cid, const char *uid, int *added)
{
    (void)s, (void)cid, (void)uid, (void)added;
    return fake_store_err ? fake_store_err : STORE_ERR_NOT_FOUND;
}
int store_member_count(struct store *s, const char *cid, uint64_t *out)
{
    (void)s, (void)cid, (void)out;
    return fake_store_err ? fake_store_err : STORE_ERR_NOT_FOUND;
}
int store_anonymous_create(struct store *s, const char *cid, const char *username,
                           struct store_person *out, char token_out[65])
{
    (void)s, (void)cid, (void)username, (void)out, (void)token_out;
    return fake_store_err ? fake_store_err : STORE_ERR_NOT_FOUND;
}

/* Bearer "admin": a service admin token; "user": the stored user; anything else invalid. */
int auth_authenticate(const struct auth_ctx *a, const char *bearer, const char *session,
                      bool require_admin, int64_t now_s, struct auth_result *out)
{
    (void)a, (void)session, (void)now_s;
    memset(out, 0, sizeof(*out));
    if (bearer == NULL)
        return AUTH_ERR_MISSING;
    if (strcmp(bearer, "admin") == 0) {
        /* A service token: its id is not in the store, so only the admin routes take it. */
        if (!require_admin)
            return AUTH_ERR_UNKNOWN_PERSON;
        out->claims.is_admin = true;
        strcpy(out->claims.role, "ADMIN");
        out->is_admin = true;
        return 0;
    }
    if (strcmp(bearer, "user") != 0)
        return AUTH_ERR_INVALID_TOKEN;
    if (fake_store_err)
        return AUTH_ERR_STORE;
    if (require_admin)
        return AUTH_ERR_FORBIDDEN;
    fake_user(&out->person);
    out->has_person = true;
    return 0;
}
void auth_result_clear(struct auth_result *r)
{
    store_person_clear(&r->person);
}
const char *auth_bearer_from_header(const char *value)
{
    return strncmp(value, "Bearer ", 7) == 0 ? value + 7 : NULL;
}
bool throttle_should_write(struct throttle *t, const char *id, int64_t now_ms)
{
    (void)t, (void)id, (void)now_ms;
    return true;
}
void throttle_get_stats(struct throttle *t, struct throttle_stats *out)
{
    (void)t;
    memset(out, 0, sizeof(*out));
}

/* --- a fake engine: the con_cls protocol of an MHD access handler ----------------------------- */

/* Set on MHD threads, read by the test thread. */
static atomic_int engine_calls, engine_done_calls;
static void *_Atomic engine_done_cls;
static int engine_marker;

static enum MHD_Result fake_engine(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *upload_data,
                                   size_t *upload_data_size, void **con_cls)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    (void)cls, (void)url, (void)method, (void)upload_data, (void)upload_data_size;
    engine_calls++;
    if (*con_cls == NULL) {
        *con_cls = &engine_marker;
        return MHD_YES;
    }
    r = MHD_create_response_from_buffer(6, "engine", MHD_RESPMEM_PERSISTENT);
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static void fake_engine_done(void *cls, void *con_cls)
{
    (void)cls;
    engine_done_calls++;
    engine_done_cls = con_cls;
}

/* --- client ---------------------------------------------------------------------------------- */

static int connect_to(int port)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Reads one answer (head + Content-Length body) into buf, or until close / timeout_ms. Returns
 * the bytes read; *closed tells whether the peer closed. */
static size_t read_answer(int fd, char *buf, size_t cap, int timeout_ms, bool *closed)
{
    size_t n = 0;

    *closed = false;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        char *end;
        if (poll(&p, 1, timeout_ms) <= 0)
            break;
        ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
        if (k <= 0) {
            *closed = true;
            break;
        }
        n += (size_t)k;
        buf[n] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")) != NULL) {
            const char *cl = strcasestr(buf, "Content-Length:");
            size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
            if (n >= want)
                break;
        }
    }
    buf[n] = '\0';
    return n;
}

static int request(int port, const char *req, char *buf, size_t cap)
{
    bool closed;
    int fd = connect_to(port);
    int status = 0;

    assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    read_answer(fd, buf, cap, 3000, &closed);
    close(fd);
    sscanf(buf, "HTTP/1.1 %d", &status);
    return status;
}

/* --- fixture --------------------------------------------------------------------------------- */

struct fx {
    struct gw_config cfg;
    struct store store;
    struct auth_ctx auth;
    struct throttle throttle;
    struct http_hooks hooks;
    struct http_server *h;
    int port;
};

static struct fx *fx_start(struct http_hooks *hooks, void (*tweak)(struct gw_config *))
{
    struct fx *f = calloc(1, sizeof(*f));

    f->cfg.host = "127.0.0.1";
    f->cfg.port = 0;
    f->cfg.cors_origins = "";
    f->cfg.max_payload_bytes = 100;
    f->cfg.request_timeout_ms = 10000;
    f->cfg.away_after_ms = 300000;
    f->cfg.offline_after_ms = 1800000;
    f->cfg.http_threads = 2;
    if (tweak != NULL)
        tweak(&f->cfg);
    if (hooks != NULL)
        f->hooks = *hooks;
    fake_store_err = 0;
    f->h = http_start(&f->cfg, &f->store, &f->auth, &f->throttle, &f->hooks);
    assert_non_null(f->h);
    f->port = http_port(f->h);
    assert_true(f->port > 0);
    return f;
}

static void fx_stop(struct fx *f)
{
    http_stop(f->h);
    free(f);
}

/* --- tests ----------------------------------------------------------------------------------- */

static void test_keepalive_and_codes(void **state)
{
    struct fx *f = fx_start(NULL, NULL);
    char buf[4096];
    bool closed;
    int fd;
    uint64_t before = atomic_load(&gw_metrics.http_requests_total);

    (void)state;
    /* Two requests on one connection: the first answer must not close it. */
    fd = connect_to(f->port);
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    send(fd, req, strlen(req), 0);
    read_answer(fd, buf, sizeof(buf), 3000, &closed);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_null(strcasestr(buf, "Connection: close"));
    assert_non_null(strstr(buf, "{\"status\":\"ok\"}"));
    send(fd, req, strlen(req), 0);
    read_answer(fd, buf, sizeof(buf), 3000, &closed);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_false(closed);
    close(fd);
    assert_int_equal(atomic_load(&gw_metrics.http_requests_total) - before, 2);

    assert_int_equal(request(f->port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf)),
                     404);
    assert_non_null(strstr(buf, "\"error\":\"not_found\""));
    assert_int_equal(request(f->port,
                             "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", buf,
                             sizeof(buf)),
                     405);
    assert_non_null(strcasestr(buf, "Allow: GET, HEAD, OPTIONS"));
    assert_int_equal(
        request(f->port, "GET /api/users/me HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf)), 401);
    assert_non_null(strcasestr(buf, "WWW-Authenticate: Bearer"));
    int writes = fake_activity_writes;
    assert_int_equal(
        request(f->port,
                "GET /api/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer user\r\n\r\n", buf,
                sizeof(buf)),
        200);
    assert_int_equal(fake_activity_writes - writes, 1);
    assert_non_null(strstr(buf, "\"username\":\"alice\""));
    assert_int_equal(request(f->port,
                             "GET /api/users/status?ids=x HTTP/1.1\r\nHost: x\r\nAuthorization: "
                             "Bearer admin\r\n\r\n",
                             buf, sizeof(buf)),
                     401);
    assert_int_equal(request(f->port,
                             "POST /api/admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             "user\r\nContent-Length: 2\r\n\r\n{}",
                             buf, sizeof(buf)),
                     403);
    fx_stop(f);
}

static void test_hooks_absent(void **state)
{
    struct fx *f = fx_start(NULL, NULL);
    char buf[4096];

    (void)state;
    assert_int_equal(request(f->port,
                             "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n",
                             buf, sizeof(buf)),
                     404);
    assert_int_equal(request(f->port,
                             "GET /api/admin/maintenance/stats HTTP/1.1\r\nHost: "
                             "x\r\nAuthorization: Bearer admin\r\n\r\n",
                             buf, sizeof(buf)),
                     503);
    assert_non_null(strstr(buf, "\"error\":\"unavailable\""));
    assert_int_equal(request(f->port,
                             "POST /api/admin/maintenance/cleanup-zombies HTTP/1.1\r\nHost: "
                             "x\r\nAuthorization: Bearer admin\r\nContent-Length: 0\r\n\r\n",
                             buf, sizeof(buf)),
                     503);
    assert_int_equal(request(f->port,
                             "POST /api/admin/users/" USER_ID
                             "/disconnect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             "admin\r\nContent-Length: 0\r\n\r\n",
                             buf, sizeof(buf)),
                     503);
    fx_stop(f);
}

static void conformance(struct gw_config *c)
{
    c->conformance = true;
}

static void test_engine_hook(void **state)
{
    struct http_hooks hooks = {.engine_request = fake_engine,
                               .engine_request_done = fake_engine_done};
    struct fx *f = fx_start(&hooks, NULL);
    char buf[4096];

    (void)state;
    engine_calls = engine_done_calls = 0;
    engine_done_cls = NULL;
    assert_int_equal(request(f->port,
                             "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n",
                             buf, sizeof(buf)),
                     200);
    assert_non_null(strstr(buf, "engine"));
    assert_int_equal(engine_calls, 2);
    /* The completion runs after the answer is sent: wait for it, bounded. */
    for (int i = 0; i < 300 && engine_done_calls == 0; i++)
        usleep(10000);
    assert_int_equal(engine_done_calls, 1);
    assert_ptr_equal(engine_done_cls, &engine_marker);
    /* /engine.io/ is a product 404 outside conformance mode. */
    assert_int_equal(
        request(f->port, "GET /engine.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf)),
        404);
    fx_stop(f);

    f = fx_start(&hooks, conformance);
    assert_int_equal(
        request(f->port, "GET /engine.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf)),
        200);
    /* No product API in conformance mode. */
    assert_int_equal(
        request(f->port,
                "GET /api/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer user\r\n\r\n", buf,
                sizeof(buf)),
        404);
    assert_int_equal(request(f->port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf)),
                     200);
    fx_stop(f);
}

static void test_store_down(void **state)
{
    struct fx *f = fx_start(NULL, NULL);
    char buf[4096];

    (void)state;
    fake_store_err = STORE_ERR_UNAVAILABLE;
    assert_int_equal(request(f->port, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf)),
                     503);
    assert_int_equal(request(f->port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf)),
                     200);
    assert_int_equal(
        request(f->port,
                "GET /api/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer user\r\n\r\n", buf,
                sizeof(buf)),
        503);
    assert_non_null(strstr(buf, "\"error\":\"unavailable\""));
    assert_int_equal(request(f->port,
                             "POST /api/admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             "admin\r\nContent-Length: 16\r\n\r\n{\"username\":\"a\"}",
                             buf, sizeof(buf)),
                     503);
    assert_int_equal(request(f->port,
                             "GET /api/users/" USER_ID
                             " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin\r\n\r\n",
                             buf, sizeof(buf)),
                     401);
    assert_int_equal(
        request(f->port,
                "GET /api/conversations/" USER_ID
                "/participants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin\r\n\r\n",
                buf, sizeof(buf)),
        503);
    fake_store_err = 0;
    assert_int_equal(request(f->port, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf)),
                     200);
    assert_non_null(strstr(buf, "\"store\":\"sqlite\""));
    fx_stop(f);
}

static void test_payload_limit(void **state)
{
    struct fx *f = fx_start(NULL, NULL);
    char buf[4096], req[1024], body[200];

    (void)state;
    memset(body, 'a', 150);
    body[150] = '\0';
    snprintf(req, sizeof(req),
             "POST /api/admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
             "admin\r\nContent-Length: 150\r\n\r\n%s",
             body);
    assert_int_equal(request(f->port, req, buf, sizeof(buf)), 413);
    assert_non_null(strcasestr(buf, "Connection: close"));
    /* Chunked: 60 + 60 bytes, over 100 once accumulated. */
    snprintf(req, sizeof(req),
             "POST /api/admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
             "admin\r\nTransfer-Encoding: chunked\r\n\r\n3c\r\n%.60s\r\n3c\r\n%.60s\r\n0\r\n\r\n",
             body, body);
    assert_int_equal(request(f->port, req, buf, sizeof(buf)), 413);
    /* Under the limit, not JSON: 400. */
    assert_int_equal(request(f->port,
                             "POST /api/admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             "admin\r\nContent-Length: 3\r\n\r\nabc",
                             buf, sizeof(buf)),
                     400);
    assert_int_equal(request(f->port,
                             "POST /api/admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             "admin\r\nContent-Length: 16\r\n\r\n{\"username\":\"a\"}",
                             buf, sizeof(buf)),
                     201);
    fx_stop(f);
}

static void short_timeout(struct gw_config *c)
{
    c->request_timeout_ms = 400;
}

static void test_request_timeout(void **state)
{
    struct fx *f = fx_start(NULL, short_timeout);
    char buf[4096];
    bool closed = false;
    int64_t t0, dt;
    int fd;

    (void)state;
    /* A head that never completes, one byte at a time. */
    fd = connect_to(f->port);
    t0 = util_mono_ms();
    const char *part =
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (size_t i = 0; part[i] != '\0' && !closed; i++) {
        struct pollfd p = {fd, POLLIN, 0};
        if (send(fd, part + i, 1, MSG_NOSIGNAL) != 1)
            break;
        if (poll(&p, 1, 100) > 0) {
            read_answer(fd, buf, sizeof(buf), 2000, &closed);
            break;
        }
    }
    assert_non_null(strstr(buf, "HTTP/1.1 408"));
    if (!closed)
        read_answer(fd, buf, sizeof(buf), 2000, &closed);
    dt = util_mono_ms() - t0;
    assert_true(closed);
    assert_true(dt >= 300 && dt <= 400 + 500);
    close(fd);

    /* Idle after an answer: closed after about the same time, without a 408. */
    const char *req_ok = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    fd = connect_to(f->port);
    send(fd, req_ok, strlen(req_ok), 0);
    read_answer(fd, buf, sizeof(buf), 2000, &closed);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    t0 = util_mono_ms();
    read_answer(fd, buf, sizeof(buf), 3000, &closed);
    dt = util_mono_ms() - t0;
    assert_true(closed);
    assert_int_equal(buf[0], '\0');
    assert_true(dt <= 400 + 500);
    close(fd);
    fx_stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive_and_codes), cmocka_unit_test(test_hooks_absent),
        cmocka_unit_test(test_engine_hook),         cmocka_unit_test(test_store_down),
        cmocka_unit_test(test_payload_limit),       cmocka_unit_test(test_request_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
