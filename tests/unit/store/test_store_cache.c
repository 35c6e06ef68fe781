/*
 * test_store_cache.c - the person read cache of store.c over the real SQLite backend wrapped
 * in a counting table: hits never reach the backend, TTL expiry and the writer's sweep,
 * presence exact through the cache before and after the writer lands a batch (and when a
 * batch lands during a backend read), provisioning and reconciliation visible, a change by
 * another writer seen once the TTL passes (or at once after a list read returned the row), the
 * memory bound (built with STORE_CACHE_PER_SHARD=4: 256 rows), concurrent readers against a
 * stream of writes, the conversations cache and the cache-only reads of loop threads, and the
 * reconnect tickets: good until anyone changes an identity or a membership (the SQLite
 * triggers, polled by the writer; this store's own writes at once), never used unchecked.
 *
 * Includes store.c (STYLE: test static functions by including the .c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "../../../store/store.c"
#include "store_test_util.h"

/* --- the counting, gated backend ----------------------------------------------------------- */

static struct store_backend_ops wrap_ops;
static atomic_int calls_get, calls_token, calls_convs;
static struct store *cur;

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_closed, in_apply;
static bool race_once; /* person_get: return the row read before a batch that lands meanwhile */

static void gate(bool closed)
{
    pthread_mutex_lock(&gate_mu);
    gate_closed = closed;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static void wait_in_apply(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    pthread_mutex_lock(&gate_mu);
    while (!in_apply)
        if (pthread_cond_timedwait(&gate_cv, &gate_mu, &ts) == ETIMEDOUT)
            break;
    bool in = in_apply;
    pthread_mutex_unlock(&gate_mu);
    assert_true(in);
}

static int wrap_apply(struct store_backend *b, const struct store_write *w, size_t n,
                      uint64_t *rows)
{
    pthread_mutex_lock(&gate_mu);
    in_apply = true;
    pthread_cond_broadcast(&gate_cv);
    while (gate_closed)
        pthread_cond_wait(&gate_cv, &gate_mu);
    in_apply = false;
    pthread_mutex_unlock(&gate_mu);
    return store__sqlite_ops.apply_batch(b, w, n, rows);
}

static bool ring_empty(void)
{
    pthread_mutex_lock(&cur->_mu);
    bool empty = cur->_ring_count == 0;
    pthread_mutex_unlock(&cur->_mu);
    return empty;
}

static int wrap_get(struct store_backend *b, const char *id, struct store_person *out)
{
    atomic_fetch_add(&calls_get, 1);
    int rc = store__sqlite_ops.person_get(b, id, out);
    pthread_mutex_lock(&gate_mu);
    bool race = race_once;
    race_once = false;
    pthread_mutex_unlock(&gate_mu);
    if (race) {
        /* The row is read; now let the gated batch land and leave the overlay. */
        gate(false);
        int64_t until = util_mono_ms() + 5000;
        while (!ring_empty() && util_mono_ms() < until) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return rc;
}

static int wrap_token(struct store_backend *b, const char *token, struct store_person *out)
{
    atomic_fetch_add(&calls_token, 1);
    return store__sqlite_ops.person_by_session_token(b, token, out);
}

static atomic_bool polls_fail; /* changes_version fails, as a database that went away */

static int wrap_changes(struct store_backend *b, uint64_t *out)
{
    if (atomic_load(&polls_fail))
        return STORE_ERR_UNAVAILABLE;
    return store__sqlite_ops.changes_version(b, out);
}

static int wrap_convs(struct store_backend *b, const struct store_person *p,
                      struct store_id_list *out)
{
    atomic_fetch_add(&calls_convs, 1);
    return store__sqlite_ops.person_conversations(b, p, out);
}

static char db_path[400];

static int setup(void **state)
{
    wrap_ops = store__sqlite_ops;
    wrap_ops.apply_batch = wrap_apply;
    wrap_ops.person_get = wrap_get;
    wrap_ops.person_by_session_token = wrap_token;
    wrap_ops.person_conversations = wrap_convs;
    wrap_ops.changes_version = wrap_changes;
    atomic_store(&polls_fail, false);
    atomic_store(&calls_get, 0);
    atomic_store(&calls_token, 0);
    atomic_store(&calls_convs, 0);
    gate(false);
    race_once = false;
    char url[320];
    store_test_url(url, sizeof(url));
    snprintf(db_path, sizeof(db_path), "%s", url + strlen("sqlite:"));
    struct store *s = NULL;
    if (store_open_ops(&wrap_ops, url, &s) != 0)
        return -1;
    cur = s;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    gate(false);
    return store_close(*state, 5000) == 0 ? 0 : -1;
}

static void mkuser(struct store *s, const char *prefix, struct store_person *out)
{
    char name[96];
    store_test_name(prefix, name, sizeof(name));
    struct store_user_new u = {
        .username = name, .display_name = "Display", .email = "e@example.org", .is_active = true};
    assert_int_equal(store_user_create(s, &u, out), 0);
}

/* The row the backend holds, read around the cache. */
static void backend_row(struct store *s, const char *id, struct store_person *out)
{
    assert_int_equal(store__sqlite_ops.person_get(s->_b, id, out), 0);
}

/* Runs one SQL statement on the database file, as another writer would. */
static void sql_exec(const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Waits (bounded) until the monotonic clock passes t. */
static void wait_until_mono(int64_t t)
{
    while (util_mono_ms() <= t) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

/* --- tests ----------------------------------------------------------------------------------- */

/* The second read of a person comes from the cache, complete, without a backend call; an
 * unknown id is never cached. */
static void test_hit_miss(void **state)
{
    struct store *s = *state;
    struct store_person u = {0}, a = {0}, b = {0};
    mkuser(s, "hit", &u);
    assert_int_equal(store_person_get(s, u.id, &a), 0);
    assert_int_equal(atomic_load(&calls_get), 1);
    assert_int_equal(store_person_get(s, u.id, &b), 0);
    assert_int_equal(atomic_load(&calls_get), 1); /* a hit does not touch SQLite */
    assert_string_equal(b.id, u.id);
    assert_string_equal(b.username, u.username);
    assert_string_equal(b.display_name, "Display");
    assert_string_equal(b.email, "e@example.org");
    assert_null(b.avatar);
    assert_string_equal(b.role, "USER");
    assert_true(b.is_active);
    assert_ptr_not_equal(a.username, b.username); /* the caller owns its copy */

    /* Upper-case ids name the same row. */
    char upper[OID_HEX_LEN + 1];
    for (int i = 0; i <= OID_HEX_LEN; i++)
        upper[i] = (char)(u.id[i] >= 'a' && u.id[i] <= 'f' ? u.id[i] - 'a' + 'A' : u.id[i]);
    store_person_clear(&b);
    assert_int_equal(store_person_get(s, upper, &b), 0);
    assert_int_equal(atomic_load(&calls_get), 1);

    struct store_cache_stats cs;
    store_cache_get_stats(s, &cs);
    assert_int_equal(cs.hits, 2);
    assert_int_equal(cs.misses, 1);
    assert_int_equal(cs.entries, 1);

    const char *unknown = "0123456789abcdef01234567";
    struct store_person x = {0};
    assert_int_equal(store_person_get(s, unknown, &x), STORE_ERR_NOT_FOUND);
    assert_int_equal(store_person_get(s, unknown, &x), STORE_ERR_NOT_FOUND);
    assert_int_equal(atomic_load(&calls_get), 3);

    /* TTL 0 turns the cache off and empties it. */
    store_cache_set_ttl(s, 0);
    store_cache_get_stats(s, &cs);
    assert_int_equal(cs.entries, 0);
    store_person_clear(&b);
    assert_int_equal(store_person_get(s, u.id, &b), 0);
    store_person_clear(&b);
    assert_int_equal(store_person_get(s, u.id, &b), 0);
    assert_int_equal(atomic_load(&calls_get), 5);
    store_cache_get_stats(s, &cs);
    assert_int_equal(cs.entries, 0);
    store_person_clear(&u);
    store_person_clear(&a);
    store_person_clear(&b);
}

static bool id_list_has(const struct store_id_list *l, const char *id)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->ids[i], id) == 0)
            return true;
    return false;
}

/* Reads the person twice: its row is then "read again", which admits its conversations. */
static void read_twice(struct store *s, const char *id)
{
    struct store_person p = {0};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(store_person_get(s, id, &p), 0);
        store_person_clear(&p);
    }
}

