/*
 * test_acceptor.c - the strict head parser of the accept loop (routes/acceptor.c): a valid
 * WebSocket upgrade head parses, with its fields; every head that is not exactly that (other
 * methods and versions, folding, bare LF, repeated or missing headers, a body, odd bytes) is
 * refused so that libmicrohttpd serves it; every prefix of a valid head is refused too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "routes/route_internal.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

static const char valid[] = "GET /socket.io/?EIO=4&transport=websocket&token=a%2Eb HTTP/1.1\r\n"
                            "Host: 127.0.0.1:8000\r\n"
                            "upgrade: WebSocket\r\n"
                            "Connection: keep-alive, Upgrade\r\n"
                            "Sec-WebSocket-Version:13\r\n"
                            "Sec-WebSocket-Key: " KEY "  \r\n"
                            "Authorization: Bearer abc.def.ghi\r\n"
                            "X-Session-Token: \r\n"
                            "User-Agent: test\r\n"
                            "\r\n";

static bool parse(const char *head, struct http_ws_head *h)
{
    size_t n = strlen(head);
    char *buf = malloc(n + 1);
    memcpy(buf, head, n + 1);
    bool ok = route__ws_head_parse(buf, n, h);
    /* the strings point into buf: check them before it goes */
    static char path[256], query[256], key[64], authz[128];
    if (ok) {
        snprintf(path, sizeof(path), "%s", h->path);
        snprintf(query, sizeof(query), "%s", h->query);
        snprintf(key, sizeof(key), "%s", h->key);
        snprintf(authz, sizeof(authz), "%s", h->authorization ? h->authorization : "(null)");
        h->path = path;
        h->query = query;
        h->key = key;
        h->authorization = authz;
    }
    free(buf);
    return ok;
}

static void test_valid(void **state)
{
    (void)state;
    struct http_ws_head h;
    assert_true(parse(valid, &h));
    assert_string_equal(h.path, "/socket.io/");
    assert_string_equal(h.query, "EIO=4&transport=websocket&token=a%2Eb");
    assert_string_equal(h.key, KEY);
    assert_string_equal(h.authorization, "Bearer abc.def.ghi");
    assert_null(h.session_token); /* empty counts as absent */
    assert_int_equal(h.len, strlen(valid));

    assert_true(parse("GET /socket.io/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: " KEY "\r\n\r\n",
                      &h));
    assert_string_equal(h.query, "");
}

/* Replaces the first occurrence of from in valid by to, and expects a refusal. */
static void refuse_edit(const char *from, const char *to)
{
    char buf[2048];
    const char *p = strstr(valid, from);
    assert_non_null(p);
    snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(p - valid), valid, to, p + strlen(from));
    struct http_ws_head h;
    if (parse(buf, &h))
        fail_msg("accepted: %s", buf);
}

static void test_refused(void **state)
{
    (void)state;
    refuse_edit("GET ", "POST ");
    refuse_edit("GET ", "get ");
    refuse_edit(" HTTP/1.1", " HTTP/1.0");
    refuse_edit("GET /socket.io/", "GET socket.io/");
    refuse_edit("/socket.io/?", "/socket%2eio/?");
    refuse_edit("transport=websocket", "transport=web socket");
    refuse_edit("EIO=4", "EIO=4#frag");
    refuse_edit("Host: 127.0.0.1:8000\r\n", "");
    refuse_edit("Host: 127.0.0.1:8000\r\n", "Host: a\r\nHost: b\r\n");
    refuse_edit("upgrade: WebSocket", "upgrade: h2c");
    refuse_edit("upgrade: WebSocket\r\n", "");
    refuse_edit("Connection: keep-alive, Upgrade", "Connection: keep-alive");
    refuse_edit("Sec-WebSocket-Version:13", "Sec-WebSocket-Version: 8");
    refuse_edit("Sec-WebSocket-Key: " KEY, "Sec-WebSocket-Key: short==");
    refuse_edit("Sec-WebSocket-Key: " KEY, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!=");
    refuse_edit("Authorization: Bearer", "Authorization: Bearer x\r\nAuthorization: Bearer");
    refuse_edit("User-Agent: test\r\n", "User-Agent: test\r\n  folded\r\n");
    refuse_edit("User-Agent: test\r\n", "User-Agent: test\n");
    refuse_edit("User-Agent: test\r\n", "User-Agent: te\rst\r\n");
    refuse_edit("User-Agent: test", "User-Agent: te\x01st");
    refuse_edit("User-Agent: test", "User Agent: test");
    refuse_edit("User-Agent: test", ": test");
    refuse_edit("User-Agent: test", "User-Agent test");
    refuse_edit("User-Agent: test\r\n", "Content-Length: 0\r\n");
    refuse_edit("User-Agent: test\r\n", "Transfer-Encoding: chunked\r\n");
}

static void test_prefixes(void **state)
{
    (void)state;
    size_t n = strlen(valid);
    char *buf = malloc(n + 1);
    struct http_ws_head h;
    for (size_t i = 0; i < n; i++) {
        memcpy(buf, valid, n);
        assert_false(route__ws_head_parse(buf, i, &h));
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
