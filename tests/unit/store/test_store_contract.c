/*
 * test_store_contract.c - the store.h contract, backend-independent: CRUD and provisioning,
 * presence writes through the writer and the overlay, zombies, reconciliation, bulk writes.
 *
 * The database is STORE_TEST_URL when set (so the MongoDB backend runs the same tests against
 * its double), else a fresh SQLite file per test. Tests only assert on rows they created, so
 * they also hold on a shared database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"
#include "store_test_util.h"

#define T0 1700000000000LL /* a fixed time far enough in the past for zombie cutoffs */

static int setup(void **state)
{
    char url[512];
    struct store *s = NULL;
    store_test_url(url, sizeof(url));
    if (store_open(url, &s) != 0)
        return -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    return store_close(*state, 5000) == 0 ? 0 : -1;
}

/* Creates a user named after prefix; out receives it. */
static void mkuser(struct store *s, const char *prefix, struct store_person *out)
{
    char name[96];
    store_test_name(prefix, name, sizeof(name));
    struct store_user_new u = {.username = name, .is_active = true};
    assert_int_equal(store_user_create(s, &u, out), 0);
}

static void mkconv(struct store *s, struct store_conversation *out)
{
    assert_int_equal(store_conversation_create(s, NULL, "t", NULL, out), 0);
}

static bool list_has(const struct store_person_list *l, const char *id,
                     const struct store_person **found)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i].id, id) == 0) {
            if (found != NULL)
                *found = &l->items[i];
            return true;
        }
    return false;
}

static bool ids_has(const struct store_id_list *l, const char *id)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->ids[i], id) == 0)
            return true;
    return false;
}

static void test_user_create_get(void **state)
{
    struct store *s = *state;
    char name[96], id[OID_HEX_LEN + 1], upper[OID_HEX_LEN + 1];
    store_test_name("ada", name, sizeof(name));
    util_oid_new(id);
    for (int i = 0; i <= OID_HEX_LEN; i++)
        upper[i] = (char)((id[i] >= 'a' && id[i] <= 'f') ? id[i] - 'a' + 'A' : id[i]);
    struct store_user_new u = {.id = upper,
                               .username = name,
                               .display_name = "Ada L",
                               .first_name = "Ada",
                               .last_name = "Lovelace",
                               .email = "ada@example.org",
                               .role = "ADMIN",
                               .is_active = true};
    struct store_person p = {0};
    assert_int_equal(store_user_create(s, &u, &p), 0);
    assert_string_equal(p.id, id); /* ids are stored lowercase */
    assert_false(p.is_anonymous);
    assert_string_equal(p.username, name);
    assert_string_equal(p.role, "ADMIN");
    assert_true(p.is_active);
    assert_false(p.is_online);
    assert_int_equal(p.last_active_at_ms, 0);
    assert_int_equal(p.last_seen_ms, 0);
    store_person_clear(&p);

    assert_int_equal(store_person_get(s, upper, &p), 0);
    assert_string_equal(p.id, id);
    assert_string_equal(p.display_name, "Ada L");
    assert_string_equal(p.first_name, "Ada");
    assert_string_equal(p.last_name, "Lovelace");
    assert_string_equal(p.email, "ada@example.org");
    assert_null(p.avatar);
    assert_string_equal(p.conversation_id, "");

    struct store_person copy;
    store_person_copy(&copy, &p);
    store_person_clear(&p);
    assert_string_equal(copy.email, "ada@example.org");
    store_person_clear(&copy);
    assert_null(copy.username);

    /* defaults: role USER, inactive kept */
    store_test_name("bob", name, sizeof(name));
    struct store_user_new v = {.username = name, .is_active = false};
    assert_int_equal(store_user_create(s, &v, &p), 0);
    assert_string_equal(p.role, "USER");
    assert_false(p.is_active);
    assert_true(util_oid_valid(p.id));
    store_person_clear(&p);
}