/* The conversations of a person whose row was read again (a reconnect) are cached like the
 * row: a further read does not reach the backend; those of a person read once are not (a
 * burst of first connects leaves nothing behind); a membership added through the store is
 * seen at once, one added by another writer within the TTL. The cache-only reads answer a hit as
 * the blocking read would, and STORE_ERR_WOULD_BLOCK for anything not cached (persons, session
 * tokens, conversations). */
static void test_conversations_cache(void **state)
{
    struct store *s = *state;
    struct store_person u = {0}, p = {0};
    struct store_conversation c1 = {0}, c2 = {0}, c3 = {0};
    struct store_id_list l = {0};
    int added = 0;
    mkuser(s, "convs", &u);
    assert_int_equal(store_conversation_create(s, NULL, "one", NULL, &c1), 0);
    assert_int_equal(store_conversation_create(s, NULL, "two", NULL, &c2), 0);
    assert_int_equal(store_conversation_create(s, NULL, "three", NULL, &c3), 0);
    assert_int_equal(store_member_add(s, c1.id, u.id, &added), 0);

    /* cache-only reads of what nobody read yet */
    assert_int_equal(store_person_get_cached(s, u.id, &p), STORE_ERR_WOULD_BLOCK);
    assert_int_equal(store_person_conversations_cached(s, &u, &l), STORE_ERR_WOULD_BLOCK);
    assert_int_equal(atomic_load(&calls_convs), 0);

    assert_int_equal(store_person_get(s, u.id, &p), 0);
    store_person_clear(&p);
    /* read once: the list is not kept */
    assert_int_equal(store_person_conversations(s, &u, &l), 0);
    assert_int_equal(l.count, 1);
    store_id_list_free(&l);
    assert_int_equal(store_person_conversations_cached(s, &u, &l), STORE_ERR_WOULD_BLOCK);
    assert_int_equal(atomic_load(&calls_convs), 1);

    assert_int_equal(store_person_get_cached(s, u.id, &p), 0);
    assert_string_equal(p.id, u.id);
    assert_string_equal(p.username, u.username);
    store_person_clear(&p);

    assert_int_equal(store_person_conversations(s, &u, &l), 0);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.ids[0], c1.id);
    store_id_list_free(&l);
    assert_int_equal(atomic_load(&calls_convs), 2);
    assert_int_equal(store_person_conversations(s, &u, &l), 0);
    assert_int_equal(l.count, 1);
    store_id_list_free(&l);
    assert_int_equal(store_person_conversations_cached(s, &u, &l), 0);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.ids[0], c1.id);
    store_id_list_free(&l);
    assert_int_equal(atomic_load(&calls_convs), 2); /* both hits */

    /* a member added through the store: the next read sees it */
    assert_int_equal(store_member_add(s, c2.id, u.id, &added), 0);
    assert_int_equal(store_person_conversations_cached(s, &u, &l), STORE_ERR_WOULD_BLOCK);
    read_twice(s, u.id); /* the member write dropped the row too */
    assert_int_equal(store_person_conversations(s, &u, &l), 0);
    assert_int_equal(l.count, 2);
    assert_true(id_list_has(&l, c1.id) && id_list_has(&l, c2.id));
    store_id_list_free(&l);
    assert_int_equal(atomic_load(&calls_convs), 3);

    /* another writer adds one: seen once the TTL has passed */
    store_cache_set_ttl(s, 150);
    read_twice(s, u.id);
    assert_int_equal(store_person_conversations(s, &u, &l), 0); /* the TTL was 2 s: refill */
    store_id_list_free(&l);
    /* The changes polls would see it (and empty the cache) sooner: with them failing, the TTL
     * is the bound, as on a backend that cannot report changes. */
    atomic_store(&polls_fail, true);
    int64_t t0 = util_mono_ms();
    char sql[256];
    snprintf(sql, sizeof(sql),
             "INSERT INTO members (conversationId, userId, joinedAt) VALUES ('%s', '%s', 1)", c3.id,
             u.id);
    sql_exec(sql);
    assert_int_equal(store_person_conversations(s, &u, &l), 0);
    if (util_mono_ms() - t0 < 150)
        assert_int_equal(l.count, 2); /* still the cached list */
    store_id_list_free(&l);
    wait_until_mono(t0 + 200);
    assert_int_equal(store_person_conversations_cached(s, &u, &l), STORE_ERR_WOULD_BLOCK);
    assert_int_equal(store_person_conversations(s, &u, &l), 0);
    assert_int_equal(l.count, 3);
    assert_true(id_list_has(&l, c3.id));
    store_id_list_free(&l);
    atomic_store(&polls_fail, false);

    /* an anonymous participant: by session token, cache-only once read */
    struct store_person anon = {0}, q = {0};
    char token[65];
    store_cache_set_ttl(s, STORE_CACHE_TTL_MS);
    assert_int_equal(store_anonymous_create(s, c1.id, "guest", &anon, token), 0);
    assert_int_equal(store_person_by_session_token_cached(s, token, &q), STORE_ERR_WOULD_BLOCK);
    assert_int_equal(store_person_by_session_token(s, token, &q), 0);
    store_person_clear(&q);
    assert_int_equal(store_person_by_session_token_cached(s, token, &q), 0); /* read again */
    assert_string_equal(q.id, anon.id);
    assert_true(q.is_anonymous);
    store_person_clear(&q);
    assert_int_equal(store_person_by_session_token_cached(s, "nope", &q), STORE_ERR_WOULD_BLOCK);
    assert_int_equal(store_person_conversations(s, &anon, &l), 0);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.ids[0], c1.id);
    store_id_list_free(&l);
    assert_int_equal(store_person_conversations_cached(s, &anon, &l), 0);
    assert_int_equal(l.count, 1);
    store_id_list_free(&l);

    /* nobody reads any more: the writer's sweep frees the lists too */
    store_cache_set_ttl(s, 150);
    int64_t until = util_mono_ms() + 4000;
    size_t left;
    for (;;) {
        left = 0;
        for (int i = 0; i < STORE_CACHE_SHARDS; i++) {
            pthread_mutex_lock(&s->_cache[i].lock);
            left += s->_cache[i].nconvs;
            pthread_mutex_unlock(&s->_cache[i].lock);
        }
        if (left == 0 || util_mono_ms() > until)
            break;
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(left, 0);

    store_person_clear(&anon);
    store_person_clear(&u);
    store_conversation_clear(&c1);
    store_conversation_clear(&c2);
    store_conversation_clear(&c3);
}

