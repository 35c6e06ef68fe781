/*
 * test_auth_jwt.c - the JWT matrix of auth_verify_jwt (SPEC §3 "Tokens", §4) and the round
 * trip of auth_mint_jwt.
 *
 * Test tokens are built here with OpenSSL HMAC and our own base64url, not with libjwt nor
 * auth_mint_jwt, so a bug shared by the minting and the verifying side cannot hide.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "middleware/auth.h"
#include "middleware/auth_private.h"

#define SECRET "test-secret-0123456789"
#define NOW 1800000000LL
#define UID "64b7f0c2a1b2c3d4e5f60718"

static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tbl[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tbl[v & 63];
    }
    out[o] = '\0';
}

/* header.payload.signature with the given JSON parts; md NULL gives an empty signature. */
static char *mint(const char *header, const char *payload, const EVP_MD *md, const char *key)
{
    char *tok = malloc(4096);
    b64url((const unsigned char *)header, strlen(header), tok);
    size_t l = strlen(tok);
    tok[l++] = '.';
    b64url((const unsigned char *)payload, strlen(payload), tok + l);
    l = strlen(tok);
    tok[l++] = '.';
    tok[l] = '\0';
    if (md != NULL) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned maclen = 0;
        HMAC(md, key, (int)strlen(key), (const unsigned char *)tok, l - 1, mac, &maclen);
        b64url(mac, maclen, tok + l);
    }
    return tok;
}

static const char *HS256_HDR = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static int verify(const char *token, struct auth_claims *c)
{
    struct auth_ctx *a = auth_new(SECRET, strlen(SECRET), NULL);
    assert_non_null(a);
    int rc = auth_verify_jwt(a, token, NOW, c);
    auth_free(a);
    return rc;
}

static void expect_invalid(const char *header, const char *payload, const EVP_MD *md,
                           const char *key)
{
    char *t = mint(header, payload, md, key);
    struct auth_claims c;
    memset(&c, 0x5a, sizeof(c));
    assert_int_equal(verify(t, &c), AUTH_ERR_INVALID_TOKEN);
    /* out-params stay untouched on failure */
    assert_int_equal(((unsigned char *)&c)[0], 0x5a);
    free(t);
}

static void test_valid(void **state)
{
    (void)state;
    char *t =
        mint(HS256_HDR,
             "{\"userId\":\"" UID "\",\"role\":\"USER\",\"iat\":1799999000,\"exp\":1800003600}",
             EVP_sha256(), SECRET);
    struct auth_claims c;
    assert_int_equal(verify(t, &c), 0);
    assert_string_equal(c.person_id, UID);
    assert_string_equal(c.role, "USER");
    assert_false(c.is_admin);
    assert_int_equal(c.exp, 1800003600);
    free(t);
}

static void test_valid_no_exp_and_admin_roles(void **state)
{
    (void)state;
    const char *roles[] = {"ADMIN", "BIGBOSS", "admin", "MODERATOR"};
    const bool admin[] = {true, true, false, false};
    for (int i = 0; i < 4; i++) {
        char payload[256];
        snprintf(payload, sizeof(payload), "{\"sub\":\"" UID "\",\"role\":\"%s\"}", roles[i]);
        char *t = mint(HS256_HDR, payload, EVP_sha256(), SECRET);
        struct auth_claims c;
        assert_int_equal(verify(t, &c), 0);
        assert_int_equal(c.is_admin, admin[i]);
        assert_string_equal(c.role, roles[i]);
        assert_int_equal(c.exp, 0);
        free(t);
    }
}

static void test_expired(void **state)
{
    (void)state;
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\",\"exp\":1799999999}", EVP_sha256(), SECRET);
    /* exp == now is already expired */
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\",\"exp\":1800000000}", EVP_sha256(), SECRET);
}

static void test_not_yet_valid(void **state)
{
    (void)state;
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\",\"nbf\":1800000001}", EVP_sha256(), SECRET);
    /* nbf == now is valid */
    char *t = mint(HS256_HDR, "{\"userId\":\"" UID "\",\"nbf\":1800000000}", EVP_sha256(), SECRET);
    struct auth_claims c;
    assert_int_equal(verify(t, &c), 0);
    free(t);
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\",\"nbf\":\"1\"}", EVP_sha256(), SECRET);
}

static void test_alg_none(void **state)
{
    (void)state;
    expect_invalid("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"userId\":\"" UID "\"}", NULL, SECRET);
    /* alg none with an HS256 signature attached */
    expect_invalid("{\"alg\":\"none\"}", "{\"userId\":\"" UID "\"}", EVP_sha256(), SECRET);
    /* HS256 header with the signature stripped */
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\"}", NULL, SECRET);
}

