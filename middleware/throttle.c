/*
 * throttle.c - the activity throttle: person id → time of the last lastActiveAt write, so a
 * person costs the store at most one activity write per window (SPEC §2.3, §5).
 *
 * DESIGN
 * The map is split into shards chosen by a hash of the id; each shard has its own mutex, a
 * uthash table and a list of its entries ordered by the time of their last write (a write
 * moves the entry to the tail). MHD threads and loop threads call in concurrently, and with
 * 64 shards two callers rarely wait for the same lock; the critical section is a lookup and
 * a few pointer moves.
 *
 * Memory is bounded by max_entries, split evenly between shards. Entries whose window is
 * over carry no information (the next activity writes anyway), so each call first drops the
 * expired entries at the head of its shard's list: lazy eviction, no sweeper thread. When a
 * shard is still full, its oldest entry goes; that person at worst gets one extra write.
 * Callers on different threads may pass slightly out-of-order times, so the list is ordered
 * by write order, which is the time order up to that jitter: good enough for eviction.
 *
 * The decision counters are atomics read by /metrics without taking any lock.
 */
#include "middleware/throttle.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

#include "common/log.h"
#include "common/xmalloc.h"

#define THROTTLE_SHARDS 64

/* Person ids are 24 hex characters; anything much longer is refused, not remembered. */
#define THROTTLE_MAX_ID_LEN 128

struct throttle_entry {
    UT_hash_handle hh;
    struct throttle_entry *prev, *next; /* shard list, oldest write first */
    int64_t last_write_ms;
    char id[]; /* NUL-terminated key */
};

struct throttle_shard {
    pthread_mutex_t lock;
    struct throttle_entry *map;  /* uthash head */
    struct throttle_entry *list; /* utlist head (oldest) */
    size_t count;
} __attribute__((aligned(64))); /* one cache line per lock: no false sharing */

struct throttle {
    int64_t _window_ms;
    size_t _shard_cap;
    unsigned _nshards; /* a power of two */
    struct throttle_shard *_shards;
    atomic_uint_fast64_t _written;
    atomic_uint_fast64_t _throttled;
    atomic_uint_fast64_t _entries;
};

struct throttle *throttle_new(int64_t window_ms, size_t max_entries)
{
    if (window_ms < 0 || max_entries == 0)
        return NULL;
    struct throttle *t = xcalloc(1, sizeof(*t));
    t->_window_ms = window_ms;
    /* With fewer entries than shards, one shard keeps the bound exact. */
    t->_nshards = max_entries >= THROTTLE_SHARDS ? THROTTLE_SHARDS : 1;
    t->_shard_cap = max_entries / t->_nshards;
    t->_shards = aligned_alloc(64, sizeof(struct throttle_shard) * t->_nshards);
    if (t->_shards == NULL)
        fatal("%s: out of memory", __func__);
    for (unsigned i = 0; i < t->_nshards; i++) {
        memset(&t->_shards[i], 0, sizeof(t->_shards[i]));
        pthread_mutex_init(&t->_shards[i].lock, NULL);
    }
    atomic_init(&t->_written, 0);
    atomic_init(&t->_throttled, 0);
    atomic_init(&t->_entries, 0);
    return t;
}

void throttle_free(struct throttle *t)
{
    if (t == NULL)
        return;
    for (unsigned i = 0; i < t->_nshards; i++) {
        struct throttle_shard *sh = &t->_shards[i];
        struct throttle_entry *e, *tmp;
        HASH_ITER(hh, sh->map, e, tmp)
        {
            HASH_DELETE(hh, sh->map, e);
            free(e);
        }
        pthread_mutex_destroy(&sh->lock);
    }
    free(t->_shards);
    free(t);
}

/* FNV-1a: cheap, and independent of the hash uthash uses inside the shard. */
static uint32_t shard_hash(const char *id, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)id[i];
        h *= 16777619u;
    }
    return h;
}

static void entry_drop(struct throttle *t, struct throttle_shard *sh, struct throttle_entry *e)
{
    HASH_DELETE(hh, sh->map, e);
    DL_DELETE(sh->list, e);
    sh->count--;
    atomic_fetch_sub_explicit(&t->_entries, 1, memory_order_relaxed);
    free(e);
}