/* A row is trusted for the TTL only, and the writer sweeps expired rows by itself. */
static void test_ttl_expiry(void **state)
{
    struct store *s = *state;
    store_cache_set_ttl(s, 150);
    struct store_person u = {0}, p = {0};
    mkuser(s, "ttl", &u);
    int64_t t0 = util_mono_ms();
    assert_int_equal(store_person_get(s, u.id, &p), 0);
    store_person_clear(&p);
    assert_int_equal(store_person_get(s, u.id, &p), 0);
    store_person_clear(&p);
    /* Both reads within the TTL, unless this machine stalled for 150 ms. */
    if (util_mono_ms() - t0 < 150)
        assert_int_equal(atomic_load(&calls_get), 1);
    wait_until_mono(t0 + 200);
    assert_int_equal(store_person_get(s, u.id, &p), 0);
    store_person_clear(&p);
    int after = atomic_load(&calls_get);
    assert_true(after >= 2);

    /* Nobody reads any more: the writer's sweep (about once a second) frees the row. */
    struct store_cache_stats cs;
    int64_t until = util_mono_ms() + 4000;
    for (;;) {
        store_cache_get_stats(s, &cs);
        if (cs.entries == 0 || util_mono_ms() > until)
            break;
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(cs.entries, 0);
    assert_int_equal(atomic_load(&calls_get), after); /* the sweep itself reads nothing */
    store_person_clear(&u);
}

/* Presence read through a cached row is what was enqueued, before the writer lands it, while
 * it lands, and after, without reading the backend again. */
static void test_presence_exact(void **state)
{
    struct store *s = *state;
    struct store_person u = {0}, p = {0}, db = {0};
    mkuser(s, "exact", &u);
    assert_int_equal(store_person_get(s, u.id, &p), 0); /* cached, offline */
    assert_false(p.is_online);
    store_person_clear(&p);

    gate(true);
    store_presence_online(s, u.id, false, 1000);
    wait_in_apply(); /* the batch is at the backend, not landed */
    assert_int_equal(store_person_get(s, u.id, &p), 0);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, 1000);
    store_person_clear(&p);
    gate(false);
    assert_int_equal(store_flush(s, 5000), 0);
    assert_int_equal(HASH_COUNT(s->_overlay), 0);
    assert_int_equal(store_person_get(s, u.id, &p), 0); /* the cached row itself moved */
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, 1000);
    assert_int_equal(p.last_seen_ms, 0);
    store_person_clear(&p);

    store_presence_activity(s, u.id, false, 1500);
    store_presence_offline(s, u.id, false, 2000);
    assert_int_equal(store_person_get(s, u.id, &p), 0); /* before the flush */
    assert_false(p.is_online);
    assert_int_equal(p.last_active_at_ms, 1500);
    assert_int_equal(p.last_seen_ms, 2000);
    store_person_clear(&p);
    assert_int_equal(store_flush(s, 5000), 0);
    assert_int_equal(store_person_get(s, u.id, &p), 0); /* after */
    backend_row(s, u.id, &db);
    assert_int_equal(p.is_online, db.is_online);
    assert_int_equal(p.last_active_at_ms, db.last_active_at_ms);
    assert_int_equal(p.last_seen_ms, db.last_seen_ms);
    assert_int_equal(db.last_seen_ms, 2000);
    assert_int_equal(atomic_load(&calls_get), 1); /* every read above was a hit */
    store_person_clear(&p);
    store_person_clear(&db);
    store_person_clear(&u);
}