static void test_other_algs(void **state)
{
    (void)state;
    /* Correctly signed with the right key: libjwt accepts these, we must not. */
    expect_invalid("{\"alg\":\"HS384\",\"typ\":\"JWT\"}", "{\"userId\":\"" UID "\"}", EVP_sha384(),
                   SECRET);
    expect_invalid("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", "{\"userId\":\"" UID "\"}", EVP_sha512(),
                   SECRET);
    /* HS384 header, HS256 signature */
    expect_invalid("{\"alg\":\"HS384\"}", "{\"userId\":\"" UID "\"}", EVP_sha256(), SECRET);
    /* RS256 header with an HMAC signature (key confusion) */
    expect_invalid("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", "{\"userId\":\"" UID "\"}", EVP_sha256(),
                   SECRET);
    /* lower-case alg string */
    expect_invalid("{\"alg\":\"hs256\"}", "{\"userId\":\"" UID "\"}", EVP_sha256(), SECRET);
    /* no alg at all */
    expect_invalid("{\"typ\":\"JWT\"}", "{\"userId\":\"" UID "\"}", EVP_sha256(), SECRET);
}

static void test_wrong_key(void **state)
{
    (void)state;
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\"}", EVP_sha256(), "another-secret");
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\"}", EVP_sha256(), SECRET "x");
}

static void test_tampered_payload(void **state)
{
    (void)state;
    char *good =
        mint(HS256_HDR, "{\"userId\":\"" UID "\",\"role\":\"USER\"}", EVP_sha256(), SECRET);
    char *evil =
        mint(HS256_HDR, "{\"userId\":\"" UID "\",\"role\":\"ADMIN\"}", EVP_sha256(), SECRET);
    /* evil's header and payload with good's signature */
    char *sig = strrchr(good, '.');
    char *esig = strrchr(evil, '.');
    strcpy(esig, sig);
    struct auth_claims c;
    assert_int_equal(verify(good, &c), 0);
    assert_int_equal(verify(evil, &c), AUTH_ERR_INVALID_TOKEN);
    /* one flipped character in the signature */
    sig[3] = sig[3] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(good, &c), AUTH_ERR_INVALID_TOKEN);
    free(good);
    free(evil);
}

static void test_garbage(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "..",
        "...",
        "eyJhbGciOiJIUzI1NiJ9..sig",
        ".eyJ1c2VySWQiOiJ4In0.sig",
        "not base64!.x.y",
        "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VySWQiOiJ4In0.s i g",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJ1c2VySWQiOiJ4In0.sig",
    };
    struct auth_claims c;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(verify(bad[i], &c), AUTH_ERR_INVALID_TOKEN);
    /* header/payload that are not JSON, correctly signed */
    expect_invalid("not json", "{\"userId\":\"" UID "\"}", EVP_sha256(), SECRET);
    expect_invalid(HS256_HDR, "not json", EVP_sha256(), SECRET);
    expect_invalid(HS256_HDR, "[1,2,3]", EVP_sha256(), SECRET);
    /* a huge token */
    char *huge = malloc(20000);
    memset(huge, 'A', 19999);
    huge[19999] = '\0';
    huge[100] = '.';
    huge[200] = '.';
    assert_int_equal(verify(huge, &c), AUTH_ERR_INVALID_TOKEN);
    free(huge);
    struct auth_ctx *a = auth_new(SECRET, strlen(SECRET), NULL);
    assert_int_equal(auth_verify_jwt(a, NULL, NOW, &c), AUTH_ERR_INVALID_TOKEN);
    auth_free(a);
}

static void test_missing_id(void **state)
{
    (void)state;
    expect_invalid(HS256_HDR, "{\"role\":\"ADMIN\"}", EVP_sha256(), SECRET);
    expect_invalid(HS256_HDR, "{}", EVP_sha256(), SECRET);
    expect_invalid(HS256_HDR, "{\"userId\":\"\"}", EVP_sha256(), SECRET);
    expect_invalid(HS256_HDR, "{\"userId\":42}", EVP_sha256(), SECRET);
    /* a non-string userId is an error, not a reason to use sub */
    expect_invalid(HS256_HDR, "{\"userId\":42,\"sub\":\"" UID "\"}", EVP_sha256(), SECRET);
    expect_invalid(HS256_HDR, "{\"sub\":[\"x\"]}", EVP_sha256(), SECRET);
    /* longer than the claims buffer */
    char payload[512];
    char longid[200];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    snprintf(payload, sizeof(payload), "{\"userId\":\"%s\"}", longid);
    expect_invalid(HS256_HDR, payload, EVP_sha256(), SECRET);
}

