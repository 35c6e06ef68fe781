/*
 * test_codec.c - unit tests of socketio/codec.c: Engine.IO 4 and Socket.IO 5 packets both
 * ways, every example of the protocol pages, namespaces, ack ids, binary attachments, polling
 * payloads with base64, inputs at the limits, and each malformed case codec.h lists. ASan
 * checks that no case leaks. The .c is included to reach its static helpers (h2o style).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "socketio/codec.c"

static const struct sio_limits lim10 = {10, 1000000};

/* ---- helpers --------------------------------------------------------------------------- */

static int feed_text(struct sio_decoder *d, const struct sio_limits *lim, const char *s,
                     struct sio_packet *out)
{
    return sio_decoder_feed(d, lim, (const uint8_t *)s, strlen(s), false, out);
}

static int feed_bin(struct sio_decoder *d, const struct sio_limits *lim, const void *b, size_t len,
                    struct sio_packet *out)
{
    return sio_decoder_feed(d, lim, b, len, true, out);
}

static bool decoder_is_zero(const struct sio_decoder *d)
{
    static const struct sio_decoder zero;
    return memcmp(d, &zero, sizeof(zero)) == 0;
}

/* Decodes a complete text packet (no attachments) and checks that the decoder stays empty. */
static void decode_ok(const char *s, struct sio_packet *out)
{
    struct sio_decoder d = {0};
    int rc = feed_text(&d, &lim10, s, out);
    assert_int_equal(rc, SIO_DECODE_PACKET);
    assert_true(decoder_is_zero(&d));
}

static void decode_err(const char *s, int want)
{
    struct sio_decoder d = {0};
    struct sio_packet out;
    memset(&out, 0xa5, sizeof(out));
    struct sio_packet before = out;
    int rc = feed_text(&d, &lim10, s, &out);
    assert_int_equal(rc, want);
    assert_true(decoder_is_zero(&d));
    /* Out-params stay untouched on failure. */
    assert_memory_equal(&out, &before, sizeof(out));
}

static void assert_json(const json_t *j, const char *want)
{
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    assert_string_equal(s, want);
    free(s);
}

static void encode_is(enum sio_type t, const char *nsp, int64_t id, const char *json, size_t n_att,
                      const char *want)
{
    json_t *data = NULL;
    if (json != NULL) {
        data = json_loads(json, JSON_DECODE_ANY | JSON_PRESERVE_ORDER, NULL);
        assert_non_null(data);
    }
    size_t len = 0;
    char *s = sio_encode(t, nsp, id, data, n_att, &len);
    assert_string_equal(s, want);
    assert_int_equal(len, strlen(want));
    free(s);
    json_decref(data);
}

/* ---- Engine.IO ------------------------------------------------------------------------- */

static void test_eio_ws_types(void **state)
{
    (void)state;
    struct eio_packet p;
    for (int t = 0; t <= 6; t++) {
        char msg[8];
        snprintf(msg, sizeof(msg), "%dabc", t);
        assert_int_equal(eio_decode_ws((const uint8_t *)msg, 4, false, &p), 0);
        assert_int_equal(p.type, t);
        assert_false(p.binary);
        assert_int_equal(p.len, 3);
        assert_memory_equal(p.data, "abc", 3);
    }
    assert_int_equal(eio_decode_ws((const uint8_t *)"2", 1, false, &p), 0);
    assert_int_equal(p.type, EIO_PING);
    assert_int_equal(p.len, 0);
    assert_int_equal(eio_decode_ws((const uint8_t *)"2probe", 6, false, &p), 0);
    assert_int_equal(p.type, EIO_PING);
    assert_memory_equal(p.data, "probe", 5);

    const uint8_t bin[] = {1, 2, 3, 4};
    assert_int_equal(eio_decode_ws(bin, 4, true, &p), 0);
    assert_int_equal(p.type, EIO_MESSAGE);
    assert_true(p.binary);
    assert_ptr_equal(p.data, bin);
    assert_int_equal(p.len, 4);
    assert_int_equal(eio_decode_ws(bin, 0, true, &p), 0); /* an empty binary message is fine */
    assert_int_equal(p.len, 0);
}

static void test_eio_ws_malformed(void **state)
{
    (void)state;
    struct eio_packet p;
    memset(&p, 0x5a, sizeof(p));
    struct eio_packet before = p;
    assert_int_equal(eio_decode_ws((const uint8_t *)"", 0, false, &p), CODEC_ERR_MALFORMED);
    assert_int_equal(eio_decode_ws((const uint8_t *)"7", 1, false, &p), CODEC_ERR_MALFORMED);
    assert_int_equal(eio_decode_ws((const uint8_t *)"/", 1, false, &p), CODEC_ERR_MALFORMED);
    assert_int_equal(eio_decode_ws((const uint8_t *)"b", 1, false, &p), CODEC_ERR_MALFORMED);
    assert_memory_equal(&p, &before, sizeof(p));
}

struct collected {
    int n;
    enum eio_type type[16];
    bool binary[16];
    char data[16][64];
    size_t len[16];
    int stop_at; /* return 7 on this packet index, -1 never */
};

static int collect_cb(void *cls, const struct eio_packet *p)
{
    struct collected *c = cls;
    assert_true(c->n < 16);
    c->type[c->n] = p->type;
    c->binary[c->n] = p->binary;
    c->len[c->n] = p->len;
    memcpy(c->data[c->n], p->data, p->len < 64 ? p->len : 64);
    if (c->n++ == c->stop_at)
        return 7;
    return 0;
}

static int payload(const char *body, size_t len, struct collected *c)
{
    memset(c, 0, sizeof(*c));
    c->stop_at = -1;
    return eio_decode_payload((const uint8_t *)body, len, collect_cb, c);
}

