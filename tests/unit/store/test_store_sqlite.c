/*
 * test_store_sqlite.c - what only the SQLite backend promises: the URL forms and the parent
 * directory, WAL and the versioned schema, the indexes the zombie query uses, null times,
 * the overlay while the database is locked, and store_close writing what is queued.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/store.h"
#include "store_test_util.h"

static int url_n;

/* A fresh "sqlite:<tmp>/sq<n>/<name>.db"; path receives the file path. */
static void fresh(const char *scheme, char *url, size_t usize, char *path, size_t psize)
{
    snprintf(path, psize, "%s/sq%d/sub/p.db", store_test_tmpdir(), url_n++);
    snprintf(url, usize, "%s%s", scheme, path);
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
}

/* The first column of the first row of sql is the text expected. */
static void assert_raw_text(sqlite3 *db, const char *sql, const char *expected)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), expected);
    sqlite3_finalize(st);
}

/* Whether SQLite's plan for sql names the index. */
static bool plan_uses(sqlite3 *db, const char *sql, const char *index)
{
    char q[512];
    snprintf(q, sizeof(q), "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    bool uses = false;
    while (sqlite3_step(st) == SQLITE_ROW)
        if (strstr((const char *)sqlite3_column_text(st, 3), index) != NULL)
            uses = true;
    sqlite3_finalize(st);
    return uses;
}

static void test_urls_and_dirs(void **state)
{
    char url[512], path[400];
    struct store *s = NULL;
    struct stat sb;

    fresh("sqlite:", url, sizeof(url), path, sizeof(path));
    assert_int_equal(store_open(url, &s), 0);
    assert_string_equal(store_backend_name(s), "sqlite");
    assert_int_equal(stat(path, &sb), 0); /* parent directories created */
    assert_int_equal(store_close(s, 1000), 0);

    fresh("sqlite://", url, sizeof(url), path, sizeof(path));
    s = NULL;
    assert_int_equal(store_open(url, &s), 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(store_close(s, 1000), 0);

    struct store *untouched = (struct store *)&sb;
    s = untouched;
    assert_int_equal(store_open("sqlite:", &s), STORE_ERR_INVALID);
    assert_int_equal(store_open("postgres://x", &s), STORE_ERR_INVALID);
    assert_int_equal(store_open("", &s), STORE_ERR_INVALID);
#ifndef GW_WITH_MONGO
    assert_int_equal(store_open("mongodb://127.0.0.1:1/x", &s), STORE_ERR_INVALID);
#endif
    /* a directory cannot be opened as a database file */
    char bad[512];
    snprintf(bad, sizeof(bad), "sqlite:%s", store_test_tmpdir());
    assert_int_not_equal(store_open(bad, &s), 0);
    assert_ptr_equal(s, untouched);
}

static void test_schema_wal_version(void **state)
{
    char url[512], path[400];
    struct store *s = NULL;
    fresh("sqlite:", url, sizeof(url), path, sizeof(path));
    assert_int_equal(store_open(url, &s), 0);
    sqlite3 *db = raw_open(path);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), 3);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND"
                                 " name IN ('users', 'anonymous_participants', 'conversations',"
                                 " 'members')"),
                     4);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND"
                                 " name IN ('users_online', 'anonymous_online',"
                                 " 'members_user')"),
                     3);
    /* The zombie query and the online count walk the partial index of the persons online,
     * not the table. */
    assert_true(plan_uses(db,
                          "SELECT id FROM users WHERE isOnline = 1"
                          " AND (lastActiveAt IS NULL OR lastActiveAt < 5)",
                          "users_online"));
    assert_true(plan_uses(db, "SELECT count(*) FROM users WHERE isOnline = 1", "users_online"));
    assert_true(plan_uses(db,
                          "SELECT id FROM anonymous_participants WHERE isOnline = 1"
                          " AND (lastActiveAt IS NULL OR lastActiveAt < 5)",
                          "anonymous_online"));
    sqlite3_close(db);
    assert_int_equal(store_close(s, 1000), 0);

    /* Reopening keeps the data and does not recreate the schema. */
    assert_int_equal(store_open(url, &s), 0);
    struct store_user_new u = {.username = "keep", .is_active = true};
    struct store_person p = {0};
    assert_int_equal(store_user_create(s, &u, &p), 0);
    assert_int_equal(store_close(s, 1000), 0);
    assert_int_equal(store_open(url, &s), 0);
    struct store_person q = {0};
    assert_int_equal(store_person_get(s, p.id, &q), 0);
    assert_string_equal(q.username, "keep");
    store_person_clear(&q);
    store_person_clear(&p);
    assert_int_equal(store_close(s, 1000), 0);

    /* A database from a newer build is refused, not rewritten. */
    db = raw_open(path);
    raw_exec(db, "PRAGMA user_version = 99");
    sqlite3_close(db);
    assert_int_not_equal(store_open(url, &s), 0);
}