static void test_sub_fallback(void **state)
{
    (void)state;
    struct auth_claims c;
    char *t = mint(HS256_HDR, "{\"sub\":\"" UID "\"}", EVP_sha256(), SECRET);
    assert_int_equal(verify(t, &c), 0);
    assert_string_equal(c.person_id, UID);
    free(t);
    /* userId wins over sub */
    t = mint(HS256_HDR, "{\"sub\":\"aaaaaaaaaaaaaaaaaaaaaaaa\",\"userId\":\"" UID "\"}",
             EVP_sha256(), SECRET);
    assert_int_equal(verify(t, &c), 0);
    assert_string_equal(c.person_id, UID);
    free(t);
    /* userId null falls back to sub */
    t = mint(HS256_HDR, "{\"userId\":null,\"sub\":\"" UID "\"}", EVP_sha256(), SECRET);
    assert_int_equal(verify(t, &c), 0);
    assert_string_equal(c.person_id, UID);
    free(t);
}

static void test_string_exp(void **state)
{
    (void)state;
    /* far in the future, but a string: invalid */
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\",\"exp\":\"9999999999\"}", EVP_sha256(),
                   SECRET);
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\",\"exp\":9999999999.5}", EVP_sha256(),
                   SECRET);
    expect_invalid(HS256_HDR, "{\"userId\":\"" UID "\",\"exp\":true}", EVP_sha256(), SECRET);
}

static void test_extra_dots(void **state)
{
    (void)state;
    char *t = mint(HS256_HDR, "{\"userId\":\"" UID "\"}", EVP_sha256(), SECRET);
    struct auth_claims c;
    assert_int_equal(verify(t, &c), 0);
    char buf[4200];
    snprintf(buf, sizeof(buf), "%s.", t);
    assert_int_equal(verify(buf, &c), AUTH_ERR_INVALID_TOKEN);
    snprintf(buf, sizeof(buf), "%s.extra", t);
    assert_int_equal(verify(buf, &c), AUTH_ERR_INVALID_TOKEN);
    snprintf(buf, sizeof(buf), ".%s", t);
    assert_int_equal(verify(buf, &c), AUTH_ERR_INVALID_TOKEN);
    /* a dot doubled inside */
    char *d = strchr(t, '.');
    snprintf(buf, sizeof(buf), "%.*s..%s", (int)(d - t), t, d + 1);
    assert_int_equal(verify(buf, &c), AUTH_ERR_INVALID_TOKEN);
    free(t);
}

static void test_empty_secret_refused(void **state)
{
    (void)state;
    assert_null(auth_new("", 0, NULL));
    assert_null(auth_new(NULL, 5, NULL));
    assert_null(auth_mint_jwt("", 0, UID, NULL, 60, NOW));
    assert_null(auth_mint_jwt(SECRET, strlen(SECRET), "", NULL, 60, NOW));
    assert_null(auth_mint_jwt(SECRET, strlen(SECRET), NULL, NULL, 60, NOW));
}

static void test_mint_round_trip(void **state)
{
    (void)state;
    struct auth_ctx *a = auth_new(SECRET, strlen(SECRET), NULL);
    char *t = auth_mint_jwt(SECRET, strlen(SECRET), UID, "ADMIN", 3600, NOW);
    assert_non_null(t);
    struct auth_claims c;
    assert_int_equal(auth_verify_jwt(a, t, NOW, &c), 0);
    assert_string_equal(c.person_id, UID);
    assert_string_equal(c.role, "ADMIN");
    assert_true(c.is_admin);
    assert_int_equal(c.exp, NOW + 3600);
    /* expired one hour later, and never valid under another key */
    assert_int_equal(auth_verify_jwt(a, t, NOW + 3600, &c), AUTH_ERR_INVALID_TOKEN);
    struct auth_ctx *b = auth_new("other", 5, NULL);
    assert_int_equal(auth_verify_jwt(b, t, NOW, &c), AUTH_ERR_INVALID_TOKEN);
    free(t);

    /* no role, no expiry */
    t = auth_mint_jwt(SECRET, strlen(SECRET), UID, NULL, 0, NOW);
    assert_non_null(t);
    assert_int_equal(auth_verify_jwt(a, t, NOW + 100000000, &c), 0);
    assert_string_equal(c.role, "");
    assert_false(c.is_admin);
    assert_int_equal(c.exp, 0);
    free(t);
    auth_free(a);
    auth_free(b);
}