static void test_user_create_errors(void **state)
{
    struct store *s = *state;
    struct store_person p = {0}, q;
    mkuser(s, "taken", &p);

    memset(&q, 0x5a, sizeof(q)); /* out-params stay untouched on error */
    struct store_person before = q;
    struct store_user_new dup_name = {.username = p.username, .is_active = true};
    assert_int_equal(store_user_create(s, &dup_name, &q), STORE_ERR_CONFLICT);
    assert_memory_equal(&q, &before, sizeof(q));

    char name[96];
    store_test_name("other", name, sizeof(name));
    struct store_user_new dup_id = {.id = p.id, .username = name, .is_active = true};
    assert_int_equal(store_user_create(s, &dup_id, &q), STORE_ERR_CONFLICT);

    struct store_user_new bad_id = {.id = "xyz", .username = name, .is_active = true};
    assert_int_equal(store_user_create(s, &bad_id, &q), STORE_ERR_INVALID);
    struct store_user_new long_id = {.id = "0123456789abcdef012345678", .username = name};
    assert_int_equal(store_user_create(s, &long_id, &q), STORE_ERR_INVALID);
    struct store_user_new bad_role = {.username = name, .role = "ROOT"};
    assert_int_equal(store_user_create(s, &bad_role, &q), STORE_ERR_INVALID);
    struct store_user_new no_name = {.username = ""};
    assert_int_equal(store_user_create(s, &no_name, &q), STORE_ERR_INVALID);
    assert_memory_equal(&q, &before, sizeof(q));

    /* the username is still free after the refusals */
    struct store_user_new ok = {.username = name, .is_active = true};
    assert_int_equal(store_user_create(s, &ok, &q), 0);
    store_person_clear(&q);

    char unknown[OID_HEX_LEN + 1];
    util_oid_new(unknown);
    assert_int_equal(store_person_get(s, unknown, &q), STORE_ERR_NOT_FOUND);
    assert_int_equal(store_person_get(s, "not-an-id", &q), STORE_ERR_NOT_FOUND);
    assert_int_equal(store_person_get(s, NULL, &q), STORE_ERR_NOT_FOUND);
    store_person_clear(&p);
}

