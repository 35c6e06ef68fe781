/*
 * maintenance.c - the zombie cleanup job, the startup reconciliation and their stats
 * (SPEC §2 flows 4-5, GET /api/admin/maintenance/stats, POST .../cleanup-zombies).
 *
 * A zombie is a person the store says is online, whose lastActiveAt is older than
 * OFFLINE_THRESHOLD_MS, and who has no live connection on this node. The store finds the
 * first two conditions through its index of the persons online; the third is asked of the
 * Socket.IO engine through the live callback, so a person idle but connected is never set
 * offline however old their lastActiveAt (the seed's flaw). Each zombie is set offline
 * through the store's writer (lastSeen = now) and reported to the broadcast callback, which
 * sends one user:status per zombie.
 *
 * DESIGN
 * One thread sleeps on a condition variable with a monotonic timeout, so maint_stop() wakes
 * it at once instead of waiting out the interval; its timer slack is set to 1 ns so a short
 * interval in tests fires when asked, not 50 us later per wake-up. A run may also be asked
 * from an HTTP thread (maint_run_now); a mutex makes runs strictly one after another, so two
 * runs never set the same person offline twice. The stats are written under their own small
 * lock at the end of a run and read by maint_stats_json() without waiting for a run.
 * The callbacks run on the thread doing the run (the maintenance thread or the HTTP thread of
 * maint_run_now), never on a loop thread: the Socket.IO engine must hand the broadcast over
 * to its loops itself.
 *
 * The engine connects and disconnects persons while a run goes on, and "no live connection"
 * is only true at the instant it is asked. So a candidate is (1) asked about, (2) read again
 * through the store's pending overlay (a disconnect or connect just before is seen there),
 * (3) set offline and broadcast, and (4) asked about once more: a connect that landed between
 * (2) and (3) gets a second online write and broadcast, so the last word is right. A connect
 * after (4) writes and broadcasts after us by itself.
 */
#include "maintenance/maintenance.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"

/* A shorter interval would only burn the store; configuration bounds keep it far above. */
#define MAINT_MIN_INTERVAL_MS 10

struct maint {
    struct store *_store;
    int64_t _interval_ms;
    int64_t _threshold_ms;

    maint_live_fn _live;
    maint_broadcast_fn _broadcast;
    void *_cls;

    /* the thread and its wake-up */
    pthread_t _thread;
    bool _running;
    bool _stopping;
    pthread_mutex_t _lock;
    pthread_cond_t _cond;

    /* one run at a time */
    pthread_mutex_t _run_lock;

    /* stats, under _stats_lock */
    pthread_mutex_t _stats_lock;
    int64_t _last_run_at_ms; /* 0: never */
    int64_t _last_run_duration_ms;
    uint64_t _last_cleaned;
    uint64_t _total_cleaned;
};

struct maint *maint_new(const struct gw_config *cfg, struct store *store)
{
    struct maint *m = xcalloc(1, sizeof(*m));
    m->_store = store;
    m->_interval_ms = cfg->maintenance_interval_ms < MAINT_MIN_INTERVAL_MS
                          ? MAINT_MIN_INTERVAL_MS
                          : cfg->maintenance_interval_ms;
    m->_threshold_ms = cfg->offline_threshold_ms;
    pthread_mutex_init(&m->_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&m->_run_lock, NULL);
    pthread_mutex_init(&m->_stats_lock, NULL);
    return m;
}

void maint_set_callbacks(struct maint *m, maint_live_fn live, maint_broadcast_fn broadcast,
                         void *cls)
{
    /* Under the run lock: a run in progress finishes with the callbacks it started with. */
    pthread_mutex_lock(&m->_run_lock);
    m->_live = live;
    m->_broadcast = broadcast;
    m->_cls = cls;
    pthread_mutex_unlock(&m->_run_lock);
}

int maint_reconcile(struct maint *m)
{
    uint64_t count = 0;
    int64_t t0 = util_mono_ms();
    int rc = store_reconcile_startup(m->_store, util_now_ms(), &count);
    if (rc != 0) {
        log_warnx("[RECONCILE] startup reconciliation failed (store error %d)", rc);
        return rc;
    }
    log_info("[RECONCILE] set %" PRIu64 " persons offline at startup in %" PRId64 " ms", count,
             util_mono_ms() - t0);
    return 0;
}