/* A batch lands (and leaves the overlay) while a miss reads the backend: the row read before
 * it must neither be returned nor cached. */
static void test_fill_race(void **state)
{
    struct store *s = *state;
    struct store_person u = {0}, p = {0};
    mkuser(s, "race", &u);
    gate(true);
    store_presence_online(s, u.id, false, 3000);
    wait_in_apply();
    race_once = true;
    assert_int_equal(store_person_get(s, u.id, &p), 0);
    assert_false(race_once);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, 3000);
    assert_int_equal(atomic_load(&calls_get), 2); /* the stale read was read again */
    store_person_clear(&p);
    assert_int_equal(HASH_COUNT(s->_overlay), 0);
    assert_int_equal(store_person_get(s, u.id, &p), 0); /* a hit, and a right one */
    assert_int_equal(atomic_load(&calls_get), 2);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, 3000);
    store_person_clear(&p);
    store_person_clear(&u);
}

/* Provisioning is visible at once; anonymous participants are cached by token; the startup
 * reconciliation drops cached rows; another writer's change shows once the TTL passes. */
static void test_provisioning_visible(void **state)
{
    struct store *s = *state;
    const char *id = "5f0000000000000000000001";
    struct store_person p = {0};
    assert_int_equal(store_person_get(s, id, &p), STORE_ERR_NOT_FOUND);
    char name[96];
    store_test_name("prov", name, sizeof(name));
    struct store_user_new nu = {.id = id, .username = name, .role = "ADMIN", .is_active = true};
    struct store_person created = {0};
    assert_int_equal(store_user_create(s, &nu, &created), 0);
    assert_int_equal(store_person_get(s, id, &p), 0);
    assert_string_equal(p.role, "ADMIN");
    store_person_clear(&p);

    /* member_add drops the row: the next read goes to the backend. */
    struct store_conversation c = {0};
    assert_int_equal(store_conversation_create(s, NULL, "t", NULL, &c), 0);
    int added = 0;
    int before = atomic_load(&calls_get);
    assert_int_equal(store_member_add(s, c.id, id, &added), 0);
    assert_int_equal(added, 1);
    assert_int_equal(store_person_get(s, id, &p), 0);
    store_person_clear(&p);
    assert_int_equal(atomic_load(&calls_get), before + 1);

    /* Anonymous: the token read once, then token and row from the cache. */
    struct store_person anon = {0};
    char token[65];
    assert_int_equal(store_anonymous_create(s, c.id, "guest", &anon, token), 0);
    assert_int_equal(store_person_by_session_token(s, token, &p), 0);
    assert_string_equal(p.id, anon.id);
    assert_true(p.is_anonymous);
    store_person_clear(&p);
    int tok_calls = atomic_load(&calls_token), get_calls = atomic_load(&calls_get);
    store_presence_online(s, anon.id, true, 4000);
    assert_int_equal(store_person_by_session_token(s, token, &p), 0);
    assert_true(p.is_online); /* overlay over the cached row */
    assert_string_equal(p.conversation_id, c.id);
    store_person_clear(&p);
    assert_int_equal(atomic_load(&calls_token), tok_calls);
    assert_int_equal(atomic_load(&calls_get), get_calls);
    struct store_person none = {0};
    assert_int_equal(store_person_by_session_token(s, "no-such-token", &none), STORE_ERR_NOT_FOUND);
    assert_int_equal(store_flush(s, 5000), 0);

    /* Reconciliation writes behind the writer: the cached online row must go. */
    assert_int_equal(store_person_by_session_token(s, token, &p), 0);
    assert_true(p.is_online);
    store_person_clear(&p);
    uint64_t n = 0;
    assert_int_equal(store_reconcile_startup(s, 5000, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_person_get(s, anon.id, &p), 0);
    assert_false(p.is_online);
    assert_int_equal(p.last_seen_ms, 4000); /* its lastActiveAt */
    store_person_clear(&p);

    /* Another writer of the same database demotes and deactivates the user: unseen within
     * the TTL, seen after it (with the changes polls failing, see test_conversations_cache). */
    atomic_store(&polls_fail, true);
    store_cache_set_ttl(s, 150);
    assert_int_equal(store_person_get(s, id, &p), 0);
    int64_t filled = util_mono_ms();
    store_person_clear(&p);
    char sql[200];
    snprintf(sql, sizeof(sql), "UPDATE users SET role='USER', isActive=0 WHERE id='%s'", id);
    sql_exec(sql);
    assert_int_equal(store_person_get(s, id, &p), 0);
    if (util_mono_ms() - filled < 150)
        assert_string_equal(p.role, "ADMIN"); /* the documented staleness */
    store_person_clear(&p);
    wait_until_mono(filled + 200);
    assert_int_equal(store_person_get(s, id, &p), 0);
    assert_string_equal(p.role, "USER");
    assert_false(p.is_active);
    store_person_clear(&p);
    atomic_store(&polls_fail, false);

    store_person_clear(&anon);
    store_person_clear(&created);
    store_conversation_clear(&c);
}

/* Another writer marks a cached person online long ago (a crashed node's zombie): the zombie
 * query finds it, and the maintenance job's re-read by id agrees with the query instead of
 * showing the cached offline row. */
static void test_list_read_refreshes(void **state)
{
    struct store *s = *state;
    struct store_person u = {0}, p = {0};
    mkuser(s, "zombie", &u);
    assert_int_equal(store_person_get(s, u.id, &p), 0); /* cached offline */
    assert_false(p.is_online);
    store_person_clear(&p);
    char sql[200];
    snprintf(sql, sizeof(sql), "UPDATE users SET isOnline=1, lastActiveAt=1000 WHERE id='%s'",
             u.id);
    sql_exec(sql);
    struct store_person_list z = {0};
    assert_int_equal(store_zombies_find(s, 5000, &z), 0);
    assert_int_equal(z.count, 1);
    assert_string_equal(z.items[0].id, u.id);
    store_person_list_free(&z);
    int before = atomic_load(&calls_get);
    assert_int_equal(store_person_get(s, u.id, &p), 0);
    assert_int_equal(atomic_load(&calls_get), before); /* still a hit, of the fresh row */
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, 1000);
    store_person_clear(&p);
    store_person_clear(&u);
}

