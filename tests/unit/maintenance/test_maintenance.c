/*
 * test_maintenance.c - the zombie cleanup against the real SQLite store (SPEC §1 fixes,
 * §2 flows 4-5): zombies are cleaned and reported, live and recent persons are not, the
 * stats match, the periodic thread runs and stops at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/metrics.h"
#include "common/util.h"
#include "maintenance/maintenance.h"
#include "store/store.h"

#define THRESHOLD_MS 300000
#define MAX_PERSONS 16

/* What the Socket.IO engine would be: the persons live here, and the broadcasts received. */
struct engine {
    pthread_mutex_t lock;
    char live[MAX_PERSONS][OID_HEX_LEN + 1];
    int nlive;
    struct store_person got[MAX_PERSONS];
    int ngot;
    int live_calls;
    /* Race simulation: called (engine lock not held) on every live query and on every
     * broadcast, to make the engine act between the cleanup's steps. */
    void (*on_live)(struct engine *e, const char *id);
    void (*on_broadcast)(struct engine *e, const struct store_person *p);
    struct store *store;
    int hook_fired;
};

struct fixture {
    char dir[64];
    struct store *store;
    struct gw_config cfg;
    struct engine eng;
};

static int live_cb(void *cls, const char *id)
{
    struct engine *e = cls;
    if (e->on_live != NULL)
        e->on_live(e, id);
    pthread_mutex_lock(&e->lock);
    e->live_calls++;
    int n = 0;
    for (int i = 0; i < e->nlive; i++)
        if (strcmp(e->live[i], id) == 0)
            n++;
    pthread_mutex_unlock(&e->lock);
    return n;
}

static void broadcast_cb(void *cls, const struct store_person *p)
{
    struct engine *e = cls;
    pthread_mutex_lock(&e->lock);
    assert_true(e->ngot < MAX_PERSONS);
    store_person_copy(&e->got[e->ngot++], p);
    pthread_mutex_unlock(&e->lock);
    if (e->on_broadcast != NULL)
        e->on_broadcast(e, p);
}

static int engine_ngot(struct engine *e)
{
    pthread_mutex_lock(&e->lock);
    int n = e->ngot;
    pthread_mutex_unlock(&e->lock);
    return n;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/gw-maint-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char url[128];
    snprintf(url, sizeof(url), "sqlite:%s/t.db", f->dir);
    assert_int_equal(store_open(url, &f->store), 0);
    f->cfg.maintenance_interval_ms = 60000;
    f->cfg.offline_threshold_ms = THRESHOLD_MS;
    pthread_mutex_init(&f->eng.lock, NULL);
    f->eng.store = f->store;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < f->eng.ngot; i++)
        store_person_clear(&f->eng.got[i]);
    pthread_mutex_destroy(&f->eng.lock);
    assert_int_equal(store_close(f->store, 2000), 0);
    const char *files[] = {"t.db", "t.db-wal", "t.db-shm"};
    char path[128];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", f->dir, files[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* A user stored online with lastActiveAt = active_at (flushed to the store). */
static void online_user(struct fixture *f, const char *name, int64_t active_at,
                        char out[OID_HEX_LEN + 1])
{
    struct store_user_new u = {.username = name, .is_active = true};
    struct store_person p = {0};
    assert_int_equal(store_user_create(f->store, &u, &p), 0);
    strcpy(out, p.id);
    store_person_clear(&p);
    store_presence_online(f->store, out, false, active_at);
    assert_int_equal(store_flush(f->store, 2000), 0);
}

static void make_live(struct fixture *f, const char *id)
{
    pthread_mutex_lock(&f->eng.lock);
    strcpy(f->eng.live[f->eng.nlive++], id);
    pthread_mutex_unlock(&f->eng.lock);
}

static void expect_stored(struct fixture *f, const char *id, bool online, int64_t *last_seen)
{
    assert_int_equal(store_flush(f->store, 2000), 0);
    struct store_person p = {0};
    assert_int_equal(store_person_get(f->store, id, &p), 0);
    assert_int_equal(p.is_online, online);
    if (last_seen != NULL)
        *last_seen = p.last_seen_ms;
    store_person_clear(&p);
}

static bool json_has_id(json_t *arr, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(v), id) == 0)
            return true;
    }
    return false;
}