static void test_eio_payload_examples(void **state)
{
    (void)state;
    struct collected c;
    /* engine.io-protocol README: "4hello\x1e2\x1e4world" */
    static const char ex1[] = "4hello\x1e"
                              "2\x1e"
                              "4world";
    assert_int_equal(payload(ex1, sizeof(ex1) - 1, &c), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.type[0], EIO_MESSAGE);
    assert_int_equal(c.len[0], 5);
    assert_memory_equal(c.data[0], "hello", 5);
    assert_int_equal(c.type[1], EIO_PING);
    assert_int_equal(c.len[1], 0);
    assert_int_equal(c.type[2], EIO_MESSAGE);
    assert_memory_equal(c.data[2], "world", 5);

    /* "4hello\x1ebAQIDBA==" : a text and a binary message <01 02 03 04> */
    static const char ex2[] = "4hello\x1e"
                              "bAQIDBA==";
    assert_int_equal(payload(ex2, sizeof(ex2) - 1, &c), 0);
    assert_int_equal(c.n, 2);
    assert_false(c.binary[0]);
    assert_true(c.binary[1]);
    assert_int_equal(c.type[1], EIO_MESSAGE);
    assert_int_equal(c.len[1], 4);
    assert_memory_equal(c.data[1], "\x01\x02\x03\x04", 4);

    /* Socket.IO over polling: '42["hello"]\x1e42["world"]' */
    static const char ex3[] = "42[\"hello\"]\x1e"
                              "42[\"world\"]";
    assert_int_equal(payload(ex3, sizeof(ex3) - 1, &c), 0);
    assert_int_equal(c.n, 2);
    assert_memory_equal(c.data[1], "2[\"world\"]", 10);

    /* A single packet, and a "6" noop. */
    assert_int_equal(payload("6", 1, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.type[0], EIO_NOOP);
}

static void test_eio_payload_base64(void **state)
{
    (void)state;
    struct collected c;
    /* Every padding form, and the unpadded forms Node's Buffer also accepts. */
    static const struct {
        const char *b64;
        const char *bin;
        size_t len;
    } cases[] = {
        {"", "", 0},
        {"AQ==", "\x01", 1},
        {"AQI=", "\x01\x02", 2},
        {"AQID", "\x01\x02\x03", 3},
        {"AQ", "\x01", 1},
        {"AQI", "\x01\x02", 2},
        {"AAAA", "\0\0\0", 3},
        {"//79", "\xff\xfe\xfd", 3},
        {"AQIDBA==", "\x01\x02\x03\x04", 4},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[32];
        int n = snprintf(body, sizeof(body), "b%s", cases[i].b64);
        assert_int_equal(payload(body, (size_t)n, &c), 0);
        assert_int_equal(c.n, 1);
        assert_true(c.binary[0]);
        assert_int_equal(c.len[0], cases[i].len);
        assert_memory_equal(c.data[0], cases[i].bin, cases[i].len);
    }
    /* Several binaries between texts. */
    static const char many[] = "bAQ==\x1e"
                               "4x\x1e"
                               "bAgM=\x1e"
                               "b\x1e"
                               "3";
    assert_int_equal(payload(many, sizeof(many) - 1, &c), 0);
    assert_int_equal(c.n, 5);
    assert_true(c.binary[0] && !c.binary[1] && c.binary[2] && c.binary[3] && !c.binary[4]);
    assert_int_equal(c.len[2], 2);
    assert_memory_equal(c.data[2], "\x02\x03", 2);
    assert_int_equal(c.len[3], 0);
    assert_int_equal(c.type[4], EIO_PONG);
}

static void test_eio_payload_malformed(void **state)
{
    (void)state;
    struct collected c;
    static const struct {
        const char *body;
        size_t len;
    } bad[] = {
        {"", 0},       /* empty body: one empty packet */
        {"4a\x1e", 3}, /* trailing separator */
        {"\x1e"
         "4a",
         3}, /* leading separator */
        {"4a\x1e\x1e"
         "4b",
         6},              /* empty packet in the middle */
        {"7", 1},         /* unknown type */
        {"x", 1},         /* not a digit */
        {"bA", 2},        /* base64 of impossible length */
        {"bAQ=", 4},      /* wrong padding */
        {"bAQID=", 6},    /* padding after a full quantum */
        {"bA===", 5},     /* three pads */
        {"bAQ!D", 5},     /* bad character */
        {"b AQI", 5},     /* blanks (OpenSSL would skip them) */
        {"bAQ==AQ==", 9}, /* padding in the middle */
        {"bAQID\n", 6},   /* trailing newline */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = payload(bad[i].body, bad[i].len, &c);
        if (rc != CODEC_ERR_MALFORMED)
            fail_msg("case %zu: rc %d", i, rc);
    }
    /* Packets before the bad one were delivered in order. */
    static const char partial[] = "4a\x1e"
                                  "4b\x1e"
                                  "9";
    assert_int_equal(payload(partial, sizeof(partial) - 1, &c), CODEC_ERR_MALFORMED);
    assert_int_equal(c.n, 2);
}

static void test_eio_payload_callback_stops(void **state)
{
    (void)state;
    struct collected c;
    memset(&c, 0, sizeof(c));
    c.stop_at = 1;
    static const char body[] = "4a\x1e"
                               "bAQ==\x1e"
                               "4c";
    assert_int_equal(eio_decode_payload((const uint8_t *)body, sizeof(body) - 1, collect_cb, &c),
                     7);
    assert_int_equal(c.n, 2);
}

static void test_eio_payload_append(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    eio_payload_append(&buf, &len, &cap, EIO_MESSAGE, false, (const uint8_t *)"hello", 5);
    assert_string_equal(buf, "4hello");
    eio_payload_append(&buf, &len, &cap, EIO_PING, false, NULL, 0);
    eio_payload_append(&buf, &len, &cap, EIO_MESSAGE, false, (const uint8_t *)"world", 5);
    assert_string_equal(buf, "4hello\x1e"
                             "2\x1e"
                             "4world");
    eio_payload_append(&buf, &len, &cap, EIO_MESSAGE, true, (const uint8_t *)"\x01\x02\x03\x04", 4);
    assert_string_equal(buf, "4hello\x1e"
                             "2\x1e"
                             "4world\x1e"
                             "bAQIDBA==");
    assert_int_equal(len, strlen(buf));
    eio_payload_append(&buf, &len, &cap, EIO_MESSAGE, true, NULL, 0);
    assert_string_equal(buf + len - 2, "\x1e"
                                       "b");
    assert_true(cap > len);

    struct collected c;
    assert_int_equal(payload(buf, len, &c), 0);
    assert_int_equal(c.n, 5);
    assert_int_equal(c.len[3], 4);
    assert_memory_equal(c.data[3], "\x01\x02\x03\x04", 4);
    assert_int_equal(c.len[4], 0);
    free(buf);
}

struct big_check {
    const uint8_t *want;
    size_t len;
    int n;
};

static int big_cb(void *cls, const struct eio_packet *p)
{
    struct big_check *b = cls;
    b->n++;
    assert_true(p->binary);
    assert_int_equal(p->len, b->len);
    assert_memory_equal(p->data, b->want, b->len);
    return 0;
}

/* A binary larger than one EVP_EncodeBlock chunk (3 MiB) round-trips. */
static void test_eio_payload_large_binary(void **state)
{
    (void)state;
    size_t n = ((size_t)3 << 20) + 7;
    uint8_t *bin = xmalloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        bin[i] = (uint8_t)(x >> 16);
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    eio_payload_append(&buf, &len, &cap, EIO_MESSAGE, true, bin, n);
    assert_int_equal(len, 1 + (n + 2) / 3 * 4);
    struct big_check b = {bin, n, 0};
    assert_int_equal(eio_decode_payload((const uint8_t *)buf, len, big_cb, &b), 0);
    assert_int_equal(b.n, 1);
    free(buf);
    free(bin);
}

static void test_eio_open(void **state)
{
    (void)state;
    size_t len;
    char *s = eio_encode_open("lv_VI97HAXpY6yYWAAAC", true, 25000, 5000, 1000000, &len);
    assert_string_equal(s, "0{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[\"websocket\"],"
                           "\"pingInterval\":25000,\"pingTimeout\":5000,\"maxPayload\":1000000}");
    assert_int_equal(len, strlen(s));
    free(s);
    s = eio_encode_open("abc", false, 300, 200, 1000000, &len);
    assert_string_equal(s, "0{\"sid\":\"abc\",\"upgrades\":[],\"pingInterval\":300,"
                           "\"pingTimeout\":200,\"maxPayload\":1000000}");
    free(s);
}

/* ---- Socket.IO: examples of the protocol page ------------------------------------------ */

static void test_sio_examples_decode(void **state)
{
    (void)state;
    struct sio_packet p;

    decode_ok("0", &p);
    assert_int_equal(p.type, SIO_CONNECT);
    assert_string_equal(p.nsp, "/");
    assert_int_equal(p.id, -1);
    assert_null(p.data);
    sio_packet_clear(&p);

    decode_ok("0/admin,{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}", &p);
    assert_int_equal(p.type, SIO_CONNECT);
    assert_string_equal(p.nsp, "/admin");
    assert_json(p.data, "{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}");
    sio_packet_clear(&p);

    decode_ok("0/admin,{\"token\":\"123\"}", &p);
    assert_json(p.data, "{\"token\":\"123\"}");
    sio_packet_clear(&p);

    decode_ok("4{\"message\":\"Not authorized\"}", &p);
    assert_int_equal(p.type, SIO_CONNECT_ERROR);
    assert_json(p.data, "{\"message\":\"Not authorized\"}");
    sio_packet_clear(&p);

    decode_ok("2[\"foo\"]", &p);
    assert_int_equal(p.type, SIO_EVENT);
    assert_json(p.data, "[\"foo\"]");
    assert_int_equal(p.id, -1);
    sio_packet_clear(&p);

    decode_ok("2/admin,[\"bar\"]", &p);
    assert_string_equal(p.nsp, "/admin");
    assert_json(p.data, "[\"bar\"]");
    sio_packet_clear(&p);

    decode_ok("212[\"foo\"]", &p);
    assert_int_equal(p.type, SIO_EVENT);
    assert_int_equal(p.id, 12);
    sio_packet_clear(&p);

    decode_ok("3/admin,13[\"bar\"]", &p);
    assert_int_equal(p.type, SIO_ACK);
    assert_string_equal(p.nsp, "/admin");
    assert_int_equal(p.id, 13);
    assert_json(p.data, "[\"bar\"]");
    sio_packet_clear(&p);

    decode_ok("1", &p);
    assert_int_equal(p.type, SIO_DISCONNECT);
    assert_string_equal(p.nsp, "/");
    sio_packet_clear(&p);

    decode_ok("1/admin,", &p);
    assert_int_equal(p.type, SIO_DISCONNECT);
    assert_string_equal(p.nsp, "/admin");
    sio_packet_clear(&p);

    /* Sample session: "40", '40{"sid":"wZX3oN0bSVIhsaknAAAI"}', '42["hey","Jude"]' (the
     * engine strips the Engine.IO '4'). */
    decode_ok("0{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}", &p);
    assert_json(p.data, "{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}");
    sio_packet_clear(&p);
    decode_ok("2[\"hey\",\"Jude\"]", &p);
    assert_json(p.data, "[\"hey\",\"Jude\"]");
    sio_packet_clear(&p);

    /* The conformance suite's message-with-ack. */
    decode_ok("21[\"message-with-ack\",1,\"2\",{\"3\":[false]}]", &p);
    assert_int_equal(p.id, 1);
    assert_json(p.data, "[\"message-with-ack\",1,\"2\",{\"3\":[false]}]");
    sio_packet_clear(&p);
}

static void test_sio_examples_encode(void **state)
{
    (void)state;
    encode_is(SIO_CONNECT, "/", -1, NULL, 0, "40");
    encode_is(SIO_CONNECT, NULL, -1, NULL, 0, "40");
    encode_is(SIO_CONNECT, "/admin", -1, "{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}", 0,
              "40/admin,{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}");
    encode_is(SIO_CONNECT_ERROR, "/", -1, "{\"message\":\"Not authorized\"}", 0,
              "44{\"message\":\"Not authorized\"}");
    encode_is(SIO_CONNECT_ERROR, "/random", -1, "{\"message\":\"Invalid namespace\"}", 0,
              "44/random,{\"message\":\"Invalid namespace\"}");
    encode_is(SIO_EVENT, "/", -1, "[\"foo\"]", 0, "42[\"foo\"]");
    encode_is(SIO_EVENT, "/admin", -1, "[\"bar\"]", 0, "42/admin,[\"bar\"]");
    encode_is(SIO_BINARY_EVENT, "/", -1, "[\"baz\",{\"_placeholder\":true,\"num\":0}]", 1,
              "451-[\"baz\",{\"_placeholder\":true,\"num\":0}]");
    encode_is(SIO_BINARY_EVENT, "/admin", -1,
              "[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]", 2,
              "452-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,"
              "\"num\":1}]");
    encode_is(SIO_EVENT, "/", 12, "[\"foo\"]", 0, "4212[\"foo\"]");
    encode_is(SIO_ACK, "/admin", 13, "[\"bar\"]", 0, "43/admin,13[\"bar\"]");
    encode_is(SIO_BINARY_ACK, "/admin", 15, "[\"bar\",{\"_placeholder\":true,\"num\":0}]", 1,
              "461-/admin,15[\"bar\",{\"_placeholder\":true,\"num\":0}]");
    encode_is(SIO_DISCONNECT, "/", -1, NULL, 0, "41");
    encode_is(SIO_DISCONNECT, "/admin", -1, NULL, 0, "41/admin,");
    encode_is(SIO_CONNECT, "/", -1, "{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}", 0,
              "40{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}");
    encode_is(SIO_EVENT, "/", -1, "[\"hey\",\"Jude\"]", 0, "42[\"hey\",\"Jude\"]");
    /* Compact, no escaping of '/' or of non-ASCII, string data for CONNECT_ERROR. */
    encode_is(SIO_EVENT, "/", -1, "[\"a/b\",{\"k\": [1, 2.5, null, true]},\"\xc3\xa9\"]", 0,
              "42[\"a/b\",{\"k\":[1,2.5,null,true]},\"\xc3\xa9\"]");
    encode_is(SIO_CONNECT_ERROR, "/", -1, "\"nope\"", 0, "44\"nope\"");
    encode_is(SIO_ACK, "/", 0, "[]", 0, "430[]");
    encode_is(SIO_ACK, "/", 9007199254740991LL, "[]", 0, "439007199254740991[]");
    encode_is(SIO_BINARY_EVENT, "/", -1, "[\"x\"]", 0, "450-[\"x\"]");
    encode_is(SIO_EVENT, "", -1, "[\"x\"]", 0, "42[\"x\"]");
}

/* Every type through sio_encode then the decoder (dropping the Engine.IO '4'). */
static void test_sio_roundtrip_all_types(void **state)
{
    (void)state;
    static const struct {
        enum sio_type t;
        const char *nsp;
        int64_t id;
        const char *json;
        size_t n_att;
    } cases[] = {
        {SIO_CONNECT, "/", -1, NULL, 0},
        {SIO_CONNECT, "/custom", -1, "{\"token\":\"t\"}", 0},
        {SIO_DISCONNECT, "/custom", -1, NULL, 0},
        {SIO_EVENT, "/", 7, "[\"user:status\",{\"userId\":\"a\",\"isOnline\":true}]", 0},
        {SIO_ACK, "/custom", 0, "[{\"success\":true}]", 0},
        {SIO_ACK, "/", 3, "[]", 0},
        {SIO_CONNECT_ERROR, "/", -1, "{\"message\":\"bad\"}", 0},
        {SIO_CONNECT_ERROR, "/x", -1, "\"bad\"", 0},
        {SIO_BINARY_EVENT, "/custom", 4,
         "[\"up\",{\"_placeholder\":true,\"num\":1},{\"a\":{\"_placeholder\":true,\"num\":0}}]", 2},
        {SIO_BINARY_ACK, "/", 5, "[{\"_placeholder\":true,\"num\":0}]", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *data = cases[i].json ? json_loads(cases[i].json, JSON_DECODE_ANY, NULL) : NULL;
        size_t len;
        char *s = sio_encode(cases[i].t, cases[i].nsp, cases[i].id, data, cases[i].n_att, &len);
        assert_int_equal(s[0], '4');
        struct sio_decoder d = {0};
        struct sio_packet p;
        int rc = sio_decoder_feed(&d, &lim10, (uint8_t *)s + 1, len - 1, false, &p);
        for (size_t k = 0; k < cases[i].n_att; k++) {
            assert_int_equal(rc, SIO_DECODE_NEED_MORE);
            uint8_t b = (uint8_t)k;
            rc = feed_bin(&d, &lim10, &b, 1, &p);
        }
        assert_int_equal(rc, SIO_DECODE_PACKET);
        assert_true(decoder_is_zero(&d));
        assert_int_equal(p.type, cases[i].t);
        assert_string_equal(p.nsp, cases[i].nsp);
        assert_int_equal(p.id, cases[i].id);
        assert_int_equal(p.n_attachments, cases[i].n_att);
        if (data == NULL)
            assert_null(p.data);
        else
            assert_true(json_equal(p.data, data));
        for (size_t k = 0; k < cases[i].n_att; k++) {
            assert_int_equal(p.attachments[k].len, 1);
            assert_int_equal(p.attachments[k].data[0], k);
        }
        sio_packet_clear(&p);
        free(s);
        json_decref(data);
    }
}

/* ---- Socket.IO: binary attachments ----------------------------------------------------- */

static void test_sio_binary_two_attachments(void **state)
{
    (void)state;
    struct sio_decoder d = {0};
    struct sio_packet p;
    memset(&p, 0, sizeof(p));
    const char *text =
        "52-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]";
    assert_int_equal(feed_text(&d, &lim10, text, &p), SIO_DECODE_NEED_MORE);
    /* The decoder holds the pending packet and waits for two attachments. */
    assert_int_equal(d._awaiting, 2);
    assert_int_equal(d._bytes, strlen(text));
    assert_int_equal(d._pending.type, SIO_BINARY_EVENT);
    assert_string_equal(d._pending.nsp, "/admin");
    assert_int_equal(d._pending.n_attachments, 2);
    assert_non_null(d._pending.attachments);
    assert_null(p.data); /* out untouched */

    assert_int_equal(feed_bin(&d, &lim10, "\x01\x02", 2, &p), SIO_DECODE_NEED_MORE);
    assert_int_equal(d._awaiting, 1);
    assert_int_equal(d._bytes, strlen(text) + 2);
    assert_int_equal(d._pending.attachments[0].len, 2);

    assert_int_equal(feed_bin(&d, &lim10, "\x03\x04", 2, &p), SIO_DECODE_PACKET);
    assert_true(decoder_is_zero(&d));
    assert_int_equal(p.type, SIO_BINARY_EVENT);
    assert_string_equal(p.nsp, "/admin");
    assert_int_equal(p.n_attachments, 2);
    assert_memory_equal(p.attachments[0].data, "\x01\x02", 2);
    assert_memory_equal(p.attachments[1].data, "\x03\x04", 2);
    assert_json(p.data,
                "[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]");
    sio_packet_clear(&p);
    assert_null(p.data);
    assert_int_equal(p.n_attachments, 0);
    assert_string_equal(p.nsp, "/");
    assert_int_equal(p.id, -1);

    /* The same decoder serves the next packet, with an ack id and an empty attachment. */
    assert_int_equal(feed_text(&d, &lim10, "61-15[\"bar\",{\"_placeholder\":true,\"num\":0}]", &p),
                     SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_bin(&d, &lim10, "", 0, &p), SIO_DECODE_PACKET);
    assert_int_equal(p.type, SIO_BINARY_ACK);
    assert_int_equal(p.id, 15);
    assert_int_equal(p.attachments[0].len, 0);
    assert_non_null(p.attachments[0].data);
    sio_packet_clear(&p);

    /* "51-" with no attachments announced is not possible, but 0 attachments are complete. */
    assert_int_equal(feed_text(&d, &lim10, "50-[\"x\"]", &p), SIO_DECODE_PACKET);
    assert_int_equal(p.n_attachments, 0);
    assert_null(p.attachments);
    sio_packet_clear(&p);
    assert_true(decoder_is_zero(&d));
}

static void test_sio_binary_sequence_errors(void **state)
{
    (void)state;
    struct sio_decoder d = {0};
    struct sio_packet p;
    memset(&p, 0, sizeof(p));

    /* A binary message when none is expected. */
    assert_int_equal(feed_bin(&d, &lim10, "\x01", 1, &p), CODEC_ERR_MALFORMED);
    assert_true(decoder_is_zero(&d));

    /* A text packet while attachments are awaited: the pending packet is freed. */
    assert_int_equal(feed_text(&d, &lim10, "51-[\"a\",{\"_placeholder\":true,\"num\":0}]", &p),
                     SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_text(&d, &lim10, "2[\"b\"]", &p), CODEC_ERR_MALFORMED);
    assert_true(decoder_is_zero(&d));

    /* The same after one of two attachments arrived. */
    assert_int_equal(
        feed_text(&d, &lim10,
                  "52-[\"a\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
                  &p),
        SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_bin(&d, &lim10, "xyz", 3, &p), SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_text(&d, &lim10, "2[\"b\"]", &p), CODEC_ERR_MALFORMED);
    assert_true(decoder_is_zero(&d));

    /* sio_decoder_reset releases a pending packet with an attachment. */
    assert_int_equal(
        feed_text(&d, &lim10,
                  "52-[\"a\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
                  &p),
        SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_bin(&d, &lim10, "xyz", 3, &p), SIO_DECODE_NEED_MORE);
    sio_decoder_reset(&d);
    assert_true(decoder_is_zero(&d));
    sio_decoder_reset(&d); /* idempotent */
    assert_null(p.data);
}

/* ---- Socket.IO: namespaces and ack ids ------------------------------------------------- */

static void test_sio_namespaces(void **state)
{
    (void)state;
    struct sio_packet p;

    decode_ok("0/custom,", &p);
    assert_string_equal(p.nsp, "/custom");
    assert_null(p.data);
    sio_packet_clear(&p);

    decode_ok("0/custom,{\"token\":\"abc\"}", &p);
    assert_string_equal(p.nsp, "/custom");
    assert_json(p.data, "{\"token\":\"abc\"}");
    sio_packet_clear(&p);

    decode_ok("1/custom", &p); /* the reference parser ends a namespace at the text's end too */
    assert_string_equal(p.nsp, "/custom");
    sio_packet_clear(&p);

    decode_ok("2/custom,5[\"e\"]", &p);
    assert_string_equal(p.nsp, "/custom");
    assert_int_equal(p.id, 5);
    sio_packet_clear(&p);

    decode_ok("2/,[\"e\"]", &p);
    assert_string_equal(p.nsp, "/");
    sio_packet_clear(&p);

    decode_ok("2/a/b-c_d.\xc3\xa9,[\"e\"]", &p); /* UTF-8 is fine */
    assert_string_equal(p.nsp, "/a/b-c_d.\xc3\xa9");
    sio_packet_clear(&p);

    /* The longest namespace that fits, then one byte more. */
    char s[SIO_NSP_MAX + 16];
    s[0] = '0';
    s[1] = '/';
    memset(s + 2, 'n', SIO_NSP_MAX - 2);
    strcpy(s + SIO_NSP_MAX, ",");
    decode_ok(s, &p);
    assert_int_equal(strlen(p.nsp), SIO_NSP_MAX - 1);
    sio_packet_clear(&p);
    s[SIO_NSP_MAX] = 'n';
    strcpy(s + SIO_NSP_MAX + 1, ",");
    decode_err(s, CODEC_ERR_TOO_LARGE);

    decode_err("0/a\tb,", CODEC_ERR_MALFORMED);
    decode_err("0/a\x7f,", CODEC_ERR_MALFORMED);
    decode_err("0/\xc3,", CODEC_ERR_MALFORMED);             /* truncated UTF-8 */
    decode_err("0/\xc0\xaf,", CODEC_ERR_MALFORMED);         /* overlong '/' */
    decode_err("0/\xed\xa0\x80,", CODEC_ERR_MALFORMED);     /* surrogate */
    decode_err("0/\xf4\x90\x80\x80,", CODEC_ERR_MALFORMED); /* past U+10FFFF */
    decode_err("0/\xff,", CODEC_ERR_MALFORMED);
    /* A NUL inside the namespace (the length is given, not NUL-terminated). */
    struct sio_decoder d = {0};
    assert_int_equal(sio_decoder_feed(&d, &lim10, (const uint8_t *)"0/a\0b,", 6, false, &p),
                     CODEC_ERR_MALFORMED);
    /* Without a ',' the JSON would belong to the namespace: an EVENT without data. */
    decode_err("2/admin[\"x\"]", CODEC_ERR_MALFORMED);
}

static void test_sio_ack_ids(void **state)
{
    (void)state;
    struct sio_packet p;
    decode_ok("20[\"a\"]", &p);
    assert_int_equal(p.id, 0);
    sio_packet_clear(&p);
    decode_ok("2007[\"a\"]", &p);
    assert_int_equal(p.id, 7);
    sio_packet_clear(&p);
    decode_ok("29007199254740991[\"a\"]", &p);
    assert_int_equal(p.id, 9007199254740991LL);
    sio_packet_clear(&p);
    decode_ok("3/x,42[]", &p);
    assert_int_equal(p.id, 42);
    sio_packet_clear(&p);
    decode_ok("1/x,", &p);
    assert_int_equal(p.id, -1);
    sio_packet_clear(&p);

    decode_err("29007199254740992[\"a\"]", CODEC_ERR_MALFORMED);
    decode_err("2123456789012345678901234567890[\"a\"]", CODEC_ERR_MALFORMED);
    decode_err("299999999999999999999999999999999999999999[\"a\"]", CODEC_ERR_MALFORMED);
    /* The conformance suite's "invalid ack id". */
    decode_err("2abc[\"message-with-ack\",1,\"2\",{\"3\":[false]}]", CODEC_ERR_MALFORMED);
    decode_err("2-1[\"a\"]", CODEC_ERR_MALFORMED);
    decode_err("21 [\"a\"]x", CODEC_ERR_MALFORMED);
}

/* ---- Socket.IO: malformed input ---------------------------------------------------------- */

static void test_sio_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",    /* empty */
        "abc", /* the conformance suite's unknown packet type */
        "7",   /* unknown type */
        "9[\"a\"]",
        "/",
        "2{}",  /* the conformance suite's invalid payload format */
        "2",    /* EVENT without data */
        "2[]",  /* EVENT with an empty array */
        "2[1]", /* first element not a string */
        "2[null]",
        "2\"a\"",
        "2[\"a\"",   /* invalid JSON */
        "2[\"a\"]x", /* trailing garbage */
        "2[\"a\"][\"b\"]",
        "2[\"\\ud800\"]", /* lone surrogate */
        "2[\"\xff\"]",    /* invalid UTF-8 in JSON */
        "0[]",            /* CONNECT with an array */
        "0\"tok\"",       /* CONNECT with a string */
        "0null",
        "1{}", /* DISCONNECT with data */
        "1[]",
        "3", /* ACK without data */
        "3{}",
        "4[]", /* CONNECT_ERROR array */
        "4",
        "41",
        "5[\"a\"]", /* binary without count */
        "5-[\"a\"]",
        "51[\"a\"]", /* no '-' */
        "51",
        "5a-[\"a\"]",
        "51-", /* no data */
        "51-{}",
        "61-{}",                                        /* BINARY_ACK object */
        "51-[\"a\",{\"_placeholder\":true,\"num\":1}]", /* placeholder past the count */
        "51-[\"a\",{\"_placeholder\":true,\"num\":-1}]",
        "51-[\"a\",{\"_placeholder\":true,\"num\":\"0\"}]",
        "51-[\"a\",{\"_placeholder\":true}]",
        "52-[\"a\",[{\"x\":{\"_placeholder\":true,\"num\":2}}]]",
        "50-[\"a\",{\"_placeholder\":true,\"num\":0}]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sio_decoder d = {0};
        struct sio_packet p;
        memset(&p, 0, sizeof(p));
        int rc = feed_text(&d, &lim10, bad[i], &p);
        if (rc != CODEC_ERR_MALFORMED)
            fail_msg("case %zu \"%s\": rc %d", i, bad[i], rc);
        assert_true(decoder_is_zero(&d));
        assert_null(p.data);
    }
    /* Counter-checks: string CONNECT_ERROR, placeholder-looking data in a plain EVENT. */
    struct sio_packet p;
    decode_ok("4\"Invalid namespace\"", &p);
    assert_true(json_is_string(p.data));
    sio_packet_clear(&p);
    decode_ok("2[\"a\",{\"_placeholder\":true,\"num\":9}]", &p);
    sio_packet_clear(&p);
    decode_ok("50-[\"a\",{\"_placeholder\":false,\"num\":9}]", &p);
    sio_packet_clear(&p);
}