/* A version 2 file, with the full (isOnline, lastActiveAt) indexes, is upgraded at open: the
 * partial indexes take their place and the persons online are found through them. */
static void test_upgrade_from_v2(void **state)
{
    (void)state;
    char url[512], path[400];
    struct store *s = NULL;
    fresh("sqlite:", url, sizeof(url), path, sizeof(path));
    assert_int_equal(store_open(url, &s), 0);
    struct store_user_new u = {.username = "old", .is_active = true};
    struct store_person p = {0};
    assert_int_equal(store_user_create(s, &u, &p), 0);
    store_presence_online(s, p.id, false, 1700000000000LL);
    assert_int_equal(store_flush(s, 5000), 0);
    assert_int_equal(store_close(s, 1000), 0);

    sqlite3 *db = raw_open(path);
    raw_exec(db, "DROP INDEX users_online; DROP INDEX anonymous_online;"
                 " CREATE INDEX users_presence ON users (isOnline, lastActiveAt);"
                 " CREATE INDEX anonymous_presence ON anonymous_participants (isOnline,"
                 " lastActiveAt); PRAGMA user_version = 2");
    const char *idx = "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master"
                      " WHERE type = 'index' AND (name LIKE '%_presence' OR name LIKE '%_online')"
                      " ORDER BY name)";
    assert_raw_text(db, idx, "anonymous_presence,users_presence");

    assert_int_equal(store_open(url, &s), 0);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), 3);
    assert_raw_text(db, idx, "anonymous_online,users_online");
    assert_int_equal(raw_int(db, "SELECT count(*) FROM users WHERE isOnline = 1"), 1);
    struct store_person_list l = {0};
    assert_int_equal(store_zombies_find(s, 1800000000000LL, &l), 0);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].id, p.id);
    store_person_list_free(&l);
    /* Going offline takes the person out of the partial index. */
    store_presence_offline(s, p.id, false, 1700000000500LL);
    assert_int_equal(store_flush(s, 5000), 0);
    assert_int_equal(store_zombies_find(s, 1800000000000LL, &l), 0);
    assert_int_equal(l.count, 0);
    store_person_list_free(&l);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM users INDEXED BY users_online"
                                 " WHERE isOnline = 1"),
                     0);
    assert_int_equal(store_close(s, 1000), 0);
    sqlite3_close(db);
    store_person_clear(&p);
}

/* gateway_changes.v moves with every identity or membership change, from any connection, and
 * not with presence writes; a version 1 file gets the table and its triggers at open. */
static void test_changes_triggers(void **state)
{
    (void)state;
    char url[512], path[400];
    struct store *s = NULL;
    fresh("sqlite:", url, sizeof(url), path, sizeof(path));
    assert_int_equal(store_open(url, &s), 0);
    struct store_user_new u = {.username = "trig", .is_active = true};
    struct store_person p = {0}, anon = {0};
    assert_int_equal(store_user_create(s, &u, &p), 0);
    struct store_conversation c = {0};
    assert_int_equal(store_conversation_create(s, NULL, "t", NULL, &c), 0);
    char token[65];
    assert_int_equal(store_anonymous_create(s, c.id, "guest", &anon, token), 0);
    sqlite3 *db = raw_open(path);
    const char *v = "SELECT v FROM gateway_changes WHERE id = 1";
    assert_int_equal(raw_int(db, v), 0); /* creating persons changes nobody's identity */

    store_presence_online(s, p.id, false, 1000);
    store_presence_offline(s, anon.id, true, 2000);
    assert_int_equal(store_flush(s, 5000), 0);
    raw_exec(db, "UPDATE users SET isOnline = 1, lastSeen = 5, lastActiveAt = 6");
    assert_int_equal(raw_int(db, v), 0);

    int added = 0;
    assert_int_equal(store_member_add(s, c.id, p.id, &added), 0);
    assert_int_equal(raw_int(db, v), 1);
    const char *changes[] = {
        "UPDATE users SET role = 'ADMIN'",
        "UPDATE users SET isActive = 0",
        "UPDATE users SET displayName = 'x', isOnline = 0",
        "UPDATE anonymous_participants SET username = 'other'",
        "UPDATE anonymous_participants SET isActive = 0",
        "UPDATE members SET joinedAt = 1",
        "DELETE FROM members",
        "DELETE FROM anonymous_participants",
        "DELETE FROM users",
    };
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        raw_exec(db, changes[i]);
        assert_int_equal(raw_int(db, v), (int64_t)i + 2);
    }
    assert_int_equal(store_close(s, 1000), 0);

    /* Back to version 1: no table, no triggers. Opening upgrades it. */
    raw_exec(db, "DROP TABLE gateway_changes");
    const char *trig = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'";
    assert_int_equal(raw_int(db, trig), 7);
    raw_exec(db, "DROP TRIGGER users_identity_changed; DROP TRIGGER users_deleted;"
                 " DROP TRIGGER anonymous_identity_changed; DROP TRIGGER anonymous_deleted;"
                 " DROP TRIGGER members_added; DROP TRIGGER members_changed;"
                 " DROP TRIGGER members_removed; PRAGMA user_version = 1");
    assert_int_equal(raw_int(db, trig), 0);
    assert_int_equal(store_open(url, &s), 0);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), 3);
    assert_int_equal(raw_int(db, trig), 7);
    assert_int_equal(raw_int(db, v), 0);
    assert_int_equal(store_close(s, 1000), 0);
    sqlite3_close(db);
    store_person_clear(&p);
    store_person_clear(&anon);
    store_conversation_clear(&c);
}