static void test_zombie_cleaned(void **state)
{
    struct fixture *f = *state;
    int64_t now = util_now_ms();
    char zombie[OID_HEX_LEN + 1];
    online_user(f, "zed", now - THRESHOLD_MS - 60000, zombie);

    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);
    uint64_t before = atomic_load(&gw_metrics.zombies_cleaned_total);
    json_t *res = maint_run_now(m);
    assert_non_null(res);
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 1);
    json_t *cleaned = json_object_get(res, "cleaned");
    assert_int_equal(json_array_size(cleaned), 1);
    assert_true(json_has_id(cleaned, zombie));
    json_decref(res);
    assert_int_equal(atomic_load(&gw_metrics.zombies_cleaned_total) - before, 1);

    /* the callback got the person as it now is: offline, lastSeen = the run's time */
    assert_int_equal(engine_ngot(&f->eng), 1);
    struct store_person *p = &f->eng.got[0];
    assert_string_equal(p->id, zombie);
    assert_string_equal(p->username, "zed");
    assert_false(p->is_online);
    assert_true(p->last_seen_ms >= now && p->last_seen_ms <= util_now_ms());
    assert_int_equal(p->last_active_at_ms, now - THRESHOLD_MS - 60000);

    /* and the store agrees */
    int64_t seen = 0;
    expect_stored(f, zombie, false, &seen);
    assert_int_equal(seen, p->last_seen_ms);

    /* a second run finds nothing */
    res = maint_run_now(m);
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 0);
    assert_int_equal(json_array_size(json_object_get(res, "cleaned")), 0);
    json_decref(res);
    assert_int_equal(engine_ngot(&f->eng), 1);
    maint_free(m);
}

static void test_anonymous_zombie(void **state)
{
    struct fixture *f = *state;
    struct store_conversation c = {0};
    assert_int_equal(store_conversation_create(f->store, NULL, "room", NULL, &c), 0);
    struct store_person a = {0};
    char token[65];
    assert_int_equal(store_anonymous_create(f->store, c.id, "guest", &a, token), 0);
    store_presence_online(f->store, a.id, true, util_now_ms() - 2 * THRESHOLD_MS);
    assert_int_equal(store_flush(f->store, 2000), 0);

    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);
    json_t *res = maint_run_now(m);
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 1);
    json_decref(res);
    assert_int_equal(engine_ngot(&f->eng), 1);
    assert_true(f->eng.got[0].is_anonymous);
    assert_string_equal(f->eng.got[0].id, a.id);
    expect_stored(f, a.id, false, NULL);
    maint_free(m);
    store_person_clear(&a);
    store_conversation_clear(&c);
}

static void test_live_never_cleaned(void **state)
{
    struct fixture *f = *state;
    int64_t now = util_now_ms();
    char idle[OID_HEX_LEN + 1], zombie[OID_HEX_LEN + 1];
    /* idle for a year, but connected here */
    online_user(f, "idle", now - 365LL * 24 * 3600 * 1000, idle);
    online_user(f, "zombie", now - THRESHOLD_MS - 1000, zombie);
    make_live(f, idle);

    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);
    for (int run = 0; run < 3; run++) {
        json_t *res = maint_run_now(m);
        assert_non_null(res);
        assert_false(json_has_id(json_object_get(res, "cleaned"), idle));
        assert_int_equal(json_integer_value(json_object_get(res, "count")), run == 0 ? 1 : 0);
        json_decref(res);
    }
    assert_true(f->eng.live_calls >= 4); /* asked about idle on every run */
    assert_int_equal(engine_ngot(&f->eng), 1);
    assert_string_equal(f->eng.got[0].id, zombie);
    expect_stored(f, idle, true, NULL);
    expect_stored(f, zombie, false, NULL);
    maint_free(m);
}

static void test_recent_not_cleaned(void **state)
{
    struct fixture *f = *state;
    int64_t now = util_now_ms();
    char recent[OID_HEX_LEN + 1], edge[OID_HEX_LEN + 1];
    online_user(f, "recent", now, recent);
    /* one minute inside the threshold */
    online_user(f, "edge", now - THRESHOLD_MS + 60000, edge);

    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);
    json_t *res = maint_run_now(m);
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 0);
    json_decref(res);
    assert_int_equal(engine_ngot(&f->eng), 0);
    expect_stored(f, recent, true, NULL);
    expect_stored(f, edge, true, NULL);
    maint_free(m);
}