/* Every prefix of valid packets decodes or fails cleanly (wslay's 1-byte feeding, applied to
 * a message-based codec: each prefix is a message of its own). */
static void test_sio_every_prefix(void **state)
{
    (void)state;
    static const char *good[] = {
        "0/admin,{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}",
        "3/admin,13[\"bar\"]",
        "52-/admin,17[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
        "2[\"user:status\",{\"userId\":\"0123456789abcdef01234567\",\"isOnline\":true}]",
    };
    for (size_t g = 0; g < sizeof(good) / sizeof(good[0]); g++) {
        size_t n = strlen(good[g]);
        for (size_t k = 0; k <= n; k++) {
            uint8_t *copy = xmalloc(k ? k : 1); /* exact size: ASan catches an over-read */
            memcpy(copy, good[g], k);
            struct sio_decoder d = {0};
            struct sio_packet p;
            int rc = sio_decoder_feed(&d, &lim10, copy, k, false, &p);
            if (rc == SIO_DECODE_PACKET)
                sio_packet_clear(&p);
            sio_decoder_reset(&d);
            if (k == n)
                assert_true(rc == SIO_DECODE_PACKET || rc == SIO_DECODE_NEED_MORE);
            free(copy);
        }
    }
    /* Payload prefixes too. */
    static const char body[] = "4hello\x1e"
                               "bAQIDBA==\x1e"
                               "42[\"a\"]";
    for (size_t k = 0; k <= sizeof(body) - 1; k++) {
        uint8_t *copy = xmalloc(k ? k : 1);
        memcpy(copy, body, k);
        struct collected c;
        memset(&c, 0, sizeof(c));
        c.stop_at = -1;
        int rc = eio_decode_payload(copy, k, collect_cb, &c);
        assert_true(rc == 0 || rc == CODEC_ERR_MALFORMED);
        free(copy);
    }
}