/* The cache never holds more than its bound (this build: 64 shards of 4 rows and 4 tokens),
 * and every read stays right while rows are evicted. */
static void test_memory_bound(void **state)
{
    struct store *s = *state;
    enum { N = 600 };
    const size_t cap = (size_t)STORE_CACHE_SHARDS * STORE_CACHE_PER_SHARD;
    assert_int_equal(cap, 256);
    store_cache_set_ttl(s, 600000); /* nothing expires: only the bound removes rows */
    static struct store_person users[N];
    for (int i = 0; i < N; i++)
        mkuser(s, "bound", &users[i]);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            struct store_person p = {0};
            assert_int_equal(store_person_get(s, users[i].id, &p), 0);
            assert_string_equal(p.username, users[i].username);
            store_person_clear(&p);
        }
    }
    struct store_cache_stats cs;
    store_cache_get_stats(s, &cs);
    assert_true(cs.entries <= cap);
    assert_true(cs.entries >= cap / 2);   /* and it does cache */
    assert_true(cs.evictions >= N - cap); /* the first round alone fills N distinct rows */
    assert_int_equal(cs.hits + cs.misses, 2 * N);
    assert_int_equal(cs.misses, cs.entries + cs.evictions);
    assert_int_equal(cs.entries + cs.tokens, atomic_load(&s->_cache_size));

    struct store_conversation c = {0};
    assert_int_equal(store_conversation_create(s, NULL, "t", NULL, &c), 0);
    for (int i = 0; i < 300; i++) {
        struct store_person anon = {0}, p = {0};
        char token[65];
        assert_int_equal(store_anonymous_create(s, c.id, "guest", &anon, token), 0);
        assert_int_equal(store_person_by_session_token(s, token, &p), 0);
        assert_string_equal(p.id, anon.id);
        store_person_clear(&p);
        store_person_clear(&anon);
    }
    store_cache_get_stats(s, &cs);
    assert_true(cs.tokens <= cap);
    assert_true(cs.entries <= cap);
    for (int i = 0; i < N; i++)
        store_person_clear(&users[i]);
    store_conversation_clear(&c);
}