/* Null lastActiveAt: a zombie at any cutoff; reconciled with lastSeen = now. */
static void test_null_times(void **state)
{
    char url[512], path[400];
    struct store *s = NULL;
    fresh("sqlite:", url, sizeof(url), path, sizeof(path));
    assert_int_equal(store_open(url, &s), 0);
    struct store_user_new u = {.username = "ghost", .is_active = true};
    struct store_person p = {0}, q = {0};
    assert_int_equal(store_user_create(s, &u, &p), 0);
    sqlite3 *db = raw_open(path);
    raw_exec(db, "UPDATE users SET isOnline = 1");
    assert_int_equal(raw_int(db, "SELECT count(*) FROM users WHERE lastActiveAt IS NULL AND"
                                 " lastSeen IS NULL"),
                     1);

    struct store_person_list l = {0};
    assert_int_equal(store_zombies_find(s, 1, &l), 0);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].id, p.id);
    assert_int_equal(l.items[0].last_active_at_ms, 0);
    store_person_list_free(&l);

    uint64_t n = 0;
    assert_int_equal(store_reconcile_startup(s, 1700000123456LL, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_person_get(s, p.id, &q), 0);
    assert_false(q.is_online);
    assert_int_equal(q.last_seen_ms, 1700000123456LL);
    assert_int_equal(q.last_active_at_ms, 0);
    store_person_clear(&q);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM users WHERE lastActiveAt IS NULL"), 1);
    sqlite3_close(db);
    store_person_clear(&p);
    assert_int_equal(store_close(s, 1000), 0);
}

/* While another connection holds the write lock the writer cannot apply, yet reads show the
 * queued write; once the lock is released the row is written. */
static void test_overlay_while_locked(void **state)
{
    char url[512], path[400];
    struct store *s = NULL;
    fresh("sqlite:", url, sizeof(url), path, sizeof(path));
    assert_int_equal(store_open(url, &s), 0);
    struct store_user_new u = {.username = "locked", .is_active = true};
    struct store_person p = {0}, q = {0};
    assert_int_equal(store_user_create(s, &u, &p), 0);

    struct store_conversation c = {0};
    int added = 0;
    assert_int_equal(store_conversation_create(s, NULL, NULL, NULL, &c), 0);
    assert_int_equal(store_member_add(s, c.id, p.id, &added), 0);

    sqlite3 *db = raw_open(path);
    raw_exec(db, "BEGIN IMMEDIATE");
    store_presence_online(s, p.id, false, 1700000000042LL);
    assert_int_equal(store_person_get(s, p.id, &q), 0);
    assert_true(q.is_online);
    assert_int_equal(q.last_active_at_ms, 1700000000042LL);
    store_person_clear(&q);
    struct store_person_list l = {0};
    assert_int_equal(store_conversation_participants(s, c.id, &l), 0);
    assert_int_equal(l.count, 1);
    assert_true(l.items[0].is_online);
    assert_int_equal(l.items[0].last_active_at_ms, 1700000000042LL);
    store_person_list_free(&l);
    /* a zombie only through the queued write: the backend row is offline, not listed */
    assert_int_equal(store_zombies_find(s, 1800000000000LL, &l), 0);
    assert_int_equal(l.count, 0);
    store_person_list_free(&l);
    store_conversation_clear(&c);
    /* not in the database yet: the lock holder sees the old row */
    assert_int_equal(raw_int(db, "SELECT isOnline FROM users"), 0);
    assert_int_equal(store_flush(s, 100), STORE_ERR_UNAVAILABLE);
    raw_exec(db, "COMMIT");

    assert_int_equal(store_flush(s, 10000), 0);
    assert_int_equal(raw_int(db, "SELECT isOnline FROM users"), 1);
    assert_int_equal(raw_int(db, "SELECT lastActiveAt FROM users"), 1700000000042LL);
    sqlite3_close(db);
    store_person_clear(&p);
    assert_int_equal(store_close(s, 1000), 0);
}