/* ---- limits ---------------------------------------------------------------------------- */

static char *binary_text(size_t n)
{
    /* "5<n>-[\"e\",ph0,ph1,...]" */
    size_t cap = 32 + n * 40;
    char *s = xmalloc(cap);
    size_t w = (size_t)snprintf(s, cap, "5%zu-[\"e\"", n);
    for (size_t i = 0; i < n; i++)
        w += (size_t)snprintf(s + w, cap - w, ",{\"_placeholder\":true,\"num\":%zu}", i);
    snprintf(s + w, cap - w, "]");
    return s;
}

static void test_sio_limit_attachments(void **state)
{
    (void)state;
    struct sio_decoder d = {0};
    struct sio_packet p;
    char *s = binary_text(10);
    assert_int_equal(feed_text(&d, &lim10, s, &p), SIO_DECODE_NEED_MORE);
    for (size_t i = 0; i < 9; i++)
        assert_int_equal(feed_bin(&d, &lim10, "a", 1, &p), SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_bin(&d, &lim10, "a", 1, &p), SIO_DECODE_PACKET);
    assert_int_equal(p.n_attachments, 10);
    sio_packet_clear(&p);
    free(s);

    s = binary_text(11);
    decode_err(s, CODEC_ERR_TOO_LARGE);
    free(s);
    decode_err("599999999999999999999999999999-[\"a\"]", CODEC_ERR_TOO_LARGE);
    decode_err("611-[]", CODEC_ERR_TOO_LARGE);

    /* max_attachments 0 refuses any binary packet with attachments. */
    struct sio_limits none = {0, 1000};
    assert_int_equal(feed_text(&d, &none, "51-[\"a\",{\"_placeholder\":true,\"num\":0}]", &p),
                     CODEC_ERR_TOO_LARGE);
    assert_int_equal(feed_text(&d, &none, "50-[\"a\"]", &p), SIO_DECODE_PACKET);
    sio_packet_clear(&p);
    assert_true(decoder_is_zero(&d));
}