/* --- concurrent readers ---------------------------------------------------------------------- */

enum { CR_USERS = 8, CR_READERS = 4, CR_WRITES = 3000 };

struct cr_shared {
    struct store *s;
    char ids[CR_USERS][OID_HEX_LEN + 1];
    atomic_llong enqueued[CR_USERS]; /* newest lastActiveAt enqueued per user */
    atomic_bool stop;
    atomic_int errors;
    atomic_long reads;
};

/* Each read must show at least the newest lastActiveAt enqueued before it started, and a
 * thread's reads never go back in time: the REST rule "never older than the last broadcast". */
static void *cr_reader(void *arg)
{
    struct cr_shared *sh = arg;
    long long last[CR_USERS] = {0};
    unsigned k = 0;
    while (!atomic_load(&sh->stop)) {
        int i = (int)(k++ % CR_USERS);
        long long floor = atomic_load(&sh->enqueued[i]);
        struct store_person p = {0};
        int rc = store_person_get(sh->s, sh->ids[i], &p);
        if (rc != 0 || p.last_active_at_ms < floor || p.last_active_at_ms < last[i] ||
            strcmp(p.id, sh->ids[i]) != 0 || p.username == NULL)
            atomic_fetch_add(&sh->errors, 1);
        last[i] = p.last_active_at_ms;
        store_person_clear(&p);
        atomic_fetch_add(&sh->reads, 1);
    }
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    struct store *s = *state;
    store_cache_set_ttl(s, 5); /* expire often: fills race with the writer too */
    static struct cr_shared sh;
    memset(&sh, 0, sizeof(sh));
    sh.s = s;
    for (int i = 0; i < CR_USERS; i++) {
        struct store_person u = {0};
        mkuser(s, "conc", &u);
        memcpy(sh.ids[i], u.id, sizeof(sh.ids[i]));
        store_person_clear(&u);
    }
    pthread_t th[CR_READERS];
    for (int t = 0; t < CR_READERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, cr_reader, &sh), 0);
    int64_t until = util_mono_ms() + 20000;
    for (int w = 1; w <= CR_WRITES && util_mono_ms() < until; w++) {
        int i = w % CR_USERS;
        if (w % 3 == 0)
            store_presence_offline(s, sh.ids[i], false, 10 * w);
        else
            store_presence_online(s, sh.ids[i], false, 10 * w);
        if (w % 3 != 0)
            atomic_store(&sh.enqueued[i], 10LL * w);
        if (w % 500 == 0)
            assert_int_equal(store_flush(s, 5000), 0);
        if (w % 7 == 0) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
    }
    assert_int_equal(store_flush(s, 5000), 0);
    /* Let the readers reach a meaningful count even on a loaded machine (bounded). */
    int64_t reads_until = util_mono_ms() + 10000;
    while (atomic_load(&sh.reads) < 2000 && util_mono_ms() < reads_until) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&sh.stop, true);
    for (int t = 0; t < CR_READERS; t++)
        pthread_join(th[t], NULL);
    assert_int_equal(atomic_load(&sh.errors), 0);
    assert_true(atomic_load(&sh.reads) > 1000);
    struct store_cache_stats cs;
    store_cache_get_stats(s, &cs);
    assert_true(cs.hits > 0);
    assert_true(cs.misses > 0);
}