static void test_conversations_members(void **state)
{
    struct store *s = *state;
    struct store_conversation c = {0}, c2 = {0}, g = {0};
    char cid[OID_HEX_LEN + 1];
    util_oid_new(cid);
    assert_int_equal(store_conversation_create(s, cid, "Team", "direct", &c), 0);
    assert_string_equal(c.id, cid);
    assert_string_equal(c.title, "Team");
    assert_string_equal(c.type, "direct");
    assert_int_equal(store_conversation_create(s, cid, NULL, NULL, &c2), STORE_ERR_CONFLICT);
    assert_int_equal(store_conversation_create(s, "bad", NULL, NULL, &c2), STORE_ERR_INVALID);
    assert_int_equal(store_conversation_create(s, NULL, NULL, NULL, &c2), 0);
    assert_string_equal(c2.type, "group");
    assert_null(c2.title);
    assert_int_equal(store_conversation_get(s, cid, &g), 0);
    assert_string_equal(g.title, "Team");
    store_conversation_clear(&g);
    char unknown[OID_HEX_LEN + 1];
    util_oid_new(unknown);
    assert_int_equal(store_conversation_get(s, unknown, &g), STORE_ERR_NOT_FOUND);

    struct store_person a = {0}, b = {0};
    mkuser(s, "m1", &a);
    mkuser(s, "m2", &b);
    int added = -1;
    assert_int_equal(store_member_add(s, cid, a.id, &added), 0);
    assert_int_equal(added, 1);
    assert_int_equal(store_member_add(s, cid, a.id, &added), 0);
    assert_int_equal(added, 0);
    assert_int_equal(store_member_add(s, c2.id, a.id, &added), 0);
    assert_int_equal(added, 1);
    added = 7;
    assert_int_equal(store_member_add(s, unknown, a.id, &added), STORE_ERR_NOT_FOUND);
    assert_int_equal(store_member_add(s, cid, unknown, &added), STORE_ERR_NOT_FOUND);
    assert_int_equal(store_member_add(s, cid, "zz", &added), STORE_ERR_INVALID);
    assert_int_equal(added, 7);

    uint64_t n = 99;
    assert_int_equal(store_member_count(s, cid, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_member_count(s, unknown, &n), STORE_ERR_NOT_FOUND);

    struct store_id_list convs = {0};
    assert_int_equal(store_person_conversations(s, &a, &convs), 0);
    assert_int_equal(convs.count, 2);
    assert_true(ids_has(&convs, cid));
    assert_true(ids_has(&convs, c2.id));
    store_id_list_free(&convs);
    assert_int_equal(store_person_conversations(s, &b, &convs), 0);
    assert_int_equal(convs.count, 0);
    store_id_list_free(&convs);

    bool m = false;
    assert_int_equal(store_is_member(s, cid, &a, &m), 0);
    assert_true(m);
    assert_int_equal(store_is_member(s, cid, &b, &m), 0);
    assert_false(m);
    m = true;
    assert_int_equal(store_is_member(s, unknown, &a, &m), 0);
    assert_false(m);

    store_person_clear(&a);
    store_person_clear(&b);
    store_conversation_clear(&c);
    store_conversation_clear(&c2);
}

static void test_anonymous(void **state)
{
    struct store *s = *state;
    struct store_conversation c = {0};
    mkconv(s, &c);
    struct store_person p = {0}, q = {0};
    char token[65] = "", token2[65] = "";
    assert_int_equal(store_anonymous_create(s, c.id, "guest", &p, token), 0);
    assert_int_equal(strlen(token), 64);
    for (int i = 0; i < 64; i++)
        assert_non_null(strchr("0123456789abcdef", token[i]));
    assert_true(p.is_anonymous);
    assert_true(p.is_active);
    assert_false(p.is_online);
    assert_string_equal(p.username, "guest");
    assert_string_equal(p.conversation_id, c.id);
    assert_string_equal(p.role, "");

    assert_int_equal(store_anonymous_create(s, c.id, "guest", &q, token2), 0);
    assert_string_not_equal(token, token2);
    assert_string_not_equal(p.id, q.id);
    store_person_clear(&q);

    assert_int_equal(store_person_by_session_token(s, token, &q), 0);
    assert_string_equal(q.id, p.id);
    assert_true(q.is_anonymous);
    store_person_clear(&q);
    assert_int_equal(store_person_get(s, p.id, &q), 0);
    assert_true(q.is_anonymous);
    assert_string_equal(q.conversation_id, c.id);
    store_person_clear(&q);

    assert_int_equal(store_person_by_session_token(s, "nope", &q), STORE_ERR_NOT_FOUND);
    assert_int_equal(store_person_by_session_token(s, "", &q), STORE_ERR_NOT_FOUND);

    char unknown[OID_HEX_LEN + 1];
    util_oid_new(unknown);
    assert_int_equal(store_anonymous_create(s, unknown, "g", &q, token2), STORE_ERR_NOT_FOUND);
    assert_int_equal(store_anonymous_create(s, c.id, "", &q, token2), STORE_ERR_INVALID);

    bool m = false;
    assert_int_equal(store_is_member(s, c.id, &p, &m), 0);
    assert_true(m);
    assert_int_equal(store_is_member(s, unknown, &p, &m), 0);
    assert_false(m);
    struct store_id_list convs = {0};
    assert_int_equal(store_person_conversations(s, &p, &convs), 0);
    assert_int_equal(convs.count, 1);
    assert_string_equal(convs.ids[0], c.id);
    store_id_list_free(&convs);

    /* ids are unique across users and anonymous participants */
    char name[96];
    store_test_name("clash", name, sizeof(name));
    struct store_user_new u = {.id = p.id, .username = name, .is_active = true};
    assert_int_equal(store_user_create(s, &u, &q), STORE_ERR_CONFLICT);

    store_person_clear(&p);
    store_conversation_clear(&c);
}

static void test_participants(void **state)
{
    struct store *s = *state;
    struct store_conversation c = {0}, other = {0};
    mkconv(s, &c);
    mkconv(s, &other);
    struct store_person a = {0}, b = {0}, out = {0}, anon = {0}, anon2 = {0};
    mkuser(s, "pa", &a);
    mkuser(s, "pb", &b);
    mkuser(s, "pout", &out);
    int added;
    assert_int_equal(store_member_add(s, c.id, a.id, &added), 0);
    assert_int_equal(store_member_add(s, c.id, b.id, &added), 0);
    assert_int_equal(store_member_add(s, other.id, out.id, &added), 0);
    char token[65];
    assert_int_equal(store_anonymous_create(s, c.id, "anon", &anon, token), 0);
    assert_int_equal(store_anonymous_create(s, other.id, "anon2", &anon2, token), 0);

    store_presence_online(s, a.id, false, T0 + 5);
    store_presence_online(s, anon.id, true, T0 + 6);
    assert_int_equal(store_flush(s, 5000), 0);

    struct store_person_list l = {0};
    assert_int_equal(store_conversation_participants(s, c.id, &l), 0);
    assert_int_equal(l.count, 4 - 1); /* a, b and anon */
    const struct store_person *f = NULL;
    assert_true(list_has(&l, a.id, &f));
    assert_true(f->is_online);
    assert_int_equal(f->last_active_at_ms, T0 + 5);
    assert_false(f->is_anonymous);
    assert_true(list_has(&l, b.id, &f));
    assert_false(f->is_online);
    assert_true(list_has(&l, anon.id, &f));
    assert_true(f->is_anonymous);
    assert_true(f->is_online);
    assert_false(list_has(&l, out.id, NULL));
    assert_false(list_has(&l, anon2.id, NULL));
    store_person_list_free(&l);

    struct store_id_list ids = {0};
    assert_int_equal(store_conversation_member_ids(s, c.id, &ids), 0);
    assert_int_equal(ids.count, 3);
    assert_true(ids_has(&ids, a.id));
    assert_true(ids_has(&ids, b.id));
    assert_true(ids_has(&ids, anon.id));
    store_id_list_free(&ids);

    char unknown[OID_HEX_LEN + 1];
    util_oid_new(unknown);
    assert_int_equal(store_conversation_participants(s, unknown, &l), STORE_ERR_NOT_FOUND);
    assert_int_equal(store_conversation_participants(s, "bad", &l), STORE_ERR_NOT_FOUND);

    /* An empty conversation lists nobody. */
    struct store_conversation empty = {0};
    mkconv(s, &empty);
    assert_int_equal(store_conversation_participants(s, empty.id, &l), 0);
    assert_int_equal(l.count, 0);
    store_person_list_free(&l);

    store_person_clear(&a);
    store_person_clear(&b);
    store_person_clear(&out);
    store_person_clear(&anon);
    store_person_clear(&anon2);
    store_conversation_clear(&c);
    store_conversation_clear(&other);
    store_conversation_clear(&empty);
}

/* Every presence write is visible to reads at once (overlay), and in the store after flush. */
static void test_presence_overlay_and_flush(void **state)
{
    struct store *s = *state;
    struct store_person a = {0}, p = {0};
    mkuser(s, "ov", &a);

    store_presence_online(s, a.id, false, T0 + 100);
    /* Read right away: whether or not the writer ran, the read shows the write. */
    assert_int_equal(store_person_get(s, a.id, &p), 0);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, T0 + 100);
    store_person_clear(&p);

    store_presence_activity(s, a.id, false, T0 + 200);
    assert_int_equal(store_person_get(s, a.id, &p), 0);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, T0 + 200);
    store_person_clear(&p);

    assert_int_equal(store_flush(s, 5000), 0);
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.queue_length, 0);
    assert_true(st.batches_written >= 1);
    assert_true(st.rows_written >= 1);
    assert_int_equal(st.queue_dropped, 0);
    assert_int_equal(store_person_get(s, a.id, &p), 0);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, T0 + 200);
    assert_int_equal(p.last_seen_ms, 0);
    store_person_clear(&p);

    uint64_t users = 0, anons = 0;
    assert_int_equal(store_count_online(s, &users, &anons), 0);
    assert_true(users >= 1);

    store_presence_offline(s, a.id, false, T0 + 300);
    assert_int_equal(store_person_get(s, a.id, &p), 0);
    assert_false(p.is_online);
    assert_int_equal(p.last_seen_ms, T0 + 300);
    assert_int_equal(p.last_active_at_ms, T0 + 200);
    store_person_clear(&p);
    assert_int_equal(store_flush(s, 5000), 0);
    assert_int_equal(store_person_get(s, a.id, &p), 0);
    assert_false(p.is_online);
    assert_int_equal(p.last_seen_ms, T0 + 300);
    assert_int_equal(p.last_active_at_ms, T0 + 200);
    store_person_clear(&p);

    /* Bad ids are refused without harm. */
    store_presence_online(s, "bad", false, T0);
    store_presence_online(s, NULL, false, T0);
    assert_int_equal(store_flush(s, 5000), 0);
    store_get_stats(s, &st);
    assert_int_equal(st.queue_length, 0);
    store_person_clear(&a);
}

