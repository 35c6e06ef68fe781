/*
 * test_auth_person.c - auth_authenticate against the real SQLite store: the person rules of
 * SPEC §3 "Tokens" and "Admin" and the error codes of §4.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "middleware/auth.h"
#include "store/store.h"

#define SECRET "person-test-secret"
#define NOW 1800000000LL

struct fixture {
    char dir[64];
    struct store *store;
    struct auth_ctx *auth;
    char user[OID_HEX_LEN + 1];
    char inactive[OID_HEX_LEN + 1];
    char admin[OID_HEX_LEN + 1];
    char boss[OID_HEX_LEN + 1];
    char inactive_admin[OID_HEX_LEN + 1];
    char anon[OID_HEX_LEN + 1];
    char session[65];
};

static void make_user(struct store *s, const char *name, const char *role, bool active,
                      char out[OID_HEX_LEN + 1])
{
    struct store_user_new u = {.username = name, .role = role, .is_active = active};
    struct store_person p = {0};
    assert_int_equal(store_user_create(s, &u, &p), 0);
    strcpy(out, p.id);
    store_person_clear(&p);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/gw-auth-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char url[128];
    snprintf(url, sizeof(url), "sqlite:%s/t.db", f->dir);
    assert_int_equal(store_open(url, &f->store), 0);
    f->auth = auth_new(SECRET, strlen(SECRET), f->store);
    assert_non_null(f->auth);
    make_user(f->store, "alice", "USER", true, f->user);
    make_user(f->store, "bob", "USER", false, f->inactive);
    make_user(f->store, "root", "ADMIN", true, f->admin);
    make_user(f->store, "boss", "BIGBOSS", true, f->boss);
    make_user(f->store, "oldroot", "ADMIN", false, f->inactive_admin);
    struct store_conversation c = {0};
    assert_int_equal(store_conversation_create(f->store, NULL, "t", NULL, &c), 0);
    struct store_person a = {0};
    assert_int_equal(store_anonymous_create(f->store, c.id, "guest", &a, f->session), 0);
    strcpy(f->anon, a.id);
    store_person_clear(&a);
    store_conversation_clear(&c);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    auth_free(f->auth);
    assert_int_equal(store_close(f->store, 2000), 0);
    char path[128];
    const char *files[] = {"t.db", "t.db-wal", "t.db-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", f->dir, files[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static char *tok(const char *id, const char *role)
{
    char *t = auth_mint_jwt(SECRET, strlen(SECRET), id, role, 3600, NOW);
    assert_non_null(t);
    return t;
}

/* Authenticates and checks the code; on failure also that *out was left untouched. */
static int auth(struct fixture *f, const char *jwt, const char *session, bool admin,
                struct auth_result *r)
{
    memset(r, 0x5a, sizeof(*r));
    int rc = auth_authenticate(f->auth, jwt, session, admin, NOW, r);
    if (rc != 0)
        assert_int_equal(((unsigned char *)r)[0], 0x5a);
    return rc;
}

static void test_user_token(void **state)
{
    struct fixture *f = *state;
    struct auth_result r;
    char *t = tok(f->user, NULL);
    assert_int_equal(auth(f, t, NULL, false, &r), 0);
    assert_true(r.has_person);
    assert_false(r.is_admin);
    assert_string_equal(r.person.id, f->user);
    assert_string_equal(r.person.username, "alice");
    assert_false(r.person.is_anonymous);
    assert_string_equal(r.claims.person_id, f->user);
    auth_result_clear(&r);
    /* a plain user on an admin route */
    assert_int_equal(auth(f, t, NULL, true, &r), AUTH_ERR_FORBIDDEN);
    free(t);
    /* a user token that claims ADMIN does not make alice an admin */
    t = tok(f->user, "ADMIN");
    assert_int_equal(auth(f, t, NULL, true, &r), AUTH_ERR_FORBIDDEN);
    assert_int_equal(auth(f, t, NULL, false, &r), 0);
    assert_false(r.is_admin);
    auth_result_clear(&r);
    free(t);
}

static void test_unknown_and_inactive(void **state)
{
    struct fixture *f = *state;
    struct auth_result r;
    char id[OID_HEX_LEN + 1];
    util_oid_new(id);
    char *t = tok(id, NULL);
    assert_int_equal(auth(f, t, NULL, false, &r), AUTH_ERR_UNKNOWN_PERSON);
    assert_int_equal(auth(f, t, NULL, true, &r), AUTH_ERR_UNKNOWN_PERSON);
    free(t);
    t = tok("not-an-object-id", NULL);
    assert_int_equal(auth(f, t, NULL, false, &r), AUTH_ERR_UNKNOWN_PERSON);
    free(t);
    t = tok(f->inactive, NULL);
    assert_int_equal(auth(f, t, NULL, false, &r), AUTH_ERR_UNKNOWN_PERSON);
    free(t);
    /* an inactive stored admin gets 401, not the service-token pass */
    t = tok(f->inactive_admin, "ADMIN");
    assert_int_equal(auth(f, t, NULL, true, &r), AUTH_ERR_UNKNOWN_PERSON);
    assert_int_equal(auth(f, t, NULL, false, &r), AUTH_ERR_UNKNOWN_PERSON);
    free(t);
}

