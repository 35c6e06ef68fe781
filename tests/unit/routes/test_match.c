/*
 * test_match.c - unit tests of the pure helpers of routes/: route patterns, method names, the
 * Allow text, the CORS allowlist, the loopback test, the ids list, the person view and the
 * participants order.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "routes/route_internal.h"

/* --- route__match ---------------------------------------------------------------------------- */

static void test_match_fixed(void **state)
{
    char p[ROUTE_MAX_PARAMS][ROUTE_PARAM_LEN];
    int n = -1;

    (void)state;
    assert_true(route__match("/api/users/me", "/api/users/me", p, &n));
    assert_int_equal(n, 0);
    assert_true(route__match("/api/users/me", "/api/users/me/", p, &n));
    assert_false(route__match("/api/users/me", "/api/users/mee", p, &n));
    assert_false(route__match("/api/users/me", "/api/users/m", p, &n));
    assert_false(route__match("/api/users/me", "/api/users/me//", p, &n));
    assert_false(route__match("/api/users/me", "", p, &n));
    assert_false(route__match("/healthz", "/healthz/x", p, &n));
}

static void test_match_params(void **state)
{
    char p[ROUTE_MAX_PARAMS][ROUTE_PARAM_LEN];
    int n = -1;

    (void)state;
    assert_true(route__match("/api/conversations/:id/participants",
                             "/api/conversations/abc/participants", p, &n));
    assert_int_equal(n, 1);
    assert_string_equal(p[0], "abc");
    /* An empty segment is not a parameter. */
    assert_false(route__match("/api/users/:id", "/api/users/", p, &n));
    assert_false(route__match("/api/users/:id", "/api/users", p, &n));
    /* A parameter never spans a slash. */
    assert_false(route__match("/api/users/:id", "/api/users/a/b", p, &n));
    assert_true(route__match("/api/admin/users/:userId/disconnect",
                             "/api/admin/users/0123456789abcdef01234567/disconnect", p, &n));
    assert_string_equal(p[0], "0123456789abcdef01234567");
}

static void test_match_param_too_long(void **state)
{
    char p[ROUTE_MAX_PARAMS][ROUTE_PARAM_LEN];
    char path[ROUTE_PARAM_LEN + 32];
    int n;

    (void)state;
    strcpy(path, "/api/users/");
    memset(path + 11, 'a', ROUTE_PARAM_LEN - 1);
    path[11 + ROUTE_PARAM_LEN - 1] = '\0';
    assert_true(route__match("/api/users/:id", path, p, &n));
    assert_int_equal((int)strlen(p[0]), ROUTE_PARAM_LEN - 1);
    strcat(path, "a");
    assert_false(route__match("/api/users/:id", path, p, &n));
}

/* --- methods and Allow ----------------------------------------------------------------------- */

static void test_methods(void **state)
{
    char buf[96];

    (void)state;
    assert_int_equal(route__method_bit("GET"), ROUTE_GET);
    assert_int_equal(route__method_bit("POST"), ROUTE_POST);
    assert_int_equal(route__method_bit("OPTIONS"), ROUTE_OPTIONS);
    assert_int_equal(route__method_bit("get"), ROUTE_OTHER);
    assert_int_equal(route__method_bit("BREW"), ROUTE_OTHER);

    route__allow_text(ROUTE_GET | ROUTE_HEAD | ROUTE_OPTIONS, buf, sizeof(buf));
    assert_string_equal(buf, "GET, HEAD, OPTIONS");
    route__allow_text(ROUTE_OPTIONS | ROUTE_POST, buf, sizeof(buf));
    assert_string_equal(buf, "POST, OPTIONS");
    route__allow_text(0, buf, sizeof(buf));
    assert_string_equal(buf, "");
    /* Truncation never overflows and keeps whole names. */
    route__allow_text(ROUTE_GET | ROUTE_POST, buf, 6);
    assert_string_equal(buf, "GET");
}

/* --- CORS ------------------------------------------------------------------------------------ */

static void test_cors(void **state)
{
    (void)state;
    assert_false(route__cors_allowed("", "http://a.example"));
    assert_false(route__cors_allowed(NULL, "http://a.example"));
    assert_false(route__cors_allowed("http://a.example", NULL));
    assert_false(route__cors_allowed("http://a.example", ""));
    assert_true(route__cors_allowed("http://a.example", "http://a.example"));
    assert_true(route__cors_allowed("http://b.example, http://a.example", "http://a.example"));
    assert_true(route__cors_allowed(" http://a.example/ ", "http://a.example"));
    assert_true(route__cors_allowed("HTTP://A.example", "http://a.example"));
    assert_false(route__cors_allowed("http://a.example", "http://a.example.evil"));
    assert_false(route__cors_allowed("http://a.example.evil", "http://a.example"));
    assert_false(route__cors_allowed("http://a.example:8080", "http://a.example"));
    assert_true(route__cors_allowed("*", "http://anything.example"));
    assert_true(route__cors_allowed("http://x.example,*", "null"));
    assert_false(route__cors_allowed(",,", "http://a.example"));
}