/* An online then an offline of one person, enqueued together, end offline with both times. */
static void test_online_then_offline(void **state)
{
    struct store *s = *state;
    struct store_person a = {0}, b = {0}, p = {0};
    mkuser(s, "flap", &a);
    mkuser(s, "flip", &b);
    store_presence_online(s, a.id, false, T0 + 1);
    store_presence_offline(s, a.id, false, T0 + 2);
    /* and the other order for b: offline then online ends online */
    store_presence_offline(s, b.id, false, T0 + 3);
    store_presence_online(s, b.id, false, T0 + 4);
    assert_int_equal(store_flush(s, 5000), 0);
    assert_int_equal(store_person_get(s, a.id, &p), 0);
    assert_false(p.is_online);
    assert_int_equal(p.last_active_at_ms, T0 + 1);
    assert_int_equal(p.last_seen_ms, T0 + 2);
    store_person_clear(&p);
    assert_int_equal(store_person_get(s, b.id, &p), 0);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, T0 + 4);
    assert_int_equal(p.last_seen_ms, T0 + 3);
    store_person_clear(&p);
    store_person_clear(&a);
    store_person_clear(&b);
}

static void test_zombies_cutoff(void **state)
{
    struct store *s = *state;
    const int64_t cutoff = T0 + 1000000;
    struct store_person older = {0}, at = {0}, off = {0}, anon = {0};
    struct store_conversation c = {0};
    mkuser(s, "zold", &older);
    mkuser(s, "zat", &at);
    mkuser(s, "zoff", &off);
    mkconv(s, &c);
    char token[65];
    assert_int_equal(store_anonymous_create(s, c.id, "zanon", &anon, token), 0);
    store_presence_online(s, older.id, false, cutoff - 1);
    store_presence_online(s, at.id, false, cutoff);
    store_presence_online(s, off.id, false, T0);
    store_presence_offline(s, off.id, false, T0 + 1);
    store_presence_online(s, anon.id, true, cutoff - 1000);
    assert_int_equal(store_flush(s, 5000), 0);

    struct store_person_list l = {0};
    const struct store_person *f = NULL;
    assert_int_equal(store_zombies_find(s, cutoff, &l), 0);
    assert_true(list_has(&l, older.id, &f));
    assert_int_equal(f->last_active_at_ms, cutoff - 1);
    assert_true(f->is_online);
    assert_false(list_has(&l, at.id, NULL)); /* lastActiveAt == cutoff is not older */
    assert_false(list_has(&l, off.id, NULL));
    assert_true(list_has(&l, anon.id, &f));
    assert_true(f->is_anonymous);
    store_person_list_free(&l);

    assert_int_equal(store_zombies_find(s, cutoff + 1, &l), 0);
    assert_true(list_has(&l, at.id, NULL));
    store_person_list_free(&l);

    /* Queued writes count: activity makes one not a zombie, offline another. */
    store_presence_activity(s, older.id, false, cutoff + 10);
    store_presence_offline(s, anon.id, true, cutoff + 10);
    assert_int_equal(store_zombies_find(s, cutoff, &l), 0);
    assert_false(list_has(&l, older.id, NULL));
    assert_false(list_has(&l, anon.id, NULL));
    store_person_list_free(&l);
    assert_int_equal(store_flush(s, 5000), 0);
    assert_int_equal(store_zombies_find(s, cutoff, &l), 0);
    assert_false(list_has(&l, older.id, NULL));
    assert_false(list_has(&l, anon.id, NULL));
    store_person_list_free(&l);

    store_person_clear(&older);
    store_person_clear(&at);
    store_person_clear(&off);
    store_person_clear(&anon);
    store_conversation_clear(&c);
}