static void test_sio_limit_bytes(void **state)
{
    (void)state;
    struct sio_limits lim = {10, 64};
    struct sio_decoder d = {0};
    struct sio_packet p;

    /* A text packet of exactly max_bytes passes, one byte more does not. */
    char s[80];
    memset(s, 0, sizeof(s));
    strcpy(s, "2[\"");
    memset(s + 3, 'x', 64 - 5);
    strcpy(s + 62, "\"]");
    assert_int_equal(strlen(s), 64);
    assert_int_equal(feed_text(&d, &lim, s, &p), SIO_DECODE_PACKET);
    sio_packet_clear(&p);
    strcpy(s + 62, "x\"]");
    assert_int_equal(feed_text(&d, &lim, s, &p), CODEC_ERR_TOO_LARGE);
    assert_true(decoder_is_zero(&d));

    /* Text + attachments: exactly at the bound, then one byte past it (decoder reset). */
    const char *t =
        "52-[\"a\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]";
    struct sio_limits lim2 = {10, strlen(t) + 10};
    uint8_t blob[16] = {0};
    assert_int_equal(feed_text(&d, &lim2, t, &p), SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_bin(&d, &lim2, blob, 4, &p), SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_bin(&d, &lim2, blob, 6, &p), SIO_DECODE_PACKET);
    sio_packet_clear(&p);
    assert_int_equal(feed_text(&d, &lim2, t, &p), SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_bin(&d, &lim2, blob, 4, &p), SIO_DECODE_NEED_MORE);
    assert_int_equal(feed_bin(&d, &lim2, blob, 7, &p), CODEC_ERR_TOO_LARGE);
    assert_true(decoder_is_zero(&d));
    /* A single attachment larger than the bound, with a huge length. */
    assert_int_equal(feed_text(&d, &lim2, t, &p), SIO_DECODE_NEED_MORE);
    assert_int_equal(sio_decoder_feed(&d, &lim2, blob, SIZE_MAX, true, &p), CODEC_ERR_TOO_LARGE);
    assert_true(decoder_is_zero(&d));

    /* NULL limits mean the defaults (10 attachments, 1 000 000 bytes). */
    assert_int_equal(feed_text(&d, NULL, "2[\"a\"]", &p), SIO_DECODE_PACKET);
    sio_packet_clear(&p);
    char *big = binary_text(11);
    assert_int_equal(feed_text(&d, NULL, big, &p), CODEC_ERR_TOO_LARGE);
    free(big);
}

