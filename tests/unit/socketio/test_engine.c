/*
 * test_engine.c - the Socket.IO engine without libmicrohttpd: WebSocket helpers, the presence
 * registry against the real SQLite store, and whole sessions driven over a socketpair handed
 * to a loop thread the way the upgrade callback does (client frames written whole and one
 * byte at a time, fragments with a ping in the middle, protocol errors, the rate limit).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "middleware/auth.h"
#include "middleware/throttle.h"
#include "socketio/sio_internal.h"
#include "store/store.h"

#define SECRET "engine-test-secret"

/* ---- helpers without a loop ----------------------------------------------------------- */

static void test_ws_accept_rfc6455(void **state)
{
    (void)state;
    char out[29];
    assert_int_equal(sio__ws_accept("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(sio__ws_accept("", out), -1);
}

static void test_ws_header_boundaries(void **state)
{
    (void)state;
    static const size_t lens[] = {0, 125, 126, 65535, 65536, 1000000};
    static const size_t hl[] = {2, 2, 4, 4, 10, 10};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        uint8_t h[10];
        assert_int_equal(sio__ws_header_len(lens[i]), hl[i]);
        assert_int_equal(sio__ws_header_write(h, 1, lens[i]), hl[i]);
        assert_int_equal(h[0], 0x81);
        uint64_t n = h[1] & 0x7f;
        if (n == 126)
            n = ((uint64_t)h[2] << 8) | h[3];
        else if (n == 127)
            for (int k = 0; k < 8; k++)
                n = (k == 0 ? 0 : n << 8) | h[2 + k];
        assert_int_equal(n, lens[i]);
        assert_int_equal(h[1] & 0x80, 0); /* server frames are not masked */
    }
    struct sio_sbuf *b = sio_sbuf_frame(2, "abc", 3);
    assert_int_equal(b->len, 5);
    assert_memory_equal(b->data,
                        "\x82\x03"
                        "abc",
                        5);
    sio_sbuf_ref(b);
    sio_sbuf_release(b);
    sio_sbuf_release(b);
}

/* ---- fixture: a store, auth, throttle and an engine ----------------------------------- */

struct fx {
    char dir[64];
    struct gw_config cfg;
    struct store *store;
    struct auth_ctx *auth;
    struct throttle *throttle;
    struct sio_engine *e;
    char alice[OID_HEX_LEN + 1];
    char bob[OID_HEX_LEN + 1];
    char conv[OID_HEX_LEN + 1];
};

static void make_user(struct store *s, const char *name, char out[OID_HEX_LEN + 1])
{
    struct store_user_new u = {.username = name, .is_active = true};
    struct store_person p = {0};
    assert_int_equal(store_user_create(s, &u, &p), 0);
    strcpy(out, p.id);
    store_person_clear(&p);
}

static int fx_setup_with(void **state, int64_t grace_ms, int max_events_per_sec)
{
    struct fx *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/gw-sio-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char url[128];
    snprintf(url, sizeof(url), "sqlite:%s/t.db", f->dir);
    assert_int_equal(store_open(url, &f->store), 0);
    f->auth = auth_new(SECRET, strlen(SECRET), f->store);
    f->throttle = throttle_new(60000, 1000);
    f->cfg.ping_interval_ms = 25000;
    f->cfg.ping_timeout_ms = 10000;
    f->cfg.connect_timeout_ms = 45000;
    f->cfg.away_after_ms = 300000;
    f->cfg.offline_after_ms = 1800000;
    f->cfg.disconnect_grace_ms = grace_ms;
    f->cfg.max_payload_bytes = 4096;
    f->cfg.max_events_per_sec = max_events_per_sec;
    f->cfg.loop_threads = 1;
    make_user(f->store, "alice", f->alice);
    make_user(f->store, "bob", f->bob);
    struct store_conversation c = {0};
    assert_int_equal(store_conversation_create(f->store, NULL, "t", NULL, &c), 0);
    strcpy(f->conv, c.id);
    store_conversation_clear(&c);
    int added;
    assert_int_equal(store_member_add(f->store, f->conv, f->alice, &added), 0);
    assert_int_equal(store_member_add(f->store, f->conv, f->bob, &added), 0);
    f->e = sio_engine_new(&f->cfg, f->store, f->auth, f->throttle);
    assert_non_null(f->e);
    assert_int_equal(sio_engine_start(f->e), 0);
    *state = f;
    return 0;
}

static int fx_setup(void **state)
{
    return fx_setup_with(state, 0, 5);
}

static int fx_setup_busy(void **state)
{
    return fx_setup_with(state, 0, 100);
}

static int fx_setup_grace(void **state)
{
    return fx_setup_with(state, 200, 5);
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    sio_engine_shutdown(f->e);
    sio_engine_free(f->e);
    store_close(f->store, 2000);
    auth_free(f->auth);
    throttle_free(f->throttle);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- a minimal WebSocket client over a socketpair ------------------------------------- */

struct cli {
    int fd;
};

static struct cli cli_new(struct fx *f, const void *extra, size_t extra_len)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct sio_msg *m = xcalloc(1, sizeof(*m));
    m->type = SIO_MSG_NEW_CONN;
    m->fd = sv[0];
    if (extra_len > 0) {
        m->extra = xmalloc(extra_len);
        memcpy(m->extra, extra, extra_len);
        m->extra_len = extra_len;
    }
    sio__mpsc_push(&f->e->loops[0].q, m);
    struct cli c = {sv[1]};
    return c;
}

/* A masked client frame. */
static size_t frame(uint8_t *out, uint8_t first, const void *payload, size_t len)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t h = 0;
    out[h++] = first;
    if (len < 126) {
        out[h++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[h++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    memcpy(out + h, key, 4);
    h += 4;
    for (size_t i = 0; i < len; i++)
        out[h + i] = ((const uint8_t *)payload)[i] ^ key[i % 4];
    return h + len;
}

static void cli_write(struct cli *c, const void *buf, size_t len, bool byte_at_a_time)
{
    const uint8_t *p = buf;
    if (!byte_at_a_time) {
        assert_int_equal(write(c->fd, p, len), (ssize_t)len);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        assert_int_equal(write(c->fd, p + i, 1), 1);
        if (i % 7 == 0)
            usleep(100); /* let the loop see partial headers */
    }
}

static void cli_send(struct cli *c, uint8_t opcode, const char *text, bool slow)
{
    size_t len = strlen(text);
    uint8_t *buf = malloc(len + 14);
    size_t n = frame(buf, (uint8_t)(0x80 | opcode), text, len);
    cli_write(c, buf, n, slow);
    free(buf);
}

static int read_full(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) != 1)
            return -1;
        ssize_t r = read(fd, buf + got, len - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Reads one server frame: returns its opcode, payload in *out (malloc'ed, NUL-terminated). */
static int cli_recv(struct cli *c, char **out, size_t *len_out)
{
    uint8_t h[10];
    if (read_full(c->fd, h, 2) != 0)
        return -1;
    assert_int_equal(h[1] & 0x80, 0);
    uint64_t len = h[1] & 0x7f;
    if (len == 126) {
        if (read_full(c->fd, h + 2, 2) != 0)
            return -1;
        len = ((uint64_t)h[2] << 8) | h[3];
    } else if (len == 127) {
        if (read_full(c->fd, h + 2, 8) != 0)
            return -1;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | h[2 + i];
    }
    char *p = malloc(len + 1);
    if (len > 0 && read_full(c->fd, (uint8_t *)p, len) != 0) {
        free(p);
        return -1;
    }
    p[len] = '\0';
    *out = p;
    if (len_out)
        *len_out = len;
    return h[0] & 0x0f;
}

/* Skips pings and status events; returns the next other text message. */
static char *cli_expect_text(struct cli *c, const char *prefix)
{
    for (;;) {
        char *s;
        int op = cli_recv(c, &s, NULL);
        assert_int_equal(op, 1);
        if (strncmp(s, prefix, strlen(prefix)) == 0)
            return s;
        if (strcmp(s, "2") != 0 && strncmp(s, "42[\"user:status\"", 16) != 0)
            fail_msg("unexpected message %s while waiting for %s", s, prefix);
        free(s);
    }
}

/* Waits for the close frame; returns its code. */
static int cli_expect_close(struct cli *c)
{
    for (;;) {
        char *s;
        size_t len;
        int op = cli_recv(c, &s, &len);
        if (op < 0)
            return -1;
        if (op == 8) {
            int code = len >= 2 ? ((uint8_t)s[0] << 8 | (uint8_t)s[1]) : 0;
            free(s);
            return code;
        }
        free(s);
    }
}

static void cli_auth(struct cli *c, const char *id, bool slow)
{
    char *tok = auth_mint_jwt(SECRET, strlen(SECRET), id, NULL, 600, util_now_ms() / 1000);
    char msg[600];
    snprintf(msg, sizeof(msg), "40{\"token\":\"%s\"}", tok);
    free(tok);
    cli_send(c, 1, msg, slow);
    char *ack = cli_expect_text(c, "40{\"sid\":");
    free(ack);
}

static void cli_connect(struct fx *f, struct cli *c, const char *id, bool slow)
{
    (void)f;
    char *open = cli_expect_text(c, "0{");
    assert_non_null(strstr(open, "\"pingInterval\":25000"));
    free(open);
    cli_auth(c, id, slow);
}

static void wait_live(struct fx *f, const char *id, int n)
{
    for (int i = 0; i < 500 && sio_engine_live_connections(f->e, id) != n; i++)
        usleep(2000);
    assert_int_equal(sio_engine_live_connections(f->e, id), n);
}

/* ---- sessions ------------------------------------------------------------------------- */

static void test_session_byte_at_a_time(void **state)
{
    struct fx *f = *state;
    struct cli a = cli_new(f, NULL, 0);
    cli_connect(f, &a, f->alice, true);
    wait_live(f, f->alice, 1);
    /* An ack round trip, written one byte at a time */
    cli_send(&a, 1, "421[\"echo\",\"hello\",{\"x\":[1,2]}]", true);
    char *r = cli_expect_text(&a, "431");
    assert_string_equal(r, "431[\"hello\",{\"x\":[1,2]}]");
    free(r);
    /* A fragmented message with a ping between its fragments */
    uint8_t buf[256];
    size_t n = frame(buf, 0x01, "422[\"echo\",", 11);
    n += frame(buf + n, 0x89, "pp", 2);
    n += frame(buf + n, 0x80, "\"frag\"]", 7);
    cli_write(&a, buf, n, true);
    char *s;
    size_t len;
    assert_int_equal(cli_recv(&a, &s, &len), 0xA); /* pong, answered mid-message */
    assert_string_equal(s, "pp");
    free(s);
    r = cli_expect_text(&a, "432");
    assert_string_equal(r, "432[\"frag\"]");
    free(r);
    /* Binary event with one attachment: placeholder text, then the binary message */
    cli_send(&a, 1, "451-3[\"echo\",{\"_placeholder\":true,\"num\":0}]", false);
    n = frame(buf, 0x82, "\x01\x02\xff", 3);
    cli_write(&a, buf, n, false);
    r = cli_expect_text(&a, "461-3");
    assert_string_equal(r, "461-3[{\"_placeholder\":true,\"num\":0}]");
    free(r);
    assert_int_equal(cli_recv(&a, &s, &len), 2);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "\x01\x02\xff", 3);
    free(s);
    close(a.fd);
    wait_live(f, f->alice, 0);
}

static void test_session_extra_in_and_presence(void **state)
{
    struct fx *f = *state;
    /* Bytes that arrived with the upgrade request are processed before the socket's */
    uint8_t pre[64];
    size_t n = frame(pre, 0x81, "6", 1); /* a noop */
    struct cli b = cli_new(f, pre, n);
    cli_connect(f, &b, f->bob, false);
    wait_live(f, f->bob, 1);
    struct cli a = cli_new(f, NULL, 0);
    cli_connect(f, &a, f->alice, false);
    char *ev = cli_expect_text(&b, "42[\"user:status\"");
    assert_non_null(strstr(ev, f->alice));
    assert_non_null(strstr(ev, "\"isOnline\":true"));
    free(ev);
    /* A second tab: no second online event; Alice's socket sees Bob's status, not hers */
    struct cli a2 = cli_new(f, NULL, 0);
    cli_connect(f, &a2, f->alice, false);
    wait_live(f, f->alice, 2);
    close(a.fd);
    wait_live(f, f->alice, 1);
    close(b.fd);
    wait_live(f, f->bob, 0);
    ev = cli_expect_text(&a2, "42[\"user:status\"");
    assert_non_null(strstr(ev, f->bob));
    assert_non_null(strstr(ev, "\"isOnline\":false"));
    free(ev);
    close(a2.fd);
    wait_live(f, f->alice, 0);
    assert_int_equal(store_flush(f->store, 2000), 0);
    struct store_person p = {0};
    assert_int_equal(store_person_get(f->store, f->alice, &p), 0);
    assert_false(p.is_online);
    assert_true(p.last_seen_ms > 0);
    store_person_clear(&p);
}

static void test_session_protocol_errors(void **state)
{
    struct fx *f = *state;
    /* invalid UTF-8 in a text message: 1007 */
    struct cli a = cli_new(f, NULL, 0);
    cli_connect(f, &a, f->alice, false);
    uint8_t buf[8192];
    size_t n = frame(buf, 0x81, "42\xff\xfe", 4);
    cli_write(&a, buf, n, false);
    assert_int_equal(cli_expect_close(&a), 1007);
    close(a.fd);
    /* over max_payload_bytes: 1009 */
    struct cli b = cli_new(f, NULL, 0);
    cli_connect(f, &b, f->alice, false);
    char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    big[0] = '4';
    cli_send(&b, 1, big, false);
    assert_int_equal(cli_expect_close(&b), 1009);
    close(b.fd);
    /* an unmasked client frame: 1002 */
    struct cli c = cli_new(f, NULL, 0);
    char *open = cli_expect_text(&c, "0{");
    free(open);
    assert_int_equal(write(c.fd, "\x81\x01\x36", 3), 3);
    assert_int_equal(cli_expect_close(&c), 1002);
    close(c.fd);
    /* garbage Engine.IO packet */
    struct cli d = cli_new(f, NULL, 0);
    cli_connect(f, &d, f->alice, false);
    cli_send(&d, 1, "x", false);
    assert_true(cli_expect_close(&d) >= 1000);
    close(d.fd);
    wait_live(f, f->alice, 0);
}

static void test_session_rate_limit(void **state)
{
    struct fx *f = *state;
    uint64_t before = atomic_load(&gw_metrics.rate_limited_disconnects_total);
    struct cli a = cli_new(f, NULL, 0);
    cli_connect(f, &a, f->alice, false);
    struct cli a2 = cli_new(f, NULL, 0);
    cli_connect(f, &a2, f->alice, false);
    for (int i = 0; i < 6; i++) /* max_events_per_sec is 5 */
        cli_send(&a, 1, "42[\"noise\"]", false);
    assert_int_equal(cli_expect_close(&a), 1008);
    close(a.fd);
    assert_int_equal(atomic_load(&gw_metrics.rate_limited_disconnects_total), before + 1);
    wait_live(f, f->alice, 1);
    cli_send(&a2, 1, "427[\"echo\",1]", false);
    char *r = cli_expect_text(&a2, "437");
    free(r);
    close(a2.fd);
    wait_live(f, f->alice, 0);
}

static void test_session_bad_token_and_namespace(void **state)
{
    struct fx *f = *state;
    struct cli a = cli_new(f, NULL, 0);
    free(cli_expect_text(&a, "0{"));
    cli_send(&a, 1, "40/nope,", false);
    char *r = cli_expect_text(&a, "44/nope,");
    assert_string_equal(r, "44/nope,{\"message\":\"Invalid namespace\"}");
    free(r);
    cli_send(&a, 1, "40{\"token\":\"x.y.z\"}", false);
    r = cli_expect_text(&a, "44");
    assert_string_equal(r, "44{\"message\":\"Invalid token\"}");
    free(r);
    cli_send(&a, 1, "40", false);
    r = cli_expect_text(&a, "44");
    assert_string_equal(r, "44{\"message\":\"Authentication required\"}");
    free(r);
    /* the session survives a refusal */
    cli_auth(&a, f->bob, false);
    wait_live(f, f->bob, 1);
    close(a.fd);
}

static void test_kick_and_shutdown(void **state)
{
    struct fx *f = *state;
    struct cli a = cli_new(f, NULL, 0);
    cli_connect(f, &a, f->alice, false);
    struct cli b = cli_new(f, NULL, 0);
    cli_connect(f, &b, f->bob, false);
    wait_live(f, f->bob, 1);
    assert_int_equal(sio_engine_disconnect_user(f->e, f->alice), 1);
    assert_int_equal(sio_engine_live_connections(f->e, f->alice), 0);
    free(cli_expect_text(&a, "41"));
    assert_int_equal(cli_expect_close(&a), 1000);
    close(a.fd);
    sio_engine_shutdown(f->e);
    free(cli_expect_text(&b, "41"));
    assert_int_equal(cli_expect_close(&b), 1001);
    close(b.fd);
    assert_int_equal(sio_engine_live_connections(f->e, f->bob), 0);
}

/* Small frames take the fast path (no wslay context); the rest of the same read goes to
 * wslay from the first byte the fast path did not take. */
static void test_fast_path_and_handover(void **state)
{
    struct fx *f = *state;
    struct cli a = cli_new(f, NULL, 0);
    cli_connect(f, &a, f->alice, false);
    static const char *valid[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x7f"};
    for (size_t i = 0; i < 4; i++) {
        char msg[64], want[64];
        snprintf(msg, sizeof(msg), "42%zu[\"echo\",\"%s\"]", i, valid[i]);
        snprintf(want, sizeof(want), "43%zu[\"%s\"]", i, valid[i]);
        cli_send(&a, 1, msg, false);
        char *r = cli_expect_text(&a, "43");
        assert_string_equal(r, want);
        free(r);
    }
    /* small, small, 300 bytes (wslay), small: in one write, answered in order */
    uint8_t buf[1024];
    char big[320];
    snprintf(big, sizeof(big), "4212[\"echo\",\"%0290d\"]", 7);
    size_t n = frame(buf, 0x81, "4210[\"echo\",1]", 14);
    n += frame(buf + n, 0x81, "4211[\"echo\",2]", 14);
    n += frame(buf + n, 0x81, big, strlen(big));
    n += frame(buf + n, 0x81, "4213[\"echo\",4]", 14);
    cli_write(&a, buf, n, false);
    const char *want[] = {"4310[1]", "4311[2]", NULL, "4313[4]"};
    for (int i = 0; i < 4; i++) {
        char *r = cli_expect_text(&a, "43");
        if (want[i] != NULL)
            assert_string_equal(r, want[i]);
        else
            assert_int_equal(strncmp(r, "4312[\"0000", 10), 0);
        free(r);
    }
    close(a.fd);
    /* invalid UTF-8 on the fast path: overlong, surrogate, beyond U+10FFFF, truncated */
    static const char *invalid[] = {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82"};
    for (size_t i = 0; i < 4; i++) {
        struct cli b = cli_new(f, NULL, 0);
        cli_connect(f, &b, f->alice, false);
        char msg[64];
        snprintf(msg, sizeof(msg), "42[\"echo\",\"%s\"]", invalid[i]);
        cli_send(&b, 1, msg, false);
        assert_int_equal(cli_expect_close(&b), 1007);
        close(b.fd);
    }
    wait_live(f, f->alice, 0);
}

static void test_slow_reader(void **state)
{
    struct fx *f = *state;
    uint64_t before = atomic_load(&gw_metrics.slow_reader_disconnects_total);
    struct cli a = cli_new(f, NULL, 0);
    cli_connect(f, &a, f->alice, false);
    int small = 4096;
    setsockopt(a.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct store_person bob = {0};
    assert_int_equal(store_person_get(f->store, f->bob, &bob), 0);
    /* Alice never reads: the kernel buffers fill, then the gateway's queue passes
     * max_payload_bytes (4096) and she is dropped. */
    for (int i = 0; i < 20000 && sio_engine_live_connections(f->e, f->alice) > 0; i++)
        sio_engine_broadcast_status(f->e, &bob);
    wait_live(f, f->alice, 0);
    assert_int_equal(atomic_load(&gw_metrics.slow_reader_disconnects_total), before + 1);
    store_person_clear(&bob);
    close(a.fd);
}

/* ---- registry ------------------------------------------------------------------------- */

static void test_registry_grace(void **state)
{
    struct fx *f = *state;
    struct store_person p = {0};
    assert_int_equal(store_person_get(f->store, f->alice, &p), 0);
    struct store_id_list convs = {0};
    assert_int_equal(store_person_conversations(f->store, &p, &convs), 0);
    uint64_t b0 = atomic_load(&gw_metrics.status_broadcasts_total);
    int n;
    struct sio_person *e1 = sio__registry_attach(f->e, &p, &convs, 0, util_now_ms(), &n);
    assert_int_equal(n, 1);
    struct sio_person *e2 = sio__registry_attach(f->e, &p, &convs, 0, util_now_ms(), &n);
    assert_int_equal(n, 2);
    assert_ptr_equal(e1, e2);
    assert_int_equal(atomic_load(&gw_metrics.status_broadcasts_total), b0 + 1);
    assert_int_equal(sio__registry_detach(f->e, e1, false, util_now_ms(), &n), 0);
    assert_int_equal(n, 1);
    uint32_t gen = sio__registry_detach(f->e, e1, false, util_now_ms(), &n);
    assert_int_not_equal(gen, 0); /* inside the grace */
    assert_int_equal(sio_engine_live_connections(f->e, f->alice), 1);
    /* back inside the grace: the old timer is void */
    e1 = sio__registry_attach(f->e, &p, &convs, 0, util_now_ms(), &n);
    assert_int_equal(n, 1);
    sio__registry_grace_expired(f->e, f->alice, gen);
    assert_int_equal(sio_engine_live_connections(f->e, f->alice), 1);
    assert_int_equal(atomic_load(&gw_metrics.status_broadcasts_total), b0 + 1);
    gen = sio__registry_detach(f->e, e1, false, util_now_ms(), &n);
    sio__registry_grace_expired(f->e, f->alice, gen);
    assert_int_equal(sio_engine_live_connections(f->e, f->alice), 0);
    assert_int_equal(atomic_load(&gw_metrics.status_broadcasts_total), b0 + 2);
    /* an admin kick ends a grace in progress */
    e1 = sio__registry_attach(f->e, &p, &convs, 0, util_now_ms(), &n);
    assert_int_not_equal(sio__registry_detach(f->e, e1, false, util_now_ms(), &n), 0);
    assert_int_equal(sio_engine_live_connections(f->e, f->alice), 1);
    assert_int_equal(sio_engine_disconnect_user(f->e, f->alice), 0);
    assert_int_equal(sio_engine_live_connections(f->e, f->alice), 0);
    /* skip_grace (admin kick, shutdown) goes offline at once */
    e1 = sio__registry_attach(f->e, &p, &convs, 0, util_now_ms(), &n);
    assert_int_equal(sio__registry_detach(f->e, e1, true, util_now_ms(), &n), 0);
    assert_int_equal(sio_engine_live_connections(f->e, f->alice), 0);
    store_id_list_free(&convs);
    store_person_clear(&p);
}

static void test_status_packet(void **state)
{
    struct fx *f = *state;
    size_t len;
    char *s = sio__status_packet(f->e, f->alice, "alice", false, false, 1800000000000LL, 0,
                                 1800000060000LL, &len);
    json_error_t err;
    assert_int_equal(strncmp(s, "42", 2), 0);
    json_t *arr = json_loadb(s + 2, len - 2, 0, &err);
    assert_non_null(arr);
    assert_string_equal(json_string_value(json_array_get(arr, 0)), "user:status");
    json_t *o = json_array_get(arr, 1);
    assert_int_equal(json_object_size(o), 7);
    assert_string_equal(json_string_value(json_object_get(o, "userId")), f->alice);
    assert_string_equal(json_string_value(json_object_get(o, "username")), "alice");
    assert_true(json_is_false(json_object_get(o, "isOnline")));
    assert_true(json_is_false(json_object_get(o, "isAnonymous")));
    assert_string_equal(json_string_value(json_object_get(o, "status")), "away");
    assert_string_equal(json_string_value(json_object_get(o, "lastActiveAt")),
                        "2027-01-15T08:00:00.000Z");
    assert_true(json_is_null(json_object_get(o, "lastSeen")));
    json_decref(arr);
    free(s);
}

/* The hand-written encoder escapes as jansson would, and never emits invalid UTF-8. */
static void test_status_packet_escapes(void **state)
{
    struct fx *f = *state;
    size_t len;
    const char *name = "a\"b\\c\n\t\x01/\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    char *s = sio__status_packet(f->e, f->alice, name, true, true, 1800000000000LL, 1799999000000LL,
                                 1800000001000LL, &len);
    assert_int_equal(strlen(s), len);
    json_error_t err;
    json_t *arr = json_loadb(s + 2, len - 2, 0, &err);
    assert_non_null(arr);
    json_t *o = json_array_get(arr, 1);
    assert_string_equal(json_string_value(json_object_get(o, "username")), name);
    assert_true(json_is_true(json_object_get(o, "isOnline")));
    assert_true(json_is_true(json_object_get(o, "isAnonymous")));
    assert_string_equal(json_string_value(json_object_get(o, "status")), "online");
    assert_string_equal(json_string_value(json_object_get(o, "lastSeen")),
                        "2027-01-15T07:43:20.000Z");
    /* Byte for byte what jansson writes for the same object. */
    char *ref = json_dumps(arr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(s + 2, ref);
    free(ref);
    json_decref(arr);
    free(s);
    /* Not UTF-8 (a lone continuation byte, a truncated sequence, an overlong form, a
     * surrogate): each bad byte becomes U+FFFD and the packet still parses. */
    s = sio__status_packet(f->e, f->alice, "x\x80y\xe2\x82z\xc0\xaf\xed\xa0\x80", false, false, 0,
                           0, 1800000001000LL, &len);
    arr = json_loadb(s + 2, len - 2, 0, &err);
    assert_non_null(arr);
    o = json_array_get(arr, 1);
    assert_string_equal(json_string_value(json_object_get(o, "username")),
                        "x\xef\xbf\xbdy\xef\xbf\xbd\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd"
                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_true(json_is_null(json_object_get(o, "lastActiveAt")));
    assert_string_equal(json_string_value(json_object_get(o, "status")), "offline");
    json_decref(arr);
    free(s);
}

/* The encoder's own ISO-8601 dates match util_iso_time over leap years and centuries. */
static void test_status_packet_dates(void **state)
{
    struct fx *f = *state;
    static const int64_t samples[] = {1,
                                      86399999,
                                      951782400000LL,
                                      951868799999LL,
                                      4107542400000LL,
                                      1800000000123LL,
                                      1709164800000LL,
                                      253402300799999LL};
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        for (int64_t k = 0; k < 400; k++) {
            int64_t ms = samples[i] + k * 86400000LL * 37 + k * 1001;
            size_t len;
            char *s = sio__status_packet(f->e, f->alice, "a", false, true, ms, ms, ms, &len);
            char want[ISO_TIME_LEN + 1];
            util_iso_time(ms, want);
            char *at = strstr(s, "\"lastActiveAt\":\"");
            assert_non_null(at);
            assert_memory_equal(at + 16, want, ISO_TIME_LEN);
            free(s);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ws_accept_rfc6455),
        cmocka_unit_test(test_ws_header_boundaries),
        cmocka_unit_test_setup_teardown(test_session_byte_at_a_time, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_session_extra_in_and_presence, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_session_protocol_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_session_rate_limit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_session_bad_token_and_namespace, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_kick_and_shutdown, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_fast_path_and_handover, fx_setup_busy, fx_teardown),
        cmocka_unit_test_setup_teardown(test_registry_grace, fx_setup_grace, fx_teardown),
        cmocka_unit_test_setup_teardown(test_status_packet, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_status_packet_escapes, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_status_packet_dates, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