static void test_admin(void **state)
{
    struct fixture *f = *state;
    struct auth_result r;
    char *t = tok(f->admin, "ADMIN");
    assert_int_equal(auth(f, t, NULL, true, &r), 0);
    assert_true(r.has_person);
    assert_true(r.is_admin);
    assert_string_equal(r.person.role, "ADMIN");
    auth_result_clear(&r);
    assert_int_equal(auth(f, t, NULL, false, &r), 0);
    assert_true(r.is_admin);
    auth_result_clear(&r);
    free(t);
    t = tok(f->boss, "BIGBOSS");
    assert_int_equal(auth(f, t, NULL, true, &r), 0);
    assert_true(r.is_admin);
    auth_result_clear(&r);
    free(t);
    /* a stored admin whose token has no admin role is not an admin */
    t = tok(f->admin, NULL);
    assert_int_equal(auth(f, t, NULL, true, &r), AUTH_ERR_FORBIDDEN);
    free(t);
}

static void test_service_token(void **state)
{
    struct fixture *f = *state;
    struct auth_result r;
    char id[OID_HEX_LEN + 1];
    util_oid_new(id);
    const char *ids[] = {id, "operator"};
    for (int i = 0; i < 2; i++) {
        char *t = tok(ids[i], i == 0 ? "ADMIN" : "BIGBOSS");
        assert_int_equal(auth(f, t, NULL, true, &r), 0);
        assert_false(r.has_person);
        assert_true(r.is_admin);
        assert_string_equal(r.claims.person_id, ids[i]);
        auth_result_clear(&r);
        /* only on admin routes */
        assert_int_equal(auth(f, t, NULL, false, &r), AUTH_ERR_UNKNOWN_PERSON);
        free(t);
    }
}

static void test_demoted_admin(void **state)
{
    struct fixture *f = *state;
    struct auth_result r;
    /* "demoted": the token says ADMIN, the store says USER (alice was never promoted, which is
     * the same state as an admin whose role was taken away) */
    char *t = tok(f->user, "BIGBOSS");
    assert_int_equal(auth(f, t, NULL, true, &r), AUTH_ERR_FORBIDDEN);
    free(t);
}