/* Waits (bounded) until the writer has done `more` polls of changes_version from now on. */
static void wait_polls(struct store *s, uint64_t more)
{
    struct store_cache_stats cs;
    store_cache_get_stats(s, &cs);
    uint64_t target = cs.change_polls + more;
    int64_t until = util_mono_ms() + 5000;
    while (cs.change_polls < target && util_mono_ms() < until) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        store_cache_get_stats(s, &cs);
    }
    assert_true(cs.change_polls >= target);
}

/* Waits (bounded) until a poll saw the version move: the stamp changes. */
static void wait_stamp_moved(struct store *s, uint64_t stamp)
{
    int64_t until = util_mono_ms() + 5000;
    while (store_ticket_stamp(s) == stamp && util_mono_ms() < until) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    assert_true(store_ticket_stamp(s) != stamp);
}

static uint64_t tickets_held(struct store *s)
{
    struct store_cache_stats cs;
    store_cache_get_stats(s, &cs);
    return cs.tickets;
}

/* Takes id's ticket once a poll has checked it (bounded: a take right after a poll may still
 * find it unchecked on a loaded machine, and then leaves it in place). */
static int take_checked(struct store *s, const char *id, struct store_person *p,
                        struct store_id_list *l)
{
    int rc = STORE_ERR_NOT_FOUND;
    for (int i = 0; i < 20; i++) {
        wait_polls(s, 1);
        rc = store_ticket_take(s, id, p, l);
        if (rc == 0 || tickets_held(s) == 0)
            break;
    }
    return rc;
}

/* Lets the polls catch up with the changes made so far (this store's own included: they fire
 * the triggers too): a row in the cache keeps the writer polling with its sweeps, and the
 * second poll from now started after them. */
static void settle(struct store *s, const char *id)
{
    struct store_person p = {0};
    assert_int_equal(store_person_get(s, id, &p), 0);
    store_person_clear(&p);
    wait_polls(s, 2);
}

static void put_ticket(struct store *s, uint64_t stamp, const struct store_person *u,
                       const char *cid)
{
    char ids[1][OID_HEX_LEN + 1];
    memcpy(ids[0], cid, sizeof(ids[0]));
    struct store_id_list l = {.ids = ids, .count = 1};
    store_ticket_put(s, stamp, u->id, u->username, 7000, &l);
}

/* A ticket answers a reconnect without the backend, once a poll checked it; presence writes
 * do not void it; an identity or membership change by another writer does (seen by the next
 * poll), and a ticket stamped before it is refused at put; this store's own membership write
 * voids it at once; while the polls fail, a ticket is not used (and kept for later). */