/* A zombie candidate is read again, through the store's pending overlay, once the engine has
 * said it holds no connection of it: between the zombie query and that answer its last
 * connection may have closed (the engine then set it offline and told its peers already), or
 * it may have connected just after the answer (the engine wrote it online with a fresh
 * lastActiveAt). Either way it is no zombie any more, and setting it offline again would send
 * a second offline event or put a connected person offline. A store error skips it: the next
 * run retries. */
static bool still_zombie(struct maint *m, const char *id, int64_t cutoff_ms)
{
    struct store_person cur = {0};
    int rc = store_person_get(m->_store, id, &cur);
    bool zombie = rc == 0 && cur.is_online && cur.last_active_at_ms < cutoff_ms;
    store_person_clear(&cur);
    if (rc != 0 && rc != STORE_ERR_NOT_FOUND)
        log_warnx("[CLEANUP] user=%s: re-read failed (store error %d), left for the next run", id,
                  rc);
    return zombie;
}

/* The person connected while the cleanup was setting it offline: the engine's online write
 * and broadcast may have gone out before ours. Writing and broadcasting online once more
 * makes "online" the last word in the store and for every peer. A connect after the second
 * live check needs nothing: its own write and broadcast come after ours. */
static void keep_online(struct maint *m, struct store_person *p)
{
    int64_t now = util_now_ms();
    store_presence_online(m->_store, p->id, p->is_anonymous, now);
    p->is_online = true;
    p->last_active_at_ms = now;
    if (m->_broadcast != NULL)
        m->_broadcast(m->_cls, p);
    log_info("[CLEANUP] user=%s connected during the cleanup: kept online", p->id);
}

/* One cleanup. Appends the ids cleaned to cleaned (may be NULL). Returns 0 or a STORE_ERR_*. */
static int run_once(struct maint *m, json_t *cleaned)
{
    pthread_mutex_lock(&m->_run_lock);
    int64_t t0 = util_mono_ms();
    int64_t now = util_now_ms();
    struct store_person_list zombies = {0};
    int rc = store_zombies_find(m->_store, now - m->_threshold_ms, &zombies);
    if (rc != 0) {
        pthread_mutex_unlock(&m->_run_lock);
        log_warnx("[CLEANUP] zombie search failed (store error %d)", rc);
        return rc;
    }

    uint64_t count = 0;
    int64_t cutoff = now - m->_threshold_ms;
    for (size_t i = 0; i < zombies.count; i++) {
        struct store_person *p = &zombies.items[i];
        /* Idle but connected is not a zombie (SPEC §1 fix), nor a person inside the
         * disconnect grace: the engine counts those as live. */
        if (m->_live != NULL && m->_live(m->_cls, p->id) > 0)
            continue;
        if (!still_zombie(m, p->id, cutoff))
            continue;
        store_presence_offline(m->_store, p->id, p->is_anonymous, now);
        p->is_online = false;
        p->last_seen_ms = now;
        if (m->_broadcast != NULL)
            m->_broadcast(m->_cls, p);
        if (m->_live != NULL && m->_live(m->_cls, p->id) > 0) {
            keep_online(m, p);
            continue;
        }
        if (cleaned != NULL)
            json_array_append_new(cleaned, json_string(p->id));
        count++;
    }
    store_person_list_free(&zombies);
    METRIC_ADD(zombies_cleaned_total, count);

    int64_t duration = util_mono_ms() - t0;
    pthread_mutex_lock(&m->_stats_lock);
    m->_last_run_at_ms = now;
    m->_last_run_duration_ms = duration;
    m->_last_cleaned = count;
    m->_total_cleaned += count;
    pthread_mutex_unlock(&m->_stats_lock);
    pthread_mutex_unlock(&m->_run_lock);

    log_info("[CLEANUP] cleaned %" PRIu64 " zombies in %" PRId64 " ms", count, duration);
    return 0;
}

static void *maint_thread(void *arg)
{
    struct maint *m = arg;
    util_thread_name("maint");
    /* Wake-ups on time: the default 50 us slack is noise here, but costs nothing to drop. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

    pthread_mutex_lock(&m->_lock);
    while (!m->_stopping) {
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += m->_interval_ms / 1000;
        deadline.tv_nsec += (m->_interval_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        /* Loop on spurious wake-ups until the deadline or a stop. */
        while (!m->_stopping && rc == 0)
            rc = pthread_cond_timedwait(&m->_cond, &m->_lock, &deadline);
        if (m->_stopping)
            break;
        pthread_mutex_unlock(&m->_lock);
        run_once(m, NULL); /* failures are logged; the next run retries */
        pthread_mutex_lock(&m->_lock);
    }
    pthread_mutex_unlock(&m->_lock);
    return NULL;
}