static void test_stats(void **state)
{
    struct fixture *f = *state;
    f->cfg.maintenance_interval_ms = 45000;
    f->cfg.offline_threshold_ms = 120000;
    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);

    atomic_store(&gw_metrics.online_users, 7);
    atomic_store(&gw_metrics.online_anonymous, 2);
    atomic_store(&gw_metrics.connected_sockets, 11);
    atomic_store(&gw_metrics.status_broadcasts_total, 123);

    json_t *s = maint_stats_json(m);
    const char *keys[] = {"maintenanceActive",   "intervalMs",        "offlineThresholdMs",
                          "lastRunAt",           "lastRunDurationMs", "zombiesCleanedLastRun",
                          "zombiesCleanedTotal", "onlineUsers",       "onlineAnonymous",
                          "liveConnections",     "broadcastsTotal"};
    assert_int_equal(json_object_size(s), 11);
    for (size_t i = 0; i < 11; i++)
        assert_non_null(json_object_get(s, keys[i]));
    assert_true(json_is_false(json_object_get(s, "maintenanceActive")));
    assert_true(json_is_null(json_object_get(s, "lastRunAt")));
    assert_int_equal(json_integer_value(json_object_get(s, "intervalMs")), 45000);
    assert_int_equal(json_integer_value(json_object_get(s, "offlineThresholdMs")), 120000);
    assert_int_equal(json_integer_value(json_object_get(s, "zombiesCleanedTotal")), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "onlineUsers")), 7);
    assert_int_equal(json_integer_value(json_object_get(s, "onlineAnonymous")), 2);
    assert_int_equal(json_integer_value(json_object_get(s, "liveConnections")), 11);
    assert_int_equal(json_integer_value(json_object_get(s, "broadcastsTotal")), 123);
    json_decref(s);

    int64_t now = util_now_ms();
    char ids[3][OID_HEX_LEN + 1];
    online_user(f, "z1", now - 200000, ids[0]);
    online_user(f, "z2", now - 300000, ids[1]);
    online_user(f, "z3", now - 130000, ids[2]);
    json_t *res = maint_run_now(m);
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 3);
    json_decref(res);
    char id4[OID_HEX_LEN + 1];
    online_user(f, "z4", now - 400000, id4);
    res = maint_run_now(m);
    json_decref(res);

    assert_int_equal(maint_start(m), 0);
    s = maint_stats_json(m);
    assert_true(json_is_true(json_object_get(s, "maintenanceActive")));
    assert_int_equal(json_integer_value(json_object_get(s, "zombiesCleanedLastRun")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "zombiesCleanedTotal")), 4);
    assert_true(json_integer_value(json_object_get(s, "lastRunDurationMs")) >= 0);
    int64_t at = 0;
    assert_int_equal(util_parse_iso_time(json_string_value(json_object_get(s, "lastRunAt")), &at),
                     0);
    assert_true(at >= now - 1000 && at <= util_now_ms());
    json_decref(s);
    maint_stop(m);
    s = maint_stats_json(m);
    assert_true(json_is_false(json_object_get(s, "maintenanceActive")));
    json_decref(s);
    maint_free(m);
    atomic_store(&gw_metrics.online_users, 0);
    atomic_store(&gw_metrics.online_anonymous, 0);
    atomic_store(&gw_metrics.connected_sockets, 0);
    atomic_store(&gw_metrics.status_broadcasts_total, 0);
}

static void test_thread_runs_periodically(void **state)
{
    struct fixture *f = *state;
    f->cfg.maintenance_interval_ms = 50;
    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);
    assert_int_equal(maint_start(m), 0);

    /* a zombie appears while the thread runs: cleaned by the thread within a few intervals */
    char zombie[OID_HEX_LEN + 1];
    online_user(f, "late", util_now_ms() - THRESHOLD_MS - 5000, zombie);
    int64_t deadline = util_mono_ms() + 3000;
    while (engine_ngot(&f->eng) == 0 && util_mono_ms() < deadline)
        usleep(5000);
    assert_int_equal(engine_ngot(&f->eng), 1);
    assert_string_equal(f->eng.got[0].id, zombie);

    /* the thread keeps running: the stats show several runs' worth of lastRunAt updates */
    json_t *s = maint_stats_json(m);
    int64_t first = 0;
    util_parse_iso_time(json_string_value(json_object_get(s, "lastRunAt")), &first);
    json_decref(s);
    int64_t later = first;
    deadline = util_mono_ms() + 3000;
    while (later == first && util_mono_ms() < deadline) {
        usleep(10000);
        s = maint_stats_json(m);
        util_parse_iso_time(json_string_value(json_object_get(s, "lastRunAt")), &later);
        json_decref(s);
    }
    assert_true(later > first);
    maint_stop(m);
    maint_free(m);
    expect_stored(f, zombie, false, NULL);
}