/* --- loopback -------------------------------------------------------------------------------- */

static void test_loopback(void **state)
{
    struct sockaddr_in in = {0};
    struct sockaddr_in6 in6 = {0};

    (void)state;
    in.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    assert_true(route__is_loopback((struct sockaddr *)&in));
    inet_pton(AF_INET, "127.8.9.10", &in.sin_addr);
    assert_true(route__is_loopback((struct sockaddr *)&in));
    inet_pton(AF_INET, "10.0.0.1", &in.sin_addr);
    assert_false(route__is_loopback((struct sockaddr *)&in));
    inet_pton(AF_INET, "128.0.0.1", &in.sin_addr);
    assert_false(route__is_loopback((struct sockaddr *)&in));

    in6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    assert_true(route__is_loopback((struct sockaddr *)&in6));
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
    assert_true(route__is_loopback((struct sockaddr *)&in6));
    inet_pton(AF_INET6, "::ffff:192.168.1.1", &in6.sin6_addr);
    assert_false(route__is_loopback((struct sockaddr *)&in6));
    inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr);
    assert_false(route__is_loopback((struct sockaddr *)&in6));
    assert_false(route__is_loopback(NULL));
}

/* --- ids ------------------------------------------------------------------------------------- */

struct collect {
    char items[8][32];
    int n;
};

static void collect_one(void *cls, const char *s, size_t len)
{
    struct collect *c = cls;
    assert_true(len < sizeof(c->items[0]));
    memcpy(c->items[c->n], s, len);
    c->items[c->n][len] = '\0';
    c->n++;
}

static void test_split_ids(void **state)
{
    struct collect c = {0};

    (void)state;
    assert_int_equal(route__split_ids("a,b, c ,,d", 10, collect_one, &c), 4);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.items[0], "a");
    assert_string_equal(c.items[2], "c");
    assert_string_equal(c.items[3], "d");

    memset(&c, 0, sizeof(c));
    assert_int_equal(route__split_ids("", 10, collect_one, &c), 0);
    assert_int_equal(route__split_ids(",, ,", 10, collect_one, &c), 0);
    assert_int_equal(route__split_ids(NULL, 10, collect_one, &c), 0);
    assert_int_equal(c.n, 0);

    /* Over the bound: -1, and fn never sees the extra item. */
    assert_int_equal(route__split_ids("a,b,c", 2, collect_one, &c), -1);
    assert_int_equal(c.n, 2);
    memset(&c, 0, sizeof(c));
    assert_int_equal(route__split_ids("a,b", 2, collect_one, &c), 2);
}

/* The test owns these structs: free what it allocated (the store's own helper is not linked). */
static void person_free(struct store_person *p)
{
    free(p->username);
    free(p->display_name);
    free(p->first_name);
    free(p->last_name);
    free(p->email);
    free(p->avatar);
    memset(p, 0, sizeof(*p));
}

/* --- views ----------------------------------------------------------------------------------- */

#define NOW 1800000000000LL
#define AWAY 300000LL
#define OFF 1800000LL

static void fill_user(struct store_person *p, const char *id, const char *username, bool online,
                      int64_t last_active)
{
    memset(p, 0, sizeof(*p));
    strcpy(p->id, id);
    p->username = strdup(username);
    strcpy(p->role, "USER");
    p->is_active = true;
    p->is_online = online;
    p->last_active_at_ms = last_active;
}

static void test_view_user(void **state)
{
    struct store_person p;
    char iso[ISO_TIME_LEN + 1];
    json_t *v;

    (void)state;
    fill_user(&p, "0123456789abcdef01234567", "alice", true, NOW - 1000);
    p.display_name = strdup("Alice");
    p.email = strdup("alice@example.com");
    v = route__person_view(&p, NOW, AWAY, OFF, false, false);
    assert_string_equal(json_string_value(json_object_get(v, "id")), p.id);
    assert_string_equal(json_string_value(json_object_get(v, "username")), "alice");
    assert_true(json_is_false(json_object_get(v, "isAnonymous")));
    assert_true(json_is_true(json_object_get(v, "isOnline")));
    assert_string_equal(json_string_value(json_object_get(v, "status")), "online");
    assert_string_equal(json_string_value(json_object_get(v, "statusColor")), "#10b981");
    util_iso_time(NOW - 1000, iso);
    assert_string_equal(json_string_value(json_object_get(v, "lastActiveAt")), iso);
    assert_true(json_is_null(json_object_get(v, "lastSeen")));
    assert_string_equal(json_string_value(json_object_get(v, "displayName")), "Alice");
    assert_true(json_is_null(json_object_get(v, "firstName")));
    assert_true(json_is_null(json_object_get(v, "avatar")));
    assert_string_equal(json_string_value(json_object_get(v, "role")), "USER");
    /* Not full: no email, no isActive, no conversationId. */
    assert_null(json_object_get(v, "email"));
    assert_null(json_object_get(v, "isActive"));
    assert_null(json_object_get(v, "conversationId"));
    json_decref(v);

    v = route__person_view(&p, NOW, AWAY, OFF, false, true);
    assert_string_equal(json_string_value(json_object_get(v, "email")), "alice@example.com");
    assert_true(json_is_true(json_object_get(v, "isActive")));
    json_decref(v);
    person_free(&p);
}