static void test_reconnect_tickets(void **state)
{
    struct store *s = *state;
    struct store_person u = {0}, p = {0};
    struct store_id_list l = {0};
    mkuser(s, "ticket", &u);
    struct store_conversation c = {0}, c2 = {0};
    assert_int_equal(store_conversation_create(s, NULL, "t", NULL, &c), 0);
    assert_int_equal(store_conversation_create(s, NULL, "t2", NULL, &c2), 0);
    int added = 0;
    assert_int_equal(store_member_add(s, c.id, u.id, &added), 0);

    /* Good: the fields the registry left, and no backend read. */
    settle(s, u.id);
    uint64_t stamp = store_ticket_stamp(s);
    assert_true(stamp != 0);
    put_ticket(s, stamp, &u, c.id);
    assert_int_equal(tickets_held(s), 1);
    int gets = atomic_load(&calls_get), convs = atomic_load(&calls_convs);
    assert_int_equal(take_checked(s, u.id, &p, &l), 0);
    assert_string_equal(p.id, u.id);
    assert_string_equal(p.username, u.username);
    assert_true(p.is_active);
    assert_false(p.is_anonymous);
    assert_int_equal(p.last_seen_ms, 7000);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.ids[0], c.id);
    assert_int_equal(atomic_load(&calls_get), gets);
    assert_int_equal(atomic_load(&calls_convs), convs);
    store_person_clear(&p);
    store_id_list_free(&l);
    assert_int_equal(store_ticket_take(s, u.id, &p, &l), STORE_ERR_NOT_FOUND); /* used up */
    struct store_cache_stats cs;
    store_cache_get_stats(s, &cs);
    assert_int_equal(cs.ticket_hits, 1);
    assert_int_equal(cs.tickets, 0);

    /* The writer's own presence writes fire no trigger. */
    stamp = store_ticket_stamp(s);
    put_ticket(s, stamp, &u, c.id);
    store_presence_online(s, u.id, false, 8000);
    store_presence_offline(s, u.id, false, 9000);
    assert_int_equal(store_flush(s, 5000), 0);
    wait_polls(s, 2); /* one poll at least started after the commit */
    assert_int_equal(take_checked(s, u.id, &p, &l), 0);
    store_person_clear(&p);
    store_id_list_free(&l);

    /* Another writer changes the display name: the next poll voids the ticket; one stamped
     * before the change is refused. */
    const char *changes[] = {"UPDATE users SET displayName='Renamed' WHERE id='%s'",
                             "UPDATE users SET isActive=0 WHERE id='%s'",
                             "DELETE FROM members WHERE userId='%s'"};
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        stamp = store_ticket_stamp(s);
        put_ticket(s, stamp, &u, c.id);
        char sql[200];
        snprintf(sql, sizeof(sql), changes[i], u.id);
        sql_exec(sql);
        wait_stamp_moved(s, stamp);
        assert_int_equal(store_ticket_take(s, u.id, &p, &l), STORE_ERR_NOT_FOUND);
        assert_int_equal(tickets_held(s), 0);
        put_ticket(s, stamp, &u, c.id);
        assert_int_equal(tickets_held(s), 0);
    }

    /* What a poll sees moving also empties the cache: a row cached for long (the TTL raised
     * here) is read again, so a stamp taken after the poll comes with the new row. */
    store_cache_set_ttl(s, 60000);
    assert_int_equal(store_person_get(s, u.id, &p), 0);
    store_person_clear(&p);
    gets = atomic_load(&calls_get);
    assert_int_equal(store_person_get(s, u.id, &p), 0); /* a hit */
    assert_int_equal(atomic_load(&calls_get), gets);
    store_person_clear(&p);
    char upd[200];
    snprintf(upd, sizeof(upd), "UPDATE users SET isActive=1, displayName='Later' WHERE id='%s'",
             u.id);
    stamp = store_ticket_stamp(s);
    sql_exec(upd);
    wait_stamp_moved(s, stamp);
    struct store_cache_stats cs2;
    store_cache_get_stats(s, &cs2);
    assert_int_equal(cs2.entries, 0);
    assert_int_equal(store_person_get(s, u.id, &p), 0);
    assert_int_equal(atomic_load(&calls_get), gets + 1);
    assert_string_equal(p.display_name, "Later");
    assert_true(p.is_active);
    store_person_clear(&p);

    /* This store's membership write: void at once, no poll needed. */
    stamp = store_ticket_stamp(s);
    put_ticket(s, stamp, &u, c.id);
    assert_int_equal(store_member_add(s, c2.id, u.id, &added), 0);
    assert_int_equal(store_ticket_take(s, u.id, &p, &l), STORE_ERR_NOT_FOUND);
    assert_int_equal(tickets_held(s), 0);
    /* ... and the trigger it fired is no news to the polls: other cached rows (the TTL is
     * still raised) and tickets stay. */
    struct store_person v = {0};
    mkuser(s, "bystander", &v);
    settle(s, v.id); /* past a poll that may have overlapped the insert */
    assert_int_equal(store_person_get(s, v.id, &p), 0);
    store_person_clear(&p);
    stamp = store_ticket_stamp(s);
    put_ticket(s, stamp, &u, c.id);
    wait_polls(s, 3);
    assert_int_equal(store_ticket_stamp(s), stamp);
    gets = atomic_load(&calls_get);
    assert_int_equal(store_person_get(s, v.id, &p), 0);
    assert_int_equal(atomic_load(&calls_get), gets);
    store_person_clear(&p);
    assert_int_equal(take_checked(s, u.id, &p, &l), 0);
    store_person_clear(&p);
    store_id_list_free(&l);
    store_person_clear(&v);
    store_cache_set_ttl(s, STORE_CACHE_TTL_MS);

    /* Polls failing: a ticket is not used once the last good poll is older than
     * STORE_TICKET_FRESH_MS, and is used after the polls come back. */
    settle(s, u.id);
    atomic_store(&polls_fail, true);
    stamp = store_ticket_stamp(s);
    put_ticket(s, stamp, &u, c.id);
    wait_until_mono(util_mono_ms() + STORE_TICKET_FRESH_MS + 50);
    assert_int_equal(store_ticket_take(s, u.id, &p, &l), STORE_ERR_NOT_FOUND);
    assert_int_equal(tickets_held(s), 1);
    atomic_store(&polls_fail, false);
    assert_int_equal(take_checked(s, u.id, &p, &l), 0);
    store_person_clear(&p);
    store_id_list_free(&l);

    /* With the cache off there are no tickets. */
    store_cache_set_ttl(s, 0);
    assert_int_equal(store_ticket_stamp(s), 0);
    put_ticket(s, stamp, &u, c.id);
    assert_int_equal(tickets_held(s), 0);

    store_person_clear(&u);
    store_conversation_clear(&c);
    store_conversation_clear(&c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hit_miss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conversations_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presence_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fill_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provisioning_visible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_read_refreshes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_tickets, setup, teardown),
    };
    int rc = cmocka_run_group_tests_name("store_cache", tests, NULL, NULL);
    store_test_cleanup();
    return rc;
}