static void test_bearer_header(void **state)
{
    (void)state;
    assert_string_equal(auth_bearer_from_header("Bearer abc.def.ghi"), "abc.def.ghi");
    assert_string_equal(auth_bearer_from_header("bearer abc"), "abc");
    assert_string_equal(auth_bearer_from_header("BEARER   abc"), "abc");
    assert_string_equal(auth_bearer_from_header("  Bearer\tabc"), "abc");
    assert_null(auth_bearer_from_header("Bearer"));
    assert_null(auth_bearer_from_header("Bearer   "));
    assert_null(auth_bearer_from_header("Bearerabc"));
    assert_null(auth_bearer_from_header("Basic dXNlcjpwYXNz"));
    assert_null(auth_bearer_from_header(""));
    assert_null(auth_bearer_from_header(NULL));
}

/* The verified-token cache: a second verification answers the same, expiry and nbf are
 * still enforced on a hit, and a near-identical string is not a hit. */
static void test_cache(void **state)
{
    (void)state;
    struct auth_ctx *a = auth_new(SECRET, strlen(SECRET), NULL);
    char *t =
        mint(HS256_HDR,
             "{\"userId\":\"" UID "\",\"role\":\"ADMIN\",\"nbf\":1800000000,\"exp\":1800000100}",
             EVP_sha256(), SECRET);
    struct auth_claims c1, c2;
    assert_int_equal(auth_verify_jwt(a, t, NOW, &c1), 0);
    assert_int_equal(auth_verify_jwt(a, t, NOW + 99, &c2), 0);
    assert_memory_equal(&c1, &c2, sizeof(c1));
    /* before nbf (a clock that went back), then expired: both refused from the cache */
    assert_int_equal(auth_verify_jwt(a, t, NOW - 1, &c2), AUTH_ERR_INVALID_TOKEN);
    assert_int_equal(auth_verify_jwt(a, t, NOW + 100, &c2), AUTH_ERR_INVALID_TOKEN);
    /* the expired entry was dropped: at an earlier time the full check runs again and
     * passes, as it should at that time */
    assert_int_equal(auth_verify_jwt(a, t, NOW + 50, &c2), 0);
    /* one character changed in the payload: not served from the cache */
    char *dot = strchr(t, '.');
    dot[5] = dot[5] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_verify_jwt(a, t, NOW, &c2), AUTH_ERR_INVALID_TOKEN);
    free(t);
    /* a token verified under one secret is not valid for another context */
    t = mint(HS256_HDR, "{\"userId\":\"" UID "\"}", EVP_sha256(), SECRET);
    assert_int_equal(auth_verify_jwt(a, t, NOW, &c1), 0);
    struct auth_ctx *b = auth_new("other", 5, NULL);
    assert_int_equal(auth_verify_jwt(b, t, NOW, &c1), AUTH_ERR_INVALID_TOKEN);
    auth_free(b);
    free(t);
    auth_free(a);
}

/* The compact cache: a verified token is answered by the cache-only lookup with the same
 * claims; a token whose id is not a lowercase ObjectId or whose role is not a known one is
 * never cached (so its claims come back exactly as written) but still verifies. */
static void test_cache_compact(void **state)
{
    (void)state;
    struct auth_ctx *a = auth_new(SECRET, strlen(SECRET), NULL);
    struct auth_claims c1, c2;
    char *t = mint(HS256_HDR, "{\"userId\":\"" UID "\",\"role\":\"BIGBOSS\",\"exp\":1800000100}",
                   EVP_sha256(), SECRET);
    assert_int_equal(auth__verify_jwt_cached(a, t, NOW, &c1), AUTH_ERR_WOULD_BLOCK);
    assert_int_equal(auth_verify_jwt(a, t, NOW, &c1), 0);
    assert_int_equal(auth__verify_jwt_cached(a, t, NOW, &c2), 0);
    assert_memory_equal(&c1, &c2, sizeof(c1));
    assert_string_equal(c2.person_id, UID);
    assert_string_equal(c2.role, "BIGBOSS");
    assert_true(c2.is_admin);
    assert_int_equal(c2.exp, 1800000100);
    assert_int_equal(auth__verify_jwt_cached(a, t, NOW + 100, &c2), AUTH_ERR_INVALID_TOKEN);
    free(t);

    const char *payloads[] = {
        "{\"userId\":\"64B7F0C2A1B2C3D4E5F60718\"}",           /* upper-case id */
        "{\"userId\":\"service-account\",\"role\":\"ADMIN\"}", /* not an ObjectId */
        "{\"userId\":\"" UID "\",\"role\":\"SUPERVISOR\"}",    /* a role we do not list */
    };
    const char *ids[] = {"64B7F0C2A1B2C3D4E5F60718", "service-account", UID};
    const char *roles[] = {"", "ADMIN", "SUPERVISOR"};
    for (int i = 0; i < 3; i++) {
        t = mint(HS256_HDR, payloads[i], EVP_sha256(), SECRET);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(auth_verify_jwt(a, t, NOW, &c1), 0);
            assert_string_equal(c1.person_id, ids[i]);
            assert_string_equal(c1.role, roles[i]);
            assert_int_equal(auth__verify_jwt_cached(a, t, NOW, &c2), AUTH_ERR_WOULD_BLOCK);
        }
        free(t);
    }
    assert_int_equal(auth__verify_jwt_cached(a, "a.b.c", NOW, &c2), AUTH_ERR_WOULD_BLOCK);
    auth_free(a);
}