static void test_reconcile(void **state)
{
    struct store *s = *state;
    struct store_person a = {0}, b = {0}, anon = {0}, p = {0};
    struct store_conversation c = {0};
    mkuser(s, "ra", &a);
    mkuser(s, "rb", &b);
    mkconv(s, &c);
    char token[65];
    assert_int_equal(store_anonymous_create(s, c.id, "ranon", &anon, token), 0);
    store_presence_online(s, a.id, false, T0 + 10);
    store_presence_online(s, anon.id, true, T0 + 20);
    store_presence_online(s, b.id, false, T0 + 30);
    store_presence_offline(s, b.id, false, T0 + 40);
    assert_int_equal(store_flush(s, 5000), 0);

    struct store_stats before, after;
    store_get_stats(s, &before);
    uint64_t n = 0;
    assert_int_equal(store_reconcile_startup(s, T0 + 99999, &n), 0);
    assert_true(n >= 2);
    store_get_stats(s, &after);
    assert_int_equal(after.rows_written - before.rows_written, n);

    assert_int_equal(store_person_get(s, a.id, &p), 0);
    assert_false(p.is_online);
    assert_int_equal(p.last_seen_ms, T0 + 10);
    assert_int_equal(p.last_active_at_ms, T0 + 10);
    store_person_clear(&p);
    assert_int_equal(store_person_get(s, anon.id, &p), 0);
    assert_false(p.is_online);
    assert_int_equal(p.last_seen_ms, T0 + 20);
    store_person_clear(&p);
    assert_int_equal(store_person_get(s, b.id, &p), 0); /* already offline: untouched */
    assert_int_equal(p.last_seen_ms, T0 + 40);
    store_person_clear(&p);

    uint64_t users = 1, anons = 1;
    assert_int_equal(store_count_online(s, &users, &anons), 0);
    assert_int_equal(users, 0);
    assert_int_equal(anons, 0);

    store_person_clear(&a);
    store_person_clear(&b);
    store_person_clear(&anon);
    store_conversation_clear(&c);
}