static char *nested(size_t depth)
{
    char *s = xmalloc(depth * 2 + 16);
    size_t w = 0;
    s[w++] = '2';
    s[w++] = '[';
    s[w++] = '"';
    s[w++] = 'n';
    s[w++] = '"';
    s[w++] = ',';
    for (size_t i = 0; i < depth; i++)
        s[w++] = '[';
    for (size_t i = 0; i < depth; i++)
        s[w++] = ']';
    s[w++] = ']';
    s[w] = '\0';
    return s;
}

static void test_sio_nested_json(void **state)
{
    (void)state;
    struct sio_packet p;
    char *s = nested(JSON_PARSER_MAX_DEPTH - 1);
    decode_ok(s, &p);
    sio_packet_clear(&p);
    free(s);
    s = nested(JSON_PARSER_MAX_DEPTH + 1);
    decode_err(s, CODEC_ERR_MALFORMED);
    free(s);
    s = nested(100000);
    decode_err(s, CODEC_ERR_MALFORMED);
    free(s);

    /* A deep binary packet: the placeholder walk goes all the way down. */
    size_t depth = JSON_PARSER_MAX_DEPTH - 10;
    char *b = xmalloc(depth * 2 + 128);
    size_t w = (size_t)sprintf(b, "51-[\"n\",");
    for (size_t i = 0; i < depth; i++)
        b[w++] = '[';
    w += (size_t)sprintf(b + w, "{\"_placeholder\":true,\"num\":1}");
    for (size_t i = 0; i < depth; i++)
        b[w++] = ']';
    strcpy(b + w, "]");
    decode_err(b, CODEC_ERR_MALFORMED); /* num 1 of 1 attachment: found at the bottom */
    free(b);
}