/* store_close writes what is queued: reopen the file and look. */
static void test_close_flushes(void **state)
{
    char url[512], path[400];
    struct store *s = NULL;
    fresh("sqlite:", url, sizeof(url), path, sizeof(path));
    assert_int_equal(store_open(url, &s), 0);
    char ids[50][OID_HEX_LEN + 1];
    for (int i = 0; i < 50; i++) {
        char name[32];
        snprintf(name, sizeof(name), "c%d", i);
        struct store_user_new u = {.username = name, .is_active = true};
        struct store_person p = {0};
        assert_int_equal(store_user_create(s, &u, &p), 0);
        memcpy(ids[i], p.id, sizeof(ids[i]));
        store_person_clear(&p);
    }
    for (int i = 0; i < 50; i++) {
        store_presence_online(s, ids[i], false, 1700000000000LL + i);
        if (i % 2 == 0)
            store_presence_offline(s, ids[i], false, 1700000001000LL + i);
    }
    assert_int_equal(store_close(s, 5000), 0);

    sqlite3 *db = raw_open(path);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM users WHERE isOnline = 1"), 25);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM users WHERE lastSeen IS NOT NULL"), 25);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM users WHERE lastActiveAt IS NULL"), 0);
    sqlite3_close(db);

    assert_int_equal(store_open(url, &s), 0);
    struct store_person q = {0};
    assert_int_equal(store_person_get(s, ids[3], &q), 0);
    assert_true(q.is_online);
    assert_int_equal(q.last_active_at_ms, 1700000000003LL);
    store_person_clear(&q);
    assert_int_equal(store_person_get(s, ids[4], &q), 0);
    assert_false(q.is_online);
    assert_int_equal(q.last_seen_ms, 1700000001004LL);
    store_person_clear(&q);
    assert_int_equal(store_close(s, 1000), 0);
}

/* Reads from many threads at once while the writer runs. */
#include <pthread.h>

struct reader_arg {
    struct store *s;
    const char *id;
    int failures;
};

static void *reader_main(void *arg)
{
    struct reader_arg *a = arg;
    for (int i = 0; i < 300; i++) {
        struct store_person p = {0};
        if (store_person_get(a->s, a->id, &p) != 0 || !p.is_online)
            a->failures++;
        store_person_clear(&p);
    }
    return NULL;
}

static void test_concurrent_reads(void **state)
{
    char url[512], path[400];
    struct store *s = NULL;
    fresh("sqlite:", url, sizeof(url), path, sizeof(path));
    assert_int_equal(store_open(url, &s), 0);
    struct store_user_new u = {.username = "many", .is_active = true};
    struct store_person p = {0};
    assert_int_equal(store_user_create(s, &u, &p), 0);
    store_presence_online(s, p.id, false, 1700000000000LL);
    pthread_t th[6];
    struct reader_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i] = (struct reader_arg){.s = s, .id = p.id};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &args[i]), 0);
    }
    for (int i = 0; i < 200; i++)
        store_presence_activity(s, p.id, false, 1700000000000LL + i);
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    assert_int_equal(store_flush(s, 5000), 0);
    struct store_person q = {0};
    assert_int_equal(store_person_get(s, p.id, &q), 0);
    assert_int_equal(q.last_active_at_ms, 1700000000199LL);
    store_person_clear(&q);
    store_person_clear(&p);
    assert_int_equal(store_close(s, 1000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urls_and_dirs),        cmocka_unit_test(test_schema_wal_version),
        cmocka_unit_test(test_null_times),           cmocka_unit_test(test_changes_triggers),
        cmocka_unit_test(test_overlay_while_locked), cmocka_unit_test(test_close_flushes),
        cmocka_unit_test(test_concurrent_reads),     cmocka_unit_test(test_upgrade_from_v2),
    };
    int rc = cmocka_run_group_tests_name("store_sqlite", tests, NULL, NULL);
    store_test_cleanup();
    return rc;
}