/* Drops the entries whose window is over, oldest first. Called with the shard locked. */
static void shard_expire(struct throttle *t, struct throttle_shard *sh, int64_t now_ms)
{
    while (sh->list != NULL && now_ms - sh->list->last_write_ms >= t->_window_ms)
        entry_drop(t, sh, sh->list);
}

/* Records a write of id at now_ms: updates or inserts its entry and moves it to the tail.
 * Called with the shard locked. */
static void shard_touch(struct throttle *t, struct throttle_shard *sh, struct throttle_entry *e,
                        const char *id, size_t len, int64_t now_ms)
{
    if (e != NULL) {
        /* Keep the latest time when two threads race with slightly different clocks, unless
         * the clock stepped back by a window or more (see throttle_should_write). */
        if (now_ms > e->last_write_ms || e->last_write_ms - now_ms >= t->_window_ms)
            e->last_write_ms = now_ms;
        DL_DELETE(sh->list, e);
        DL_APPEND(sh->list, e);
        return;
    }
    if (sh->count >= t->_shard_cap)
        entry_drop(t, sh, sh->list);
    e = xmalloc(sizeof(*e) + len + 1);
    memset(e, 0, sizeof(*e));
    memcpy(e->id, id, len + 1);
    e->last_write_ms = now_ms;
    HASH_ADD_KEYPTR(hh, sh->map, e->id, len, e);
    DL_APPEND(sh->list, e);
    sh->count++;
    atomic_fetch_add_explicit(&t->_entries, 1, memory_order_relaxed);
}

/* Locks and returns the shard of id, after dropping its expired entries; *e receives the
 * entry of id or NULL. Returns NULL (nothing locked) for an id we refuse to remember. */
static struct throttle_shard *shard_enter(struct throttle *t, const char *id, size_t *len,
                                          int64_t now_ms, struct throttle_entry **e)
{
    *len = strnlen(id, THROTTLE_MAX_ID_LEN + 1);
    if (*len == 0 || *len > THROTTLE_MAX_ID_LEN)
        return NULL;
    struct throttle_shard *sh = &t->_shards[shard_hash(id, *len) & (t->_nshards - 1)];
    pthread_mutex_lock(&sh->lock);
    shard_expire(t, sh, now_ms);
    HASH_FIND(hh, sh->map, id, *len, *e);
    return sh;
}

bool throttle_should_write(struct throttle *t, const char *id, int64_t now_ms)
{
    size_t len;
    struct throttle_entry *e = NULL;
    struct throttle_shard *sh = shard_enter(t, id, &len, now_ms, &e);
    if (sh == NULL) {
        /* An id we cannot remember is never throttled: correctness over savings. */
        atomic_fetch_add_explicit(&t->_written, 1, memory_order_relaxed);
        return true;
    }
    /* A time slightly before the last write (jitter between threads) counts as inside the
     * window; one a whole window before it means the clock stepped back (a wall clock set
     * back, or callers mixing clocks): write and restart the window from now_ms rather than
     * stay throttled until the clock catches up. */
    int64_t since = e != NULL ? now_ms - e->last_write_ms : 0;
    bool due = e == NULL || since >= t->_window_ms || since <= -t->_window_ms;
    if (due)
        shard_touch(t, sh, e, id, len, now_ms);
    pthread_mutex_unlock(&sh->lock);
    atomic_fetch_add_explicit(due ? &t->_written : &t->_throttled, 1, memory_order_relaxed);
    return due;
}

void throttle_record(struct throttle *t, const char *id, int64_t now_ms)
{
    size_t len;
    struct throttle_entry *e = NULL;
    struct throttle_shard *sh = shard_enter(t, id, &len, now_ms, &e);
    if (sh != NULL) {
        shard_touch(t, sh, e, id, len, now_ms);
        pthread_mutex_unlock(&sh->lock);
    }
    atomic_fetch_add_explicit(&t->_written, 1, memory_order_relaxed);
}

void throttle_get_stats(struct throttle *t, struct throttle_stats *out)
{
    out->written = atomic_load_explicit(&t->_written, memory_order_relaxed);
    out->throttled = atomic_load_explicit(&t->_throttled, memory_order_relaxed);
    out->entries = atomic_load_explicit(&t->_entries, memory_order_relaxed);
}