static void test_view_status(void **state)
{
    struct store_person p;
    json_t *v;

    (void)state;
    /* Never active: offline whatever isOnline says. */
    fill_user(&p, "0123456789abcdef01234567", "bob", true, 0);
    v = route__person_view(&p, NOW, AWAY, OFF, false, false);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "offline");
    assert_true(json_is_null(json_object_get(v, "lastActiveAt")));
    json_decref(v);
    /* Online but idle 10 min: away. */
    p.last_active_at_ms = NOW - 600000;
    v = route__person_view(&p, NOW, AWAY, OFF, false, false);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "away");
    assert_string_equal(json_string_value(json_object_get(v, "statusColor")), "#f59e0b");
    json_decref(v);
    /* Stored offline, but live here: online. */
    p.is_online = false;
    p.last_active_at_ms = NOW - 1000;
    p.last_seen_ms = NOW - 500;
    v = route__person_view(&p, NOW, AWAY, OFF, true, false);
    assert_true(json_is_true(json_object_get(v, "isOnline")));
    assert_string_equal(json_string_value(json_object_get(v, "status")), "online");
    assert_true(json_is_string(json_object_get(v, "lastSeen")));
    json_decref(v);
    /* Offline for an hour: offline. */
    p.last_active_at_ms = NOW - 3600000;
    v = route__person_view(&p, NOW, AWAY, OFF, false, false);
    assert_true(json_is_false(json_object_get(v, "isOnline")));
    assert_string_equal(json_string_value(json_object_get(v, "status")), "offline");
    assert_string_equal(json_string_value(json_object_get(v, "statusColor")), "#6b7280");
    json_decref(v);
    person_free(&p);
}

static void test_view_anonymous(void **state)
{
    struct store_person p = {0};
    json_t *v;

    (void)state;
    strcpy(p.id, "aaaaaaaaaaaaaaaaaaaaaaaa");
    p.is_anonymous = true;
    p.username = strdup("guest");
    strcpy(p.conversation_id, "bbbbbbbbbbbbbbbbbbbbbbbb");
    v = route__person_view(&p, NOW, AWAY, OFF, false, true);
    assert_true(json_is_true(json_object_get(v, "isAnonymous")));
    assert_string_equal(json_string_value(json_object_get(v, "conversationId")),
                        "bbbbbbbbbbbbbbbbbbbbbbbb");
    assert_null(json_object_get(v, "role"));
    assert_null(json_object_get(v, "displayName"));
    assert_null(json_object_get(v, "email"));
    assert_int_equal((int)json_object_size(v), 9);
    json_decref(v);
    person_free(&p);
}

static void test_sort_participants(void **state)
{
    struct store_person items[5];
    bool live[5] = {false, false, true, false, false};

    (void)state;
    fill_user(&items[0], "000000000000000000000001", "zed", false, NOW - 3600000); /* offline */
    fill_user(&items[1], "000000000000000000000002", "Bob", true, NOW - 600000);   /* away */
    fill_user(&items[2], "000000000000000000000003", "yan", false, NOW - 1000);    /* live */
    fill_user(&items[3], "000000000000000000000004", "amy", true, NOW - 1000);     /* online */
    fill_user(&items[4], "000000000000000000000005", "carl", false, NOW - 60000);  /* away */
    route__sort_participants(items, live, 5, NOW, AWAY, OFF);
    assert_string_equal(items[0].username, "amy");
    assert_string_equal(items[1].username, "yan");
    assert_true(live[1]);
    assert_false(live[0]);
    assert_string_equal(items[2].username, "Bob");
    assert_string_equal(items[3].username, "carl");
    assert_string_equal(items[4].username, "zed");
    for (int i = 0; i < 5; i++)
        person_free(&items[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_fixed),
        cmocka_unit_test(test_match_params),
        cmocka_unit_test(test_match_param_too_long),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_cors),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_split_ids),
        cmocka_unit_test(test_view_user),
        cmocka_unit_test(test_view_status),
        cmocka_unit_test(test_view_anonymous),
        cmocka_unit_test(test_sort_participants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