static void test_session_token(void **state)
{
    struct fixture *f = *state;
    struct auth_result r;
    assert_int_equal(auth(f, NULL, f->session, false, &r), 0);
    assert_true(r.has_person);
    assert_false(r.is_admin);
    assert_true(r.person.is_anonymous);
    assert_string_equal(r.person.id, f->anon);
    assert_string_equal(r.person.username, "guest");
    assert_string_equal(r.claims.person_id, "");
    auth_result_clear(&r);
    assert_int_equal(auth(f, NULL, f->session, true, &r), AUTH_ERR_FORBIDDEN);

    char wrong[65];
    memcpy(wrong, f->session, sizeof(wrong));
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    assert_int_equal(auth(f, NULL, wrong, false, &r), AUTH_ERR_UNKNOWN_PERSON);
    assert_int_equal(auth(f, NULL, "", false, &r), AUTH_ERR_UNKNOWN_PERSON);
    assert_int_equal(auth(f, NULL, "' OR 1=1 --", false, &r), AUTH_ERR_UNKNOWN_PERSON);
    char huge[2000];
    memset(huge, 'a', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    assert_int_equal(auth(f, NULL, huge, false, &r), AUTH_ERR_UNKNOWN_PERSON);
    /* an anonymous id inside a JWT is that person, never an admin */
    char *t = tok(f->anon, "ADMIN");
    assert_int_equal(auth(f, t, NULL, true, &r), AUTH_ERR_FORBIDDEN);
    free(t);
}

static void test_missing_and_invalid(void **state)
{
    struct fixture *f = *state;
    struct auth_result r;
    assert_int_equal(auth(f, NULL, NULL, false, &r), AUTH_ERR_MISSING);
    char *t = tok(f->user, NULL);
    assert_int_equal(auth(f, t, f->session, false, &r), AUTH_ERR_MISSING);
    /* expired: verified at NOW + 3600 */
    memset(&r, 0x5a, sizeof(r));
    assert_int_equal(auth_authenticate(f->auth, t, NULL, false, NOW + 3600, &r),
                     AUTH_ERR_INVALID_TOKEN);
    free(t);
    assert_int_equal(auth(f, "garbage", NULL, false, &r), AUTH_ERR_INVALID_TOKEN);
    assert_int_equal(auth(f, "", NULL, true, &r), AUTH_ERR_INVALID_TOKEN);
    /* signed with another secret */
    t = auth_mint_jwt("other", 5, f->admin, "ADMIN", 3600, NOW);
    assert_int_equal(auth(f, t, NULL, true, &r), AUTH_ERR_INVALID_TOKEN);
    free(t);
    /* no store: 503, never a pass */
    struct auth_ctx *nostore = auth_new(SECRET, strlen(SECRET), NULL);
    t = tok(f->user, NULL);
    assert_int_equal(auth_authenticate(nostore, t, NULL, false, NOW, &r), AUTH_ERR_STORE);
    free(t);
    auth_free(nostore);
    auth_result_clear(NULL);
}

/* Runs one statement on the fixture's database through a side connection. */
static void side_sql(struct fixture *f, const char *sql)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/t.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* A failing store is a 503 (AUTH_ERR_STORE), never a 401: the tables vanish under the store
 * (renamed by another connection), then come back. */
static void test_store_failure(void **state)
{
    struct fixture *f = *state;
    struct auth_result r;
    char *t = tok(f->user, NULL);
    char *svc = tok(f->admin, "ADMIN");
    side_sql(f, "ALTER TABLE users RENAME TO users_away;"
                "ALTER TABLE anonymous_participants RENAME TO anonymous_away;");
    assert_int_equal(auth(f, t, NULL, false, &r), AUTH_ERR_STORE);
    /* an admin token is not let through on a store failure either */
    assert_int_equal(auth(f, svc, NULL, true, &r), AUTH_ERR_STORE);
    assert_int_equal(auth(f, NULL, f->session, false, &r), AUTH_ERR_STORE);
    side_sql(f, "ALTER TABLE users_away RENAME TO users;"
                "ALTER TABLE anonymous_away RENAME TO anonymous_participants;");
    assert_int_equal(auth(f, t, NULL, false, &r), 0);
    auth_result_clear(&r);
    assert_int_equal(auth(f, NULL, f->session, false, &r), 0);
    auth_result_clear(&r);
    free(t);
    free(svc);
}

/* A handshake on a loop thread: a verified token whose person is not cached leaves its claims
 * (has_claims) for the reconnect ticket, which is then taken without verifying the token again;
 * a token never verified, or a session token, leaves none. */
static void test_ticket_after_cached_miss(void **state)
{
    struct fixture *f = *state;
    struct auth_result r;
    struct store_id_list convs = {0};
    char *t = tok(f->user, NULL);
    assert_int_equal(auth(f, t, NULL, false, &r), 0); /* fills the verified-token cache */
    auth_result_clear(&r);

    /* Rows expire at once from now on; tickets keep their own bound. */
    store_cache_set_ttl(f->store, 1);
    int64_t t0 = util_mono_ms();
    while (util_mono_ms() < t0 + 2) {
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(auth_authenticate_cached(f->auth, t, NULL, false, NOW, &r),
                     AUTH_ERR_WOULD_BLOCK);
    assert_true(r.has_claims);
    assert_false(r.has_person);
    assert_string_equal(r.claims.person_id, f->user);
    /* no ticket yet: nothing taken, r unchanged */
    assert_int_equal(auth_authenticate_ticket(f->auth, &r, &convs), AUTH_ERR_WOULD_BLOCK);
    assert_false(r.has_person);
    assert_string_equal(r.claims.person_id, f->user);

    char ids[1][OID_HEX_LEN + 1];
    memcpy(ids[0], f->anon, sizeof(ids[0])); /* any id: the ticket carries what it was given */
    struct store_id_list left = {.ids = ids, .count = 1};
    store_ticket_put(f->store, store_ticket_stamp(f->store), f->user, "alice", 7000, &left);
    /* A ticket is used once a poll of the changes started lately: wait for one (bounded). */
    int rc = AUTH_ERR_WOULD_BLOCK;
    int64_t until = util_mono_ms() + 5000;
    while (rc != 0 && util_mono_ms() < until) {
        rc = auth_authenticate_ticket(f->auth, &r, &convs);
        if (rc != 0) {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
    }
    assert_int_equal(rc, 0);
    assert_true(r.has_person);
    assert_string_equal(r.person.id, f->user);
    assert_string_equal(r.person.username, "alice");
    assert_int_equal(r.person.last_seen_ms, 7000);
    assert_int_equal(convs.count, 1);
    assert_string_equal(convs.ids[0], f->anon);
    store_id_list_free(&convs);
    auth_result_clear(&r);
    free(t);

    /* A token this process never verified: no claims, so no ticket either. */
    t = auth_mint_jwt(SECRET, strlen(SECRET), f->admin, NULL, 7200, NOW);
    assert_non_null(t);
    assert_int_equal(auth_authenticate_cached(f->auth, t, NULL, false, NOW, &r),
                     AUTH_ERR_WOULD_BLOCK);
    assert_false(r.has_claims);
    assert_int_equal(auth_authenticate_ticket(f->auth, &r, &convs), AUTH_ERR_WOULD_BLOCK);
    auth_result_clear(&r);
    free(t);
    /* Nor a session token. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(auth_authenticate_cached(f->auth, NULL, f->session, false, NOW, &r),
                     AUTH_ERR_WOULD_BLOCK);
    assert_false(r.has_claims);
    auth_result_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_user_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_inactive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_demoted_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ticket_after_cached_miss, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