/* Far more distinct tokens than the cache holds: every one still verifies (evictions are
 * invisible but for the cost), wrong ones still fail, and ASan sees no leak at the end. */
static void test_cache_many(void **state)
{
    (void)state;
    struct auth_ctx *a = auth_new(SECRET, strlen(SECRET), NULL);
    struct auth_claims c;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 6000; i++) {
            char payload[128], id[25];
            snprintf(id, sizeof(id), "%024x", i);
            snprintf(payload, sizeof(payload), "{\"userId\":\"%s\"}", id);
            char *t = mint(HS256_HDR, payload, EVP_sha256(), i % 7 == 0 ? "bad" : SECRET);
            /* 6000 tokens fit the cache: the second round finds every good one in it */
            if (round == 1)
                assert_int_equal(auth__verify_jwt_cached(a, t, NOW, &c),
                                 i % 7 == 0 ? AUTH_ERR_WOULD_BLOCK : 0);
            int rc = auth_verify_jwt(a, t, NOW, &c);
            if (i % 7 == 0) {
                assert_int_equal(rc, AUTH_ERR_INVALID_TOKEN);
            } else {
                assert_int_equal(rc, 0);
                assert_string_equal(c.person_id, id);
            }
            free(t);
        }
    }
    auth_free(a);
}

#define CACHE_THREADS 8
#define CACHE_TOKENS 64

struct cache_worker {
    struct auth_ctx *a;
    char **tokens;
    int ok;
};

static void *cache_worker_run(void *arg)
{
    struct cache_worker *w = arg;
    struct auth_claims c;
    for (int r = 0; r < 200; r++)
        for (int i = 0; i < CACHE_TOKENS; i++)
            if (auth_verify_jwt(w->a, w->tokens[i], NOW, &c) == 0 &&
                strtol(c.person_id + 16, NULL, 16) == i)
                w->ok++;
    return NULL;
}

static void test_cache_threads(void **state)
{
    (void)state;
    struct auth_ctx *a = auth_new(SECRET, strlen(SECRET), NULL);
    char *tokens[CACHE_TOKENS];
    for (int i = 0; i < CACHE_TOKENS; i++) {
        char payload[128];
        snprintf(payload, sizeof(payload), "{\"sub\":\"%024x\"}", i);
        tokens[i] = mint(HS256_HDR, payload, EVP_sha256(), SECRET);
    }
    pthread_t th[CACHE_THREADS];
    struct cache_worker w[CACHE_THREADS];
    for (int i = 0; i < CACHE_THREADS; i++) {
        w[i] = (struct cache_worker){.a = a, .tokens = tokens};
        assert_int_equal(pthread_create(&th[i], NULL, cache_worker_run, &w[i]), 0);
    }
    for (int i = 0; i < CACHE_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].ok, 200 * CACHE_TOKENS);
    }
    for (int i = 0; i < CACHE_TOKENS; i++)
        free(tokens[i]);
    auth_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_valid_no_exp_and_admin_roles),
        cmocka_unit_test(test_expired),         cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_alg_none),        cmocka_unit_test(test_other_algs),
        cmocka_unit_test(test_wrong_key),       cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_garbage),         cmocka_unit_test(test_missing_id),
        cmocka_unit_test(test_sub_fallback),    cmocka_unit_test(test_string_exp),
        cmocka_unit_test(test_extra_dots),      cmocka_unit_test(test_empty_secret_refused),
        cmocka_unit_test(test_mint_round_trip), cmocka_unit_test(test_bearer_header),
        cmocka_unit_test(test_cache),           cmocka_unit_test(test_cache_compact),
        cmocka_unit_test(test_cache_many),      cmocka_unit_test(test_cache_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