static void test_stop_is_prompt(void **state)
{
    struct fixture *f = *state;
    f->cfg.maintenance_interval_ms = 60000;
    struct maint *m = maint_new(&f->cfg, f->store);
    assert_int_equal(maint_start(m), 0);
    assert_int_equal(maint_start(m), 0); /* already running: no second thread */
    usleep(20000);
    int64_t t0 = util_mono_ms();
    maint_stop(m);
    int64_t took = util_mono_ms() - t0;
    assert_true(took < 200);
    maint_stop(m); /* idempotent */
    /* restartable, and freeing a running maint stops it promptly too */
    assert_int_equal(maint_start(m), 0);
    t0 = util_mono_ms();
    maint_free(m);
    assert_true(util_mono_ms() - t0 < 200);
}

static void test_no_callbacks(void **state)
{
    struct fixture *f = *state;
    char zombie[OID_HEX_LEN + 1];
    online_user(f, "nocb", util_now_ms() - THRESHOLD_MS - 1, zombie);
    struct maint *m = maint_new(&f->cfg, f->store);
    json_t *res = maint_run_now(m);
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 1);
    json_decref(res);
    expect_stored(f, zombie, false, NULL);
    maint_free(m);
}

static void test_reconcile(void **state)
{
    struct fixture *f = *state;
    int64_t now = util_now_ms();
    char a[OID_HEX_LEN + 1], b[OID_HEX_LEN + 1];
    online_user(f, "crashA", now - 5000, a);
    online_user(f, "crashB", now - 10, b);
    struct maint *m = maint_new(&f->cfg, f->store);
    assert_int_equal(maint_reconcile(m), 0);
    int64_t seen = 0;
    expect_stored(f, a, false, &seen);
    assert_int_equal(seen, now - 5000); /* lastSeen = its lastActiveAt */
    expect_stored(f, b, false, &seen);
    assert_int_equal(seen, now - 10);
    maint_free(m);
}

/* Runs from several threads at once never overlap: each zombie is reported exactly once. */
struct racer {
    struct maint *m;
    int64_t count;
};

static void *race_run(void *arg)
{
    struct racer *r = arg;
    json_t *res = maint_run_now(r->m);
    r->count = json_integer_value(json_object_get(res, "count"));
    json_decref(res);
    return NULL;
}

static void test_concurrent_runs(void **state)
{
    struct fixture *f = *state;
    int64_t now = util_now_ms();
    char ids[8][OID_HEX_LEN + 1];
    for (int i = 0; i < 8; i++) {
        char name[16];
        snprintf(name, sizeof(name), "r%d", i);
        online_user(f, name, now - THRESHOLD_MS - 1000 * (i + 1), ids[i]);
    }
    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);
    pthread_t th[4];
    struct racer r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){.m = m};
        pthread_create(&th[i], NULL, race_run, &r[i]);
    }
    int64_t total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += r[i].count;
    }
    assert_int_equal(total, 8);
    assert_int_equal(engine_ngot(&f->eng), 8);
    maint_free(m);
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

/* The store fails (its tables vanish under it): run_now answers NULL, nobody is reported, the
 * stats keep the last good run; once the store is back the zombie is cleaned. */
static void test_store_failure(void **state)
{
    struct fixture *f = *state;
    char zombie[OID_HEX_LEN + 1];
    online_user(f, "zf", util_now_ms() - THRESHOLD_MS - 1000, zombie);
    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);
    side_sql(f, "ALTER TABLE users RENAME TO users_away;");
    assert_null(maint_run_now(m));
    assert_int_equal(engine_ngot(&f->eng), 0);
    json_t *s = maint_stats_json(m);
    assert_true(json_is_null(json_object_get(s, "lastRunAt")));
    json_decref(s);
    side_sql(f, "ALTER TABLE users_away RENAME TO users;");
    json_t *res = maint_run_now(m);
    assert_non_null(res);
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 1);
    json_decref(res);
    assert_int_equal(engine_ngot(&f->eng), 1);
    maint_free(m);
}

/* --- races with the engine (each one a regression test) ------------------------------------ */

/* The person was connected (idle) when the zombie query ran, and its last connection closed
 * just before the live check: the engine has already set it offline and told its peers. */
static void engine_disconnects_first(struct engine *e, const char *id)
{
    if (e->hook_fired++ == 0)
        store_presence_offline(e->store, id, false, util_now_ms());
}