/* 10,000 presence writes land in a few transactions, every row right. */
static void test_bulk_writes_batched(void **state)
{
    struct store *s = *state;
    const char *env = getenv("STORE_TEST_BULK");
    size_t n = env != NULL ? (size_t)strtoul(env, NULL, 10) : 10000;
    char(*ids)[OID_HEX_LEN + 1] = calloc(n, sizeof(*ids));
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++) {
        struct store_person p = {0};
        mkuser(s, "bulk", &p);
        memcpy(ids[i], p.id, sizeof(ids[i]));
        store_person_clear(&p);
    }
    uint64_t users0 = 0, anons0 = 0;
    assert_int_equal(store_count_online(s, &users0, &anons0), 0);
    struct store_stats before, after;
    store_get_stats(s, &before);
    int64_t t = util_mono_ms();
    for (size_t i = 0; i < n; i++)
        store_presence_online(s, ids[i], false, T0 + (int64_t)i);
    assert_int_equal(store_flush(s, 10000), 0);
    t = util_mono_ms() - t;
    store_get_stats(s, &after);
    print_message("# %zu writes applied in %llu batches, %lld ms\n", n,
                  (unsigned long long)(after.batches_written - before.batches_written),
                  (long long)t);
    assert_int_equal(after.rows_written - before.rows_written, n);
    assert_true(after.batches_written - before.batches_written <= 2 + n / 4096 + 2);
    assert_int_equal(after.queue_length, 0);
    uint64_t users1 = 0, anons1 = 0;
    assert_int_equal(store_count_online(s, &users1, &anons1), 0);
    assert_int_equal(users1 - users0, n);
    for (size_t i = 0; i < n; i += n / 50 + 1) {
        struct store_person p = {0};
        assert_int_equal(store_person_get(s, ids[i], &p), 0);
        assert_true(p.is_online);
        assert_int_equal(p.last_active_at_ms, T0 + (int64_t)i);
        store_person_clear(&p);
    }
    uint64_t done = 0;
    assert_int_equal(store_reconcile_startup(s, T0, &done), 0); /* leave nobody online */
    free(ids);
}

static void test_ping_name(void **state)
{
    struct store *s = *state;
    assert_true(store_ping(s));
    const char *name = store_backend_name(s);
    assert_true(strcmp(name, "sqlite") == 0 || strcmp(name, "mongodb") == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ping_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_create_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_create_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conversations_members, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anonymous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_participants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presence_overlay_and_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_online_then_offline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zombies_cutoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconcile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bulk_writes_batched, setup, teardown),
    };
    int rc = cmocka_run_group_tests_name("store_contract", tests, NULL, NULL);
    store_test_cleanup();
    return rc;
}