/* ---- base64 helper ---------------------------------------------------------------------- */

/* The one UTF-8 check of text frames (controls allowed) and namespaces (controls refused). */
static void test_utf8_valid(void **state)
{
    (void)state;
    struct {
        const char *s;
        bool text, nsp;
    } cases[] = {
        {"", true, true},
        {"/chat", true, true},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", true, true}, /* 2, 3, 4 bytes */
        {"tab\there", true, false},                                /* a control */
        {"del\x7f", true, false},
        {"\xc0\xaf", false, false},         /* overlong '/' */
        {"\xe0\x80\xaf", false, false},     /* overlong, 3 bytes */
        {"\xed\xa0\x80", false, false},     /* a surrogate */
        {"\xf4\x90\x80\x80", false, false}, /* past U+10FFFF */
        {"\xe2\x82", false, false},         /* cut short */
        {"\x80", false, false},             /* a lone continuation byte */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const uint8_t *u = (const uint8_t *)cases[i].s;
        size_t n = strlen(cases[i].s);
        assert_int_equal(sio_utf8_valid(u, n, true), cases[i].text);
        assert_int_equal(sio_utf8_valid(u, n, false), cases[i].nsp);
    }
}

static void test_b64_roundtrip(void **state)
{
    (void)state;
    uint8_t data[64];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof(data); n++) {
        char enc[128];
        size_t elen = b64_encode(enc, data, n);
        assert_int_equal(elen, (n + 2) / 3 * 4);
        uint8_t *dec;
        size_t dlen;
        assert_int_equal(b64_decode((uint8_t *)enc, elen, &dec, &dlen), 0);
        assert_int_equal(dlen, n);
        if (n > 0)
            assert_memory_equal(dec, data, n);
        free(dec);
        /* Without the padding too. */
        size_t unpadded = elen;
        while (unpadded > 0 && enc[unpadded - 1] == '=')
            unpadded--;
        assert_int_equal(b64_decode((uint8_t *)enc, unpadded, &dec, &dlen), 0);
        assert_int_equal(dlen, n);
        free(dec);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eio_ws_types),
        cmocka_unit_test(test_eio_ws_malformed),
        cmocka_unit_test(test_eio_payload_examples),
        cmocka_unit_test(test_eio_payload_base64),
        cmocka_unit_test(test_eio_payload_malformed),
        cmocka_unit_test(test_eio_payload_callback_stops),
        cmocka_unit_test(test_eio_payload_append),
        cmocka_unit_test(test_eio_payload_large_binary),
        cmocka_unit_test(test_eio_open),
        cmocka_unit_test(test_sio_examples_decode),
        cmocka_unit_test(test_sio_examples_encode),
        cmocka_unit_test(test_sio_roundtrip_all_types),
        cmocka_unit_test(test_sio_binary_two_attachments),
        cmocka_unit_test(test_sio_binary_sequence_errors),
        cmocka_unit_test(test_sio_namespaces),
        cmocka_unit_test(test_sio_ack_ids),
        cmocka_unit_test(test_sio_malformed),
        cmocka_unit_test(test_sio_every_prefix),
        cmocka_unit_test(test_sio_limit_attachments),
        cmocka_unit_test(test_sio_limit_bytes),
        cmocka_unit_test(test_sio_nested_json),
        cmocka_unit_test(test_b64_roundtrip),
        cmocka_unit_test(test_utf8_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