static void test_race_disconnect_before_check(void **state)
{
    struct fixture *f = *state;
    char idle[OID_HEX_LEN + 1];
    online_user(f, "leaving", util_now_ms() - THRESHOLD_MS - 60000, idle);
    f->eng.on_live = engine_disconnects_first;
    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);
    json_t *res = maint_run_now(m);
    assert_int_equal(f->eng.hook_fired, 1);
    /* not a zombie: no second offline event, not counted */
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 0);
    json_decref(res);
    assert_int_equal(engine_ngot(&f->eng), 0);
    expect_stored(f, idle, false, NULL);
    maint_free(m);
}

/* A zombie connects right after the live check said "no connection": the engine writes it
 * online and broadcasts; the cleanup must not then set it offline over that. */
static void engine_connects_after_check(struct engine *e, const char *id)
{
    if (e->hook_fired++ == 0) {
        pthread_mutex_lock(&e->lock);
        strcpy(e->live[e->nlive++], id);
        pthread_mutex_unlock(&e->lock);
        store_presence_online(e->store, id, false, util_now_ms());
    }
}

/* Answers from before the hook runs: the check saw no connection, the connect landed just
 * after it. */
static int live_cb_before_hook(void *cls, const char *id)
{
    struct engine *e = cls;
    pthread_mutex_lock(&e->lock);
    e->live_calls++;
    int n = 0;
    for (int i = 0; i < e->nlive; i++)
        if (strcmp(e->live[i], id) == 0)
            n++;
    pthread_mutex_unlock(&e->lock);
    if (e->on_live != NULL)
        e->on_live(e, id);
    return n;
}

static void test_race_connect_after_check(void **state)
{
    struct fixture *f = *state;
    char z[OID_HEX_LEN + 1];
    online_user(f, "returning", util_now_ms() - THRESHOLD_MS - 60000, z);
    f->eng.on_live = engine_connects_after_check;
    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb_before_hook, broadcast_cb, &f->eng);
    json_t *res = maint_run_now(m);
    assert_true(f->eng.hook_fired >= 1);
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 0);
    json_decref(res);
    /* no offline event may be the last word on a connected person */
    int n = engine_ngot(&f->eng);
    if (n > 0)
        assert_true(f->eng.got[n - 1].is_online);
    expect_stored(f, z, true, NULL);
    maint_free(m);
}

/* The zombie connects while the cleanup sets it offline: the hook marks it live and writes it
 * online, standing for a connect whose write and broadcast went out just before the
 * cleanup's. The store and the last event must still say online. */
static void engine_connects_on_broadcast(struct engine *e, const struct store_person *p)
{
    if (!p->is_online && e->hook_fired == 0) {
        e->hook_fired = 1;
        pthread_mutex_lock(&e->lock);
        strcpy(e->live[e->nlive++], p->id);
        pthread_mutex_unlock(&e->lock);
        store_presence_online(e->store, p->id, p->is_anonymous, util_now_ms());
    }
}

static void test_race_connect_during_write(void **state)
{
    struct fixture *f = *state;
    char z[OID_HEX_LEN + 1], other[OID_HEX_LEN + 1];
    online_user(f, "racer", util_now_ms() - THRESHOLD_MS - 60000, z);
    online_user(f, "plain", util_now_ms() - THRESHOLD_MS - 50000, other);
    f->eng.on_broadcast = engine_connects_on_broadcast;
    struct maint *m = maint_new(&f->cfg, f->store);
    maint_set_callbacks(m, live_cb, broadcast_cb, &f->eng);
    json_t *res = maint_run_now(m);
    assert_int_equal(f->eng.hook_fired, 1);
    /* whichever of the two the hook caught is online; the other one is cleaned */
    assert_int_equal(json_integer_value(json_object_get(res, "count")), 1);
    json_t *cleaned = json_object_get(res, "cleaned");
    const char *gone = json_string_value(json_array_get(cleaned, 0));
    const char *back = strcmp(gone, z) == 0 ? other : z;
    expect_stored(f, back, true, NULL);
    expect_stored(f, gone, false, NULL);
    int last = -1;
    for (int i = 0; i < engine_ngot(&f->eng); i++)
        if (strcmp(f->eng.got[i].id, back) == 0)
            last = i;
    assert_true(last >= 0);
    assert_true(f->eng.got[last].is_online);
    json_decref(res);
    maint_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_zombie_cleaned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anonymous_zombie, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_never_cleaned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recent_not_cleaned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_runs_periodically, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_is_prompt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconcile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race_disconnect_before_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race_connect_after_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race_connect_during_write, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