int maint_start(struct maint *m)
{
    pthread_mutex_lock(&m->_lock);
    if (m->_running) {
        pthread_mutex_unlock(&m->_lock);
        return 0;
    }
    m->_stopping = false;
    int rc = pthread_create(&m->_thread, NULL, maint_thread, m);
    if (rc != 0) {
        pthread_mutex_unlock(&m->_lock);
        log_warnx("%s: pthread_create: %s", __func__, strerror(rc));
        return STORE_ERR_INTERNAL;
    }
    m->_running = true;
    pthread_mutex_unlock(&m->_lock);
    log_info("[CLEANUP] maintenance started: every %" PRId64 " ms, threshold %" PRId64 " ms",
             m->_interval_ms, m->_threshold_ms);
    return 0;
}

json_t *maint_run_now(struct maint *m)
{
    json_t *ids = json_array();
    if (run_once(m, ids) != 0) {
        json_decref(ids);
        return NULL;
    }
    return json_pack("{s:o, s:I}", "cleaned", ids, "count", (json_int_t)json_array_size(ids));
}

json_t *maint_stats_json(struct maint *m)
{
    pthread_mutex_lock(&m->_lock);
    bool active = m->_running && !m->_stopping;
    pthread_mutex_unlock(&m->_lock);

    pthread_mutex_lock(&m->_stats_lock);
    int64_t last_at = m->_last_run_at_ms;
    int64_t last_duration = m->_last_run_duration_ms;
    uint64_t last_cleaned = m->_last_cleaned;
    uint64_t total = m->_total_cleaned;
    pthread_mutex_unlock(&m->_stats_lock);

    json_t *last_run;
    if (last_at != 0) {
        char iso[ISO_TIME_LEN + 1];
        util_iso_time(last_at, iso);
        last_run = json_string(iso);
    } else {
        last_run = json_null();
    }
    int64_t online_users = atomic_load_explicit(&gw_metrics.online_users, memory_order_relaxed);
    int64_t online_anon = atomic_load_explicit(&gw_metrics.online_anonymous, memory_order_relaxed);
    int64_t live = atomic_load_explicit(&gw_metrics.connected_sockets, memory_order_relaxed);
    uint64_t broadcasts =
        atomic_load_explicit(&gw_metrics.status_broadcasts_total, memory_order_relaxed);

    /* clang-format off: one key per line reads as the SPEC's list */
    return json_pack("{s:b, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "maintenanceActive",
                     active, "intervalMs", (json_int_t)m->_interval_ms, "offlineThresholdMs",
                     (json_int_t)m->_threshold_ms, "lastRunAt", last_run, "lastRunDurationMs",
                     (json_int_t)last_duration, "zombiesCleanedLastRun", (json_int_t)last_cleaned,
                     "zombiesCleanedTotal", (json_int_t)total, "onlineUsers",
                     (json_int_t)online_users, "onlineAnonymous", (json_int_t)online_anon,
                     "liveConnections", (json_int_t)live, "broadcastsTotal",
                     (json_int_t)broadcasts);
    /* clang-format on */
}

void maint_stop(struct maint *m)
{
    pthread_mutex_lock(&m->_lock);
    if (!m->_running) {
        pthread_mutex_unlock(&m->_lock);
        return;
    }
    m->_stopping = true;
    pthread_cond_signal(&m->_cond);
    pthread_mutex_unlock(&m->_lock);
    /* A run in progress finishes first (bounded by the store's own timeouts). */
    pthread_join(m->_thread, NULL);
    pthread_mutex_lock(&m->_lock);
    m->_running = false;
    pthread_mutex_unlock(&m->_lock);
    log_info("[CLEANUP] maintenance stopped");
}

void maint_free(struct maint *m)
{
    if (m == NULL)
        return;
    maint_stop(m);
    pthread_mutex_destroy(&m->_stats_lock);
    pthread_mutex_destroy(&m->_run_lock);
    pthread_cond_destroy(&m->_cond);
    pthread_mutex_destroy(&m->_lock);
    free(m);
}
