/*
 * store.c - the store front end: backend selection, the batching presence writer and the
 * pending overlay (SPEC §3 "Storage", store.h).
 *
 * The hot paths (MHD threads, Socket.IO loop threads) report presence changes through
 * store_presence_online/offline/activity. Those calls append to an in-memory FIFO and return:
 * they never touch the database. One writer thread drains the FIFO, merges the writes of each
 * person and applies them in one backend transaction / bulk write, so a burst of 10,000
 * connects costs a handful of transactions instead of 10,000 fsyncs (STACK-NOTES §5: batching
 * matters far more than the synchronous setting).
 *
 * Reads of one person (store_person_get, store_person_by_session_token: every authenticated
 * REST request and handshake) are served from a bounded cache of the rows last read from the
 * backend, so that a known person costs a hash look-up instead of a database query (≈ 5.5 us
 * in SQLite, a round trip in MongoDB; SPEC §5 "REST" and §3 "reads ... are cached where
 * safe"). Everything else (list reads, provisioning, maintenance) goes straight to the
 * backend, with ids checked and lowercased here so that both backends see the same input.
 *
 * DESIGN
 *
 * - Queue: a growable ring buffer of raw writes under _mu, bounded by STORE_QUEUE_MAX entries.
 *   Enqueue never blocks; past the bound a write is refused, counted in queue_dropped and
 *   logged once per burst. Entry i of the ring (from the head) has the sequence number
 *   _applied_seq + 1 + i; _enqueued_seq is the sequence of the newest entry.
 * - Writer: waits for work, then up to STORE_GATHER_MS (250 ms) for more (unless the ring
 *   already holds a full batch, a flush waits or the store closes), copies up to
 *   STORE_BATCH_MAX raw writes from the head, merges them per person (later fields win; an
 *   online then an offline gives isOnline=false with both times) and calls apply_batch with
 *   the lock released. Only on success are the entries popped; on failure they stay at the
 *   head, write_failures is counted and the same writes are retried in order after a backoff
 *   of 100 ms doubling to 2 s. Nothing is ever dropped by the writer.
 * - Flush: store_flush waits on _done_cv until _applied_seq reaches the _enqueued_seq it saw
 *   on entry; while a flush waits the writer does not linger to gather.
 * - Overlay: a uthash map id -> merged pending update of every queued or in-flight write of
 *   that person, with the sequence number of its newest write. After a batch is applied,
 *   entries whose newest write is applied are removed. A read applies the entry over what the
 *   backend returned: the merged update is the net effect of a suffix of the person's writes,
 *   so it is right over any backend state that already holds a prefix of them. A read that
 *   finds no entry but saw a batch land while it read the backend (the entry may have been
 *   removed between its backend read and its overlay look-up) reads again.
 * - Close: sets _stopping, lets the writer drain (retrying failures) until the deadline, then
 *   joins it. Writes left over are logged and reported as STORE_ERR_UNAVAILABLE.
 * - Person cache: STORE_CACHE_SHARDS shards, one mutex each, of at most
 *   STORE_CACHE_PER_SHARD rows (id -> the row as the backend holds it, overlay NOT applied,
 *   strings packed in the entry's one allocation) plus as many session tokens (token -> id).
 *   A full shard evicts its oldest fill; a row is trusted _cache_ttl_ms after its fill
 *   (2 s: the bound on how long a change by another writer of a shared MongoDB, such as role
 *   or isActive, goes unseen). The writer sweeps expired entries about once a second, so an
 *   idle gateway does not keep a burst of handshakes' rows, and returns the memory of a big
 *   sweep to the system. Only the writer changes presence in the backend, so only it must
 *   keep cached presence right: after a batch lands and before its overlay entries go, it
 *   bumps _cache_gen and applies each merged update to the cached row under the shard lock.
 *   Lock order: shard lock, then _mu; the writer never holds both.
 *   * A hit copies the row and applies the overlay while it holds the shard lock. Any batch
 *     whose overlay entries are gone by then updated the row before (the writer updates rows,
 *     then removes entries), and the row cannot change under the lock: row + overlay is exact.
 *   * A miss reads the backend, then fills the row under the shard lock only when _cache_gen
 *     is what it was before the backend read. A batch that lands during the read either
 *     bumped the generation before the check (no fill: the row may predate it; the read is
 *     retried, as the read of an uncached row always was) or will find the filled row and
 *     update it. Provisioning bumps the generation and drops the person's row after its write.
 * - Conversations cache: in the same shards, person id -> the ids of its conversations, filled
 *   by store_person_conversations for persons whose cached row was read again (a reconnect),
 *   and trusted as long as a row. Presence batches do not touch
 *   memberships, so it has its own generation, _conv_gen, bumped (and the person's entry
 *   dropped) after a membership write through this store: a fill whose backend read started
 *   before that write does not land. A membership added by another writer of a shared
 *   database is seen within the TTL, as a changed row is.
 * - Reconnect tickets: in the same shards, person id -> what the registry knew of a user when
 *   its last connection closed (username, lastSeen, conversations), for a reconnect within
 *   STORE_TICKET_TTL_MS, whose row has long left the cache. The data may be hours old, so the
 *   TTL cannot vouch for it: a ticket is only built on a backend that reports changes
 *   (changes_version). It carries the stamp _ticket_gen had before the reads it comes from
 *   (from the backend or from the cache); _ticket_gen is bumped by everything that could
 *   make them wrong: the writer seeing changes_version move (it polls every STORE_WATCH_MS
 *   while tickets exist, with _mu released, and then empties the cache), a membership or
 *   person write through this store, a cache clear; always after the cached rows and lists
 *   that changed are gone, so that a stamp taken after a bump comes with newer reads. A take
 *   succeeds only while the stamp is current and the last poll started at most
 *   STORE_TICKET_FRESH_MS ago, so a change by anyone is honoured by reconnects that start
 *   that long after it (the cached rows' bound is their TTL). The poll bumps the generation
 *   before it publishes its start time (_watched_ms): a take that sees the new time sees the
 *   new generation.
 */
#include "store/store.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <uthash.h>
#include <utlist.h>

#include "common/log.h"
#include "common/xmalloc.h"
#include "store/store_backend.h"

#ifndef STORE_QUEUE_MAX
#define STORE_QUEUE_MAX 1000000 /* raw writes held at most (about 40 MB) */
#endif
#ifndef STORE_BATCH_MAX
#define STORE_BATCH_MAX 4096 /* raw writes per batch */
#endif
#ifndef STORE_GATHER_MS
/* How long the writer lingers for more writes. A batch's fixed cost (the transaction, its WAL
 * header and locks, the index pages near the recent lastActiveAt) is shared by more rows: at
 * 500 changes/s, 250 ms takes a third off the writer's CPU against 50 ms (500 ms only a little
 * more), and writes still reach the store well within SPEC §3's second. */
#define STORE_GATHER_MS 250
#endif
#define STORE_BACKOFF_MIN_MS 100
#define STORE_BACKOFF_MAX_MS 2000
#define STORE_READ_RETRIES 4
#define STORE_TOKEN_MAX 256
#ifndef STORE_CACHE_SHARDS
#define STORE_CACHE_SHARDS 64
#endif
#ifndef STORE_CACHE_PER_SHARD
#define STORE_CACHE_PER_SHARD (STORE_CACHE_MAX_ENTRIES / STORE_CACHE_SHARDS)
#endif
#define STORE_CACHE_SWEEP_MS 1000
#define STORE_CACHE_TRIM_MIN 4096 /* entries freed by one sweep before malloc_trim */

enum qkind { Q_ONLINE = 1, Q_OFFLINE, Q_ACTIVITY };

struct qentry {
    char id[OID_HEX_LEN + 1];
    uint8_t kind;
    bool is_anonymous;
    int64_t at_ms;
};

struct overlay_entry {
    char id[OID_HEX_LEN + 1];
    struct store_write w;
    uint64_t last_seq; /* sequence of the newest write merged in */
    UT_hash_handle hh;
};

struct batch_item {
    struct store_write w;
    UT_hash_handle hh;
};

/* A cached person row; its strings point into strings[]. */
struct pcache_entry {
    UT_hash_handle hh;                /* key: p.id */
    struct pcache_entry *prev, *next; /* fill order, oldest first */
    int64_t filled_ms;                /* monotonic */
    uint32_t hits;                    /* reads answered by this fill */
    struct store_person p;
    char strings[];
};

/* A cached session token -> person id. */
struct tcache_entry {
    UT_hash_handle hh; /* key: token */
    struct tcache_entry *prev, *next;
    int64_t filled_ms;
    char id[OID_HEX_LEN + 1];
    char token[];
};

/* A cached list of a person's conversation ids. */
struct ccache_entry {
    UT_hash_handle hh; /* key: id */
    struct ccache_entry *prev, *next;
    int64_t filled_ms;
    char id[OID_HEX_LEN + 1];
    bool is_anonymous;
    size_t count;
    char ids[][OID_HEX_LEN + 1];
};

/* A reconnect ticket (see DESIGN); username points after ids[]. */
struct kcache_entry {
    UT_hash_handle hh; /* key: id */
    struct kcache_entry *prev, *next;
    int64_t filled_ms;
    uint64_t stamp;
    int64_t last_seen_ms;
    char id[OID_HEX_LEN + 1];
    char *username;
    size_t count;
    char ids[][OID_HEX_LEN + 1];
};

struct cache_shard {
    pthread_mutex_t lock;
    struct pcache_entry *persons, *persons_fifo;
    struct tcache_entry *tokens, *tokens_fifo;
    struct ccache_entry *convs, *convs_fifo;
    struct kcache_entry *tickets, *tickets_fifo;
    size_t npersons, ntokens, nconvs, ntickets;
    uint64_t hits, misses, evictions, ticket_hits;
};

struct store {
    const struct store_backend_ops *_ops;
    struct store_backend *_b;

    pthread_t _writer;
    bool _writer_started;
    pthread_mutex_t _mu;
    pthread_cond_t _work_cv; /* writer: work, flush or stop */
    pthread_cond_t _done_cv; /* flushers: a batch landed */

    struct qentry *_ring;
    size_t _ring_cap, _ring_head, _ring_count;
    uint64_t _enqueued_seq, _applied_seq;
    struct overlay_entry *_overlay;
    int _flush_waiters;
    bool _dropping;
    bool _stopping;
    int64_t _close_deadline_ms; /* monotonic; valid when _stopping */

    /* stats, under _mu */
    uint64_t _rows_written, _batches_written, _write_failures, _queue_dropped;

    /* the person cache (see DESIGN) */
    struct cache_shard *_cache;
    _Atomic int64_t _cache_ttl_ms;
    _Atomic uint64_t _cache_gen;  /* bumped before cached rows change under a reader */
    _Atomic uint64_t _cache_size; /* rows + tokens + conversation lists cached */
    _Atomic uint64_t _conv_gen;   /* bumped after a membership write (conversations cache) */
    int64_t _swept_ms;            /* writer only */
    /* reconnect tickets (see DESIGN) */
    _Atomic uint64_t _ticket_gen;
    _Atomic uint64_t _tickets;   /* held now, all shards */
    _Atomic int64_t _watched_ms; /* monotonic start of the last good poll; 0: none */
    _Atomic uint64_t _polls;     /* good polls */
    int64_t _polled_ms;          /* writer only: when the last poll started */
    _Atomic uint64_t _changes_v; /* changes_version at the last good poll, or moved past this
                                    store's own membership writes (store_member_add) */
    bool _changes_known;         /* writer only: _changes_v was read */
};

/* --- small helpers ------------------------------------------------------------------------ */

void store_person_clear(struct store_person *p)
{
    if (p == NULL)
        return;
    free(p->username);
    free(p->display_name);
    free(p->first_name);
    free(p->last_name);
    free(p->email);
    free(p->avatar);
    memset(p, 0, sizeof(*p));
}

void store_person_copy(struct store_person *dst, const struct store_person *src)
{
    *dst = *src;
    dst->username = xstrdup(src->username);
    dst->display_name = xstrdup(src->display_name);
    dst->first_name = xstrdup(src->first_name);
    dst->last_name = xstrdup(src->last_name);
    dst->email = xstrdup(src->email);
    dst->avatar = xstrdup(src->avatar);
}

void store_conversation_clear(struct store_conversation *c)
{
    if (c == NULL)
        return;
    free(c->title);
    free(c->type);
    memset(c, 0, sizeof(*c));
}

void store_person_list_free(struct store_person_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->count; i++)
        store_person_clear(&l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

void store_id_list_free(struct store_id_list *l)
{
    if (l == NULL)
        return;
    free(l->ids);
    l->ids = NULL;
    l->count = 0;
}

/* Copies a valid ObjectId lowercased into out; false when id is not 24 hex characters. */
static bool norm_id(const char *id, char out[OID_HEX_LEN + 1])
{
    if (id == NULL || strlen(id) != OID_HEX_LEN || !util_oid_valid(id))
        return false;
    for (int i = 0; i < OID_HEX_LEN; i++) {
        char c = id[i];
        out[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    out[OID_HEX_LEN] = '\0';
    return true;
}

static void deadline_ts(int64_t mono_ms, struct timespec *ts)
{
    ts->tv_sec = mono_ms / 1000;
    ts->tv_nsec = (mono_ms % 1000) * 1000000L;
}

/* Merges one raw write into a pending update. Later fields win; an offline after an online
 * keeps the online's lastActiveAt and adds lastSeen. */
static void merge_write(struct store_write *w, enum qkind kind, int64_t at_ms)
{
    switch (kind) {
    case Q_ONLINE:
        w->set_online = true;
        w->is_online = true;
        w->last_active_at_ms = at_ms;
        break;
    case Q_OFFLINE:
        w->set_online = true;
        w->is_online = false;
        w->last_seen_ms = at_ms;
        break;
    case Q_ACTIVITY:
        w->last_active_at_ms = at_ms;
        break;
    }
}

static void overlay_apply_locked(struct store *s, struct store_person *p)
{
    struct overlay_entry *e;
    HASH_FIND_STR(s->_overlay, p->id, e);
    if (e == NULL)
        return;
    if (e->w.set_online)
        p->is_online = e->w.is_online;
    if (e->w.last_active_at_ms != 0)
        p->last_active_at_ms = e->w.last_active_at_ms;
    if (e->w.last_seen_ms != 0)
        p->last_seen_ms = e->w.last_seen_ms;
}

static uint64_t applied_seq(struct store *s)
{
    pthread_mutex_lock(&s->_mu);
    uint64_t v = s->_applied_seq;
    pthread_mutex_unlock(&s->_mu);
    return v;
}

/* --- the person cache ---------------------------------------------------------------------- */

static struct cache_shard *cache_shard_of(struct store *s, const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)key; *c != '\0'; c++) {
        h ^= *c;
        h *= 16777619u;
    }
    return &s->_cache[h % STORE_CACHE_SHARDS];
}

static int64_t cache_ttl(struct store *s)
{
    return atomic_load_explicit(&s->_cache_ttl_ms, memory_order_relaxed);
}

/* A cache entry holding a copy of p, strings packed after the struct. */
static struct pcache_entry *pentry_new(const struct store_person *p, int64_t now_ms)
{
    const char *src[6] = {p->username,  p->display_name, p->first_name,
                          p->last_name, p->email,        p->avatar};
    size_t len[6], total = 0;
    for (int i = 0; i < 6; i++) {
        len[i] = src[i] != NULL ? strlen(src[i]) + 1 : 0;
        total += len[i];
    }
    struct pcache_entry *e = xmalloc(sizeof(*e) + total);
    memset(e, 0, sizeof(*e));
    e->filled_ms = now_ms;
    e->p = *p;
    char **dst[6] = {&e->p.username,  &e->p.display_name, &e->p.first_name,
                     &e->p.last_name, &e->p.email,        &e->p.avatar};
    char *w = e->strings;
    for (int i = 0; i < 6; i++) {
        if (src[i] == NULL) {
            *dst[i] = NULL;
            continue;
        }
        memcpy(w, src[i], len[i]);
        *dst[i] = w;
        w += len[i];
    }
    return e;
}

/* The writer sleeps without a timeout while the cache is empty: wake it for the sweeps when
 * the first entry appears. Called with no lock held. */
static void cache_wake_sweeper(struct store *s)
{
    pthread_mutex_lock(&s->_mu);
    pthread_cond_signal(&s->_work_cv);
    pthread_mutex_unlock(&s->_mu);
}

/* What a refill keeps of the entry it replaces: a person row in use stays "read again" (the
 * conversations cache admits only those); tokens and lists keep nothing. */
static void pentry_carry(struct pcache_entry *e, const struct pcache_entry *old)
{
    e->hits = old->hits > 0 ? 1 : 0;
}
static void tentry_carry(struct tcache_entry *e, const struct tcache_entry *old)
{
    (void)e;
    (void)old;
}
static void centry_carry(struct ccache_entry *e, const struct ccache_entry *old)
{
    (void)e;
    (void)old;
}
static void kentry_carry(struct kcache_entry *e, const struct kcache_entry *old)
{
    (void)e;
    (void)old;
}

/* A table's entries came (delta 1) or went (-1): tickets keep a count over all shards (the
 * writer polls while there are any; true when the first appears, to wake it); the other
 * tables keep none. */
static bool count_none(struct store *s, int delta)
{
    (void)s, (void)delta;
    return false;
}
static bool count_tickets(struct store *s, int delta)
{
    if (delta < 0) {
        atomic_fetch_sub_explicit(&s->_tickets, 1, memory_order_relaxed);
        return false;
    }
    return atomic_fetch_add_explicit(&s->_tickets, 1, memory_order_relaxed) == 0;
}

/* The four tables of a shard are kept alike (a uthash table TBL keyed by KEY, its fill-order
 * list TBL_fifo and its count nTBL; COUNTED is the table's count hook above), so the same
 * functions are written for each:
 *   P_del_locked(s, sh, e): takes e out and frees it;
 *   P_put_locked(s, sh, e): inserts e, replacing the entry of the same key or evicting the
 *   oldest fill of a full table; true when the writer must be woken (the cache, or the
 *   table's count, went from empty to non-empty). Shard lock held;
 *   P_drop(s, key): takes the entry of key out, if any. No lock held. */
#define CACHE_TABLE_FNS(P, TYPE, TBL, KEY, COUNTED)                                                \
    static void P##_del_locked(struct store *s, struct cache_shard *sh, TYPE *e)                   \
    {                                                                                              \
        HASH_DEL(sh->TBL, e);                                                                      \
        DL_DELETE(sh->TBL##_fifo, e);                                                              \
        sh->n##TBL--;                                                                              \
        atomic_fetch_sub_explicit(&s->_cache_size, 1, memory_order_relaxed);                       \
        COUNTED(s, -1);                                                                            \
        free(e);                                                                                   \
    }                                                                                              \
    static bool P##_put_locked(struct store *s, struct cache_shard *sh, TYPE *e)                   \
    {                                                                                              \
        TYPE *old;                                                                                 \
        HASH_FIND_STR(sh->TBL, e->KEY, old);                                                       \
        if (old != NULL) {                                                                         \
            P##_carry(e, old);                                                                     \
            P##_del_locked(s, sh, old);                                                            \
        } else if (sh->n##TBL >= STORE_CACHE_PER_SHARD) {                                          \
            P##_del_locked(s, sh, sh->TBL##_fifo);                                                 \
            sh->evictions++;                                                                       \
        }                                                                                          \
        HASH_ADD_STR(sh->TBL, KEY, e);                                                             \
        DL_APPEND(sh->TBL##_fifo, e);                                                              \
        sh->n##TBL++;                                                                              \
        bool first = COUNTED(s, 1);                                                                \
        return atomic_fetch_add_explicit(&s->_cache_size, 1, memory_order_relaxed) == 0 || first;  \
    }                                                                                              \
    static void P##_drop(struct store *s, const char *key)                                         \
    {                                                                                              \
        struct cache_shard *sh = cache_shard_of(s, key);                                           \
        TYPE *e;                                                                                   \
        pthread_mutex_lock(&sh->lock);                                                             \
        HASH_FIND_STR(sh->TBL, key, e);                                                            \
        if (e != NULL)                                                                             \
            P##_del_locked(s, sh, e);                                                              \
        pthread_mutex_unlock(&sh->lock);                                                           \
    }
CACHE_TABLE_FNS(pentry, struct pcache_entry, persons, p.id, count_none)
CACHE_TABLE_FNS(tentry, struct tcache_entry, tokens, token, count_none)
CACHE_TABLE_FNS(centry, struct ccache_entry, convs, id, count_none)
CACHE_TABLE_FNS(kentry, struct kcache_entry, tickets, id, count_tickets)
#undef CACHE_TABLE_FNS

/* A fresh cached row of nid, overlay applied, into *out: true on a hit. */
static bool pcache_get(struct store *s, const char *nid, struct store_person *out)
{
    int64_t ttl = cache_ttl(s);
    if (ttl <= 0)
        return false;
    struct cache_shard *sh = cache_shard_of(s, nid);
    int64_t now = util_mono_ms();
    struct pcache_entry *e;
    pthread_mutex_lock(&sh->lock);
    HASH_FIND_STR(sh->persons, nid, e);
    if (e == NULL || now - e->filled_ms >= ttl) {
        pthread_mutex_unlock(&sh->lock);
        return false;
    }
    sh->hits++;
    e->hits++;
    store_person_copy(out, &e->p);
    /* Under the shard lock: the writer cannot update this row between the copy and the
     * overlay look-up (see DESIGN). */
    pthread_mutex_lock(&s->_mu);
    overlay_apply_locked(s, out);
    pthread_mutex_unlock(&s->_mu);
    pthread_mutex_unlock(&sh->lock);
    return true;
}

/* A row p just read from the backend, with gen0 the generation seen before the read: caches
 * it and applies the overlay when no batch landed meanwhile, and returns true. Otherwise
 * returns false (the caller reads again), unless last: then the overlay is applied to the
 * uncached row as the best answer left. */
static bool pcache_publish(struct store *s, struct store_person *p, uint64_t gen0, bool last)
{
    int64_t ttl = cache_ttl(s);
    struct pcache_entry *e = ttl > 0 ? pentry_new(p, util_mono_ms()) : NULL;
    struct cache_shard *sh = cache_shard_of(s, p->id);
    bool woke = false;
    pthread_mutex_lock(&sh->lock);
    bool fresh = atomic_load(&s->_cache_gen) == gen0;
    if (!fresh && !last) {
        pthread_mutex_unlock(&sh->lock);
        free(e);
        return false;
    }
    sh->misses++;
    if (fresh && e != NULL) {
        woke = pentry_put_locked(s, sh, e);
        e = NULL;
    }
    pthread_mutex_lock(&s->_mu);
    overlay_apply_locked(s, p);
    pthread_mutex_unlock(&s->_mu);
    pthread_mutex_unlock(&sh->lock);
    free(e);
    if (woke)
        cache_wake_sweeper(s);
    return true;
}

/* Voids the tickets stamped so far (and drops nid's, when given). Called after the cached
 * data that changed is gone: a stamp taken after this bump comes with reads of the new data. */
static void tickets_void(struct store *s, const char *nid)
{
    if (nid != NULL)
        kentry_drop(s, nid);
    atomic_fetch_add(&s->_ticket_gen, 1);
}

/* Drops the cached row and the ticket of nid after a write to it that did not go through the
 * writer. */
static void pcache_forget(struct store *s, const char *nid)
{
    atomic_fetch_add(&s->_cache_gen, 1); /* fills that read before the write do not land */
    pentry_drop(s, nid);
    tickets_void(s, nid);
}

/* Drops every cached row, list and ticket (and the tokens too when tokens). */
static void cache_clear(struct store *s, bool tokens)
{
    atomic_fetch_add(&s->_cache_gen, 1);
    atomic_fetch_add(&s->_conv_gen, 1);
    for (int i = 0; i < STORE_CACHE_SHARDS; i++) {
        struct cache_shard *sh = &s->_cache[i];
        pthread_mutex_lock(&sh->lock);
        while (sh->persons_fifo != NULL)
            pentry_del_locked(s, sh, sh->persons_fifo);
        while (sh->convs_fifo != NULL)
            centry_del_locked(s, sh, sh->convs_fifo);
        while (sh->tickets_fifo != NULL)
            kentry_del_locked(s, sh, sh->tickets_fifo);
        while (tokens && sh->tokens_fifo != NULL)
            tentry_del_locked(s, sh, sh->tokens_fifo);
        pthread_mutex_unlock(&sh->lock);
    }
    tickets_void(s, NULL);
}

/* The person id of a fresh cached session token into id: true on a hit. */
static bool tcache_get(struct store *s, const char *token, char id[OID_HEX_LEN + 1])
{
    int64_t ttl = cache_ttl(s);
    if (ttl <= 0)
        return false;
    struct cache_shard *sh = cache_shard_of(s, token);
    int64_t now = util_mono_ms();
    struct tcache_entry *e;
    bool hit = false;
    pthread_mutex_lock(&sh->lock);
    HASH_FIND_STR(sh->tokens, token, e);
    if (e != NULL && now - e->filled_ms < ttl) {
        memcpy(id, e->id, OID_HEX_LEN + 1);
        hit = true;
    }
    pthread_mutex_unlock(&sh->lock);
    return hit;
}

/* Remembers token -> id (an anonymous participant's token never changes). */
static void tcache_put(struct store *s, const char *token, const char *id)
{
    if (cache_ttl(s) <= 0)
        return;
    size_t len = strlen(token);
    struct tcache_entry *e = xmalloc(sizeof(*e) + len + 1);
    memset(e, 0, sizeof(*e));
    e->filled_ms = util_mono_ms();
    memcpy(e->id, id, sizeof(e->id));
    memcpy(e->token, token, len + 1);
    struct cache_shard *sh = cache_shard_of(s, token);
    pthread_mutex_lock(&sh->lock);
    bool woke = tentry_put_locked(s, sh, e);
    pthread_mutex_unlock(&sh->lock);
    if (woke)
        cache_wake_sweeper(s);
}

/* The fresh cached conversations of person nid into *out: true on a hit. */
static bool ccache_get(struct store *s, const char *nid, bool is_anonymous,
                       struct store_id_list *out)
{
    int64_t ttl = cache_ttl(s);
    if (ttl <= 0)
        return false;
    struct cache_shard *sh = cache_shard_of(s, nid);
    int64_t now = util_mono_ms();
    struct ccache_entry *e;
    bool hit = false;
    pthread_mutex_lock(&sh->lock);
    HASH_FIND_STR(sh->convs, nid, e);
    if (e != NULL && e->is_anonymous == is_anonymous && now - e->filled_ms < ttl) {
        out->count = e->count;
        out->ids = e->count > 0 ? xmalloc(e->count * sizeof(*out->ids)) : NULL;
        if (e->count > 0)
            memcpy(out->ids, e->ids, e->count * sizeof(*out->ids));
        hit = true;
    }
    pthread_mutex_unlock(&sh->lock);
    return hit;
}

/* Caches l as the conversations of nid when no membership write happened since gen0 (read
 * before the backend read). */
static void ccache_publish(struct store *s, const char *nid, bool is_anonymous,
                           const struct store_id_list *l, uint64_t gen0)
{
    if (cache_ttl(s) <= 0)
        return;
    struct ccache_entry *e = xmalloc(sizeof(*e) + l->count * sizeof(e->ids[0]));
    memset(e, 0, sizeof(*e));
    e->filled_ms = util_mono_ms();
    memcpy(e->id, nid, sizeof(e->id));
    e->is_anonymous = is_anonymous;
    e->count = l->count;
    if (l->count > 0)
        memcpy(e->ids, l->ids, l->count * sizeof(e->ids[0]));
    struct cache_shard *sh = cache_shard_of(s, nid);
    bool woke = false;
    pthread_mutex_lock(&sh->lock);
    /* Admission: only the lists of persons read again within the TTL (a reconnect, a second
     * tab). A burst of first connects would otherwise leave thousands of short-lived blocks
     * between long-lived ones, memory that idle connections keep paying for. */
    struct pcache_entry *pe;
    HASH_FIND_STR(sh->persons, nid, pe);
    if (pe != NULL && pe->hits > 0 && atomic_load(&s->_conv_gen) == gen0) {
        woke = centry_put_locked(s, sh, e);
        e = NULL;
    }
    pthread_mutex_unlock(&sh->lock);
    free(e);
    if (woke)
        cache_wake_sweeper(s);
}

/* Drops the cached conversations of nid after a membership write to it. */
static void ccache_forget(struct store *s, const char *nid)
{
    atomic_fetch_add(&s->_conv_gen, 1);
    centry_drop(s, nid);
    tickets_void(s, NULL);
}

/* --- reconnect tickets (see DESIGN) --------------------------------------------------------- */

uint64_t store_ticket_stamp(struct store *s)
{
    if (s->_ops->changes_version == NULL || cache_ttl(s) <= 0)
        return 0;
    return atomic_load(&s->_ticket_gen);
}

void store_ticket_put(struct store *s, uint64_t stamp, const char *id, const char *username,
                      int64_t last_seen_ms, const struct store_id_list *convs)
{
    char nid[OID_HEX_LEN + 1];
    if (stamp == 0 || !norm_id(id, nid) || cache_ttl(s) <= 0)
        return;
    if (username == NULL)
        username = "";
    size_t ulen = strlen(username) + 1;
    size_t n = convs != NULL ? convs->count : 0;
    struct kcache_entry *e = xmalloc(sizeof(*e) + n * sizeof(e->ids[0]) + ulen);
    memset(e, 0, sizeof(*e));
    e->filled_ms = util_mono_ms();
    e->stamp = stamp;
    e->last_seen_ms = last_seen_ms;
    memcpy(e->id, nid, sizeof(e->id));
    e->count = n;
    if (n > 0)
        memcpy(e->ids, convs->ids, n * sizeof(e->ids[0]));
    e->username = (char *)&e->ids[n];
    memcpy(e->username, username, ulen);
    struct cache_shard *sh = cache_shard_of(s, nid);
    bool wake = false;
    pthread_mutex_lock(&sh->lock);
    /* An early filter: a forget of this person that runs meanwhile either finds this ticket
     * or bumps the generation after it, and a take checks the stamp again. */
    if (atomic_load(&s->_ticket_gen) == stamp) {
        wake = kentry_put_locked(s, sh, e); /* the first ticket starts the writer's polls */
        e = NULL;
    }
    pthread_mutex_unlock(&sh->lock);
    free(e);
    if (wake)
        cache_wake_sweeper(s);
}

int store_ticket_take(struct store *s, const char *id, struct store_person *out,
                      struct store_id_list *convs)
{
    char nid[OID_HEX_LEN + 1];
    if (atomic_load_explicit(&s->_tickets, memory_order_relaxed) == 0 || !norm_id(id, nid))
        return STORE_ERR_NOT_FOUND;
    struct cache_shard *sh = cache_shard_of(s, nid);
    int64_t now = util_mono_ms();
    int rc = STORE_ERR_NOT_FOUND;
    struct kcache_entry *e;
    pthread_mutex_lock(&sh->lock);
    HASH_FIND_STR(sh->tickets, nid, e);
    if (e != NULL) {
        /* The poll's time first: one that is recent enough comes with its generation. */
        int64_t watched = atomic_load(&s->_watched_ms);
        bool stale =
            e->stamp != atomic_load(&s->_ticket_gen) || now - e->filled_ms >= STORE_TICKET_TTL_MS;
        bool checked = watched != 0 && now - watched <= STORE_TICKET_FRESH_MS;
        if (!stale && checked) {
            memset(out, 0, sizeof(*out));
            memcpy(out->id, e->id, sizeof(out->id));
            out->username = xstrdup(e->username);
            out->is_active = true;
            out->last_seen_ms = e->last_seen_ms;
            convs->count = e->count;
            convs->ids = e->count > 0 ? xmalloc(e->count * sizeof(*convs->ids)) : NULL;
            if (e->count > 0)
                memcpy(convs->ids, e->ids, e->count * sizeof(*convs->ids));
            sh->ticket_hits++;
            rc = 0;
        }
        /* Used once; a stale one is no use to anyone. One not checked lately (the writer is
         * late with its poll) may still serve a later reconnect. */
        if (rc == 0 || stale)
            kentry_del_locked(s, sh, e);
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

/* The writer's poll of changes_version, every STORE_WATCH_MS while tickets exist and with the
 * sweeps otherwise (so that a change is seen before the next tickets are stamped): when due,
 * drops _mu, reads, takes _mu again. A version that moved (or the first one read) empties the
 * cache, then voids every ticket: the registry stamps what a handshake read, from the cache
 * too, so a stamp taken after the change is seen must come with rows read after it. */
static void writer_watch_locked(struct store *s)
{
    if (s->_ops->changes_version == NULL)
        return;
    int64_t now = util_mono_ms();
    int64_t every = atomic_load(&s->_tickets) > 0 ? STORE_WATCH_MS : STORE_CACHE_SWEEP_MS;
    if (now - s->_polled_ms < every)
        return;
    s->_polled_ms = now;
    pthread_mutex_unlock(&s->_mu);
    uint64_t v = 0;
    if (s->_ops->changes_version(s->_b, &v) == 0) {
        if (!s->_changes_known || v != atomic_load(&s->_changes_v))
            cache_clear(s, false);
        atomic_store(&s->_changes_v, v);
        s->_changes_known = true;
        atomic_store(&s->_watched_ms, now); /* after the generation (see DESIGN) */
        atomic_fetch_add_explicit(&s->_polls, 1, memory_order_relaxed);
    }
    pthread_mutex_lock(&s->_mu);
}

/* The writer, after a batch landed and before its overlay entries go: cached rows take the
 * presence the backend now holds. No lock held on entry. */
static void cache_apply_batch(struct store *s, const struct store_write *w, size_t n)
{
    atomic_fetch_add(&s->_cache_gen, 1);
    for (size_t i = 0; i < n; i++) {
        struct cache_shard *sh = cache_shard_of(s, w[i].id);
        struct pcache_entry *e;
        pthread_mutex_lock(&sh->lock);
        HASH_FIND_STR(sh->persons, w[i].id, e);
        if (e != NULL) {
            if (w[i].set_online)
                e->p.is_online = w[i].is_online;
            if (w[i].last_active_at_ms != 0)
                e->p.last_active_at_ms = w[i].last_active_at_ms;
            if (w[i].last_seen_ms != 0)
                e->p.last_seen_ms = w[i].last_seen_ms;
        }
        pthread_mutex_unlock(&sh->lock);
    }
}

/* Frees the entries whose TTL has passed (fills are in time order: only heads can be
 * expired). Returns how many were freed. No lock held on entry. */
static size_t cache_sweep(struct store *s, int64_t now_ms)
{
    int64_t ttl = cache_ttl(s);
    size_t freed = 0;
    for (int i = 0; i < STORE_CACHE_SHARDS; i++) {
        struct cache_shard *sh = &s->_cache[i];
        pthread_mutex_lock(&sh->lock);
        while (sh->persons_fifo != NULL && now_ms - sh->persons_fifo->filled_ms >= ttl) {
            pentry_del_locked(s, sh, sh->persons_fifo);
            freed++;
        }
        while (sh->tokens_fifo != NULL && now_ms - sh->tokens_fifo->filled_ms >= ttl) {
            tentry_del_locked(s, sh, sh->tokens_fifo);
            freed++;
        }
        while (sh->convs_fifo != NULL && now_ms - sh->convs_fifo->filled_ms >= ttl) {
            centry_del_locked(s, sh, sh->convs_fifo);
            freed++;
        }
        while (sh->tickets_fifo != NULL &&
               now_ms - sh->tickets_fifo->filled_ms >= STORE_TICKET_TTL_MS) {
            kentry_del_locked(s, sh, sh->tickets_fifo);
            freed++;
        }
        pthread_mutex_unlock(&sh->lock);
    }
#ifdef __GLIBC__
    /* A burst of handshakes leaves thousands of small blocks freed at once: give the pages
     * back, so that idle connections are not charged for rows nobody reads. */
    if (freed >= STORE_CACHE_TRIM_MIN)
        malloc_trim(0);
#endif
    return freed;
}

/* The writer's periodic sweep: when due, drops _mu, sweeps, takes _mu again. */
static void writer_sweep_locked(struct store *s)
{
    int64_t now = util_mono_ms();
    if (now - s->_swept_ms < STORE_CACHE_SWEEP_MS)
        return;
    s->_swept_ms = now;
    pthread_mutex_unlock(&s->_mu);
    cache_sweep(s, now);
    pthread_mutex_lock(&s->_mu);
}

void store_cache_set_ttl(struct store *s, int64_t ttl_ms)
{
    atomic_store(&s->_cache_ttl_ms, ttl_ms > 0 ? ttl_ms : 0);
    if (ttl_ms <= 0)
        cache_clear(s, true);
}

void store_cache_get_stats(struct store *s, struct store_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < STORE_CACHE_SHARDS; i++) {
        struct cache_shard *sh = &s->_cache[i];
        pthread_mutex_lock(&sh->lock);
        out->hits += sh->hits;
        out->misses += sh->misses;
        out->evictions += sh->evictions;
        out->entries += sh->npersons;
        out->tokens += sh->ntokens;
        out->ticket_hits += sh->ticket_hits;
        out->tickets += sh->ntickets;
        pthread_mutex_unlock(&sh->lock);
    }
    out->change_polls = atomic_load_explicit(&s->_polls, memory_order_relaxed);
}

/* --- the writer ----------------------------------------------------------------------------- */

/* Builds the merged batch from the first n raw writes at the head. Called with _mu held;
 * items has room for n. Returns the number of merged updates written to out. */
static size_t batch_build_locked(struct store *s, size_t n, struct batch_item *items,
                                 struct store_write *out)
{
    struct batch_item *map = NULL, *it;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        const struct qentry *q = &s->_ring[(s->_ring_head + i) % s->_ring_cap];
        HASH_FIND_STR(map, q->id, it);
        if (it == NULL) {
            it = &items[used++];
            memset(&it->w, 0, sizeof(it->w));
            memcpy(it->w.id, q->id, sizeof(it->w.id));
            it->w.is_anonymous = q->is_anonymous;
            HASH_ADD_STR(map, w.id, it);
        }
        merge_write(&it->w, (enum qkind)q->kind, q->at_ms);
    }
    HASH_CLEAR(hh, map);
    for (size_t i = 0; i < used; i++)
        out[i] = items[i].w;
    return used;
}

/* Pops n applied raw writes and drops the overlay entries they completed. _mu held. */
static void batch_done_locked(struct store *s, size_t n, const struct store_write *w, size_t nw)
{
    s->_ring_head = (s->_ring_head + n) % s->_ring_cap;
    s->_ring_count -= n;
    s->_applied_seq += n;
    for (size_t i = 0; i < nw; i++) {
        struct overlay_entry *e;
        HASH_FIND_STR(s->_overlay, w[i].id, e);
        if (e != NULL && e->last_seq <= s->_applied_seq) {
            HASH_DEL(s->_overlay, e);
            free(e);
        }
    }
    if (s->_ring_count < STORE_QUEUE_MAX / 2)
        s->_dropping = false;
}

static void *writer_main(void *arg)
{
    struct store *s = arg;
    util_thread_name("writer");
    struct batch_item *items = xcalloc(STORE_BATCH_MAX, sizeof(*items));
    struct store_write *batch = xcalloc(STORE_BATCH_MAX, sizeof(*batch));
    int64_t backoff_ms = STORE_BACKOFF_MIN_MS;

    pthread_mutex_lock(&s->_mu);
    for (;;) {
        while (s->_ring_count == 0 && !s->_stopping) {
            /* Idle: sleep, waking for the cache sweeps while the cache holds anything. */
            if (atomic_load_explicit(&s->_cache_size, memory_order_relaxed) == 0) {
                pthread_cond_wait(&s->_work_cv, &s->_mu);
                continue;
            }
            writer_sweep_locked(s);
            writer_watch_locked(s);
            if (s->_ring_count != 0 || s->_stopping)
                break;
            int64_t wake_ms = s->_swept_ms + STORE_CACHE_SWEEP_MS;
            if (atomic_load(&s->_tickets) > 0 && s->_polled_ms + STORE_WATCH_MS < wake_ms)
                wake_ms = s->_polled_ms + STORE_WATCH_MS;
            struct timespec ts;
            deadline_ts(wake_ms, &ts);
            pthread_cond_timedwait(&s->_work_cv, &s->_mu, &ts);
        }
        if (s->_ring_count == 0)
            break; /* stopping and drained */
        if (s->_stopping && util_mono_ms() >= s->_close_deadline_ms)
            break; /* close gave up: store_close logs what is left */

        /* Gather: linger a little so that a burst becomes one transaction. */
        int64_t until = util_mono_ms() + STORE_GATHER_MS;
        while (s->_ring_count < STORE_BATCH_MAX && s->_flush_waiters == 0 && !s->_stopping) {
            struct timespec ts;
            deadline_ts(until, &ts);
            if (pthread_cond_timedwait(&s->_work_cv, &s->_mu, &ts) == ETIMEDOUT)
                break;
        }

        size_t n = s->_ring_count < STORE_BATCH_MAX ? s->_ring_count : STORE_BATCH_MAX;
        size_t nw = batch_build_locked(s, n, items, batch);
        pthread_mutex_unlock(&s->_mu);

        uint64_t rows = 0;
        int rc = s->_ops->apply_batch(s->_b, batch, nw, &rows);
        /* Cached rows first, overlay entries after (DESIGN: "Person cache"). */
        if (rc == 0)
            cache_apply_batch(s, batch, nw);

        pthread_mutex_lock(&s->_mu);
        if (rc == 0) {
            batch_done_locked(s, n, batch, nw);
            s->_rows_written += rows;
            s->_batches_written++;
            backoff_ms = STORE_BACKOFF_MIN_MS;
            pthread_cond_broadcast(&s->_done_cv);
            writer_sweep_locked(s);
            writer_watch_locked(s);
            continue;
        }
        s->_write_failures++;
        log_warnx("%s: %s batch of %zu writes failed (%d), retrying in %lld ms", __func__,
                  s->_ops->name, n, rc, (long long)backoff_ms);
        /* The batch stays at the head. Wait out the backoff; a close only cuts it short at
         * its deadline. */
        int64_t retry_at = util_mono_ms() + backoff_ms;
        for (;;) {
            int64_t limit = retry_at;
            if (s->_stopping && s->_close_deadline_ms < limit)
                limit = s->_close_deadline_ms;
            if (util_mono_ms() >= limit)
                break;
            struct timespec ts;
            deadline_ts(limit, &ts);
            pthread_cond_timedwait(&s->_work_cv, &s->_mu, &ts);
        }
        backoff_ms = backoff_ms * 2 > STORE_BACKOFF_MAX_MS ? STORE_BACKOFF_MAX_MS : backoff_ms * 2;
    }
    pthread_cond_broadcast(&s->_done_cv);
    pthread_mutex_unlock(&s->_mu);
    free(items);
    free(batch);
    return NULL;
}

static void enqueue(struct store *s, const char *id, bool is_anonymous, enum qkind kind,
                    int64_t at_ms)
{
    char nid[OID_HEX_LEN + 1];
    if (s == NULL || !norm_id(id, nid)) {
        log_warnx("%s: invalid person id refused", __func__);
        return;
    }
    pthread_mutex_lock(&s->_mu);
    if (s->_ring_count >= STORE_QUEUE_MAX) {
        s->_queue_dropped++;
        if (!s->_dropping) {
            s->_dropping = true;
            log_error("%s: presence write queue full (%d writes): dropping writes until the "
                      "store catches up",
                      __func__, STORE_QUEUE_MAX);
        }
        pthread_mutex_unlock(&s->_mu);
        return;
    }
    if (s->_ring_count == s->_ring_cap) {
        /* Grow and unwrap the ring. */
        size_t ncap = s->_ring_cap * 2;
        if (ncap > STORE_QUEUE_MAX)
            ncap = STORE_QUEUE_MAX;
        struct qentry *nr = xmalloc(ncap * sizeof(*nr));
        for (size_t i = 0; i < s->_ring_count; i++)
            nr[i] = s->_ring[(s->_ring_head + i) % s->_ring_cap];
        free(s->_ring);
        s->_ring = nr;
        s->_ring_cap = ncap;
        s->_ring_head = 0;
    }
    struct qentry *q = &s->_ring[(s->_ring_head + s->_ring_count) % s->_ring_cap];
    memcpy(q->id, nid, sizeof(q->id));
    q->kind = (uint8_t)kind;
    q->is_anonymous = is_anonymous;
    q->at_ms = at_ms;
    s->_ring_count++;
    s->_enqueued_seq++;

    struct overlay_entry *e;
    HASH_FIND_STR(s->_overlay, nid, e);
    if (e == NULL) {
        e = xcalloc(1, sizeof(*e));
        memcpy(e->id, nid, sizeof(e->id));
        memcpy(e->w.id, nid, sizeof(e->w.id));
        e->w.is_anonymous = is_anonymous;
        HASH_ADD_STR(s->_overlay, id, e);
    }
    merge_write(&e->w, kind, at_ms);
    e->last_seq = s->_enqueued_seq;

    /* Wake the writer when work appears and when a full batch is ready to skip the gather. */
    if (s->_ring_count == 1 || s->_ring_count == STORE_BATCH_MAX)
        pthread_cond_signal(&s->_work_cv);
    pthread_mutex_unlock(&s->_mu);
}

void store_presence_online(struct store *s, const char *id, bool is_anonymous, int64_t at_ms)
{
    enqueue(s, id, is_anonymous, Q_ONLINE, at_ms);
}

void store_presence_offline(struct store *s, const char *id, bool is_anonymous, int64_t at_ms)
{
    enqueue(s, id, is_anonymous, Q_OFFLINE, at_ms);
}

void store_presence_activity(struct store *s, const char *id, bool is_anonymous, int64_t at_ms)
{
    enqueue(s, id, is_anonymous, Q_ACTIVITY, at_ms);
}

int store_flush(struct store *s, int64_t timeout_ms)
{
    int rc = 0;
    int64_t deadline = util_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&s->_mu);
    uint64_t target = s->_enqueued_seq;
    s->_flush_waiters++;
    pthread_cond_signal(&s->_work_cv);
    while (s->_applied_seq < target) {
        if (util_mono_ms() >= deadline) {
            rc = STORE_ERR_UNAVAILABLE;
            break;
        }
        struct timespec ts;
        deadline_ts(deadline, &ts);
        pthread_cond_timedwait(&s->_done_cv, &s->_mu, &ts);
    }
    s->_flush_waiters--;
    pthread_mutex_unlock(&s->_mu);
    return rc;
}

/* --- lifecycle ------------------------------------------------------------------------------ */

/* The file path of a "sqlite:PATH" or "sqlite://PATH" URL, or NULL. */
static const char *sqlite_url_path(const char *url)
{
    if (strncmp(url, "sqlite://", 9) == 0)
        return url + 9;
    if (strncmp(url, "sqlite:", 7) == 0)
        return url + 7;
    return NULL;
}

/* mkdir -p of the directory part of path. Returns 0 or -1 with errno set. */
static int mkdir_parent(const char *path)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    int rc = 0;
    if (slash == NULL || slash == dir) {
        free(dir);
        return 0;
    }
    *slash = '\0';
    for (char *p = dir + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST)
            rc = -1;
        *p = '/';
        if (rc != 0)
            goto out;
    }
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        rc = -1;
out:
    free(dir);
    return rc;
}

/* Opens url with the given backend table and starts the writer (store_open, and the tests
 * that run the writer over a scripted backend). */
static int store_open_ops(const struct store_backend_ops *ops, const char *url, struct store **out)
{
    struct store_backend *b = NULL;
    int rc = ops->open(url, &b);
    if (rc != 0)
        return rc;

    struct store *s = xcalloc(1, sizeof(*s));
    s->_ops = ops;
    s->_b = b;
    s->_ring_cap = 1024;
    s->_ring = xmalloc(s->_ring_cap * sizeof(*s->_ring));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->_mu, NULL);
    pthread_cond_init(&s->_work_cv, &ca);
    pthread_cond_init(&s->_done_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->_cache = xcalloc(STORE_CACHE_SHARDS, sizeof(*s->_cache));
    for (int i = 0; i < STORE_CACHE_SHARDS; i++)
        pthread_mutex_init(&s->_cache[i].lock, NULL);
    atomic_init(&s->_cache_ttl_ms, STORE_CACHE_TTL_MS);
    s->_swept_ms = util_mono_ms();
    atomic_init(&s->_ticket_gen, 1);
    /* The baseline of the changes polls: tickets stamped from now on are checked against it. */
    uint64_t v0 = 0;
    if (ops->changes_version != NULL && ops->changes_version(b, &v0) == 0)
        s->_changes_known = true;
    atomic_init(&s->_changes_v, v0);

    int err = pthread_create(&s->_writer, NULL, writer_main, s);
    if (err != 0) {
        errno = err;
        log_warn("%s: cannot start the writer thread", __func__);
        rc = STORE_ERR_INTERNAL;
        goto fail;
    }
    s->_writer_started = true;
    *out = s;
    return 0;
fail:
    for (int i = 0; i < STORE_CACHE_SHARDS; i++)
        pthread_mutex_destroy(&s->_cache[i].lock);
    free(s->_cache);
    pthread_cond_destroy(&s->_done_cv);
    pthread_cond_destroy(&s->_work_cv);
    pthread_mutex_destroy(&s->_mu);
    free(s->_ring);
    free(s);
    ops->close(b);
    return rc;
}

int store_open(const char *url, struct store **out)
{
    if (url == NULL || out == NULL)
        return STORE_ERR_INVALID;
    const char *path = sqlite_url_path(url);
    if (path != NULL) {
        if (*path == '\0') {
            log_error("%s: DATABASE_URL \"sqlite:\" needs a file path", __func__);
            return STORE_ERR_INVALID;
        }
        if (mkdir_parent(path) != 0) {
            log_warn("%s: cannot create the directory of %s", __func__, path);
            return STORE_ERR_UNAVAILABLE;
        }
        return store_open_ops(&store__sqlite_ops, url, out);
    }
    if (strncmp(url, "mongodb://", 10) == 0 || strncmp(url, "mongodb+srv://", 14) == 0) {
#ifdef GW_WITH_MONGO
        return store_open_ops(&store__mongo_ops, url, out);
#else
        log_error("%s: this build has no MongoDB backend (DATABASE_URL is mongodb)", __func__);
        return STORE_ERR_INVALID;
#endif
    }
    /* Never echo the URL: it may carry a password. */
    log_error("%s: DATABASE_URL must start with sqlite: or mongodb:// or mongodb+srv://", __func__);
    return STORE_ERR_INVALID;
}

int store_close(struct store *s, int64_t timeout_ms)
{
    if (s == NULL)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&s->_mu);
    s->_stopping = true;
    s->_close_deadline_ms = util_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_cond_broadcast(&s->_work_cv);
    pthread_mutex_unlock(&s->_mu);
    if (s->_writer_started)
        pthread_join(s->_writer, NULL);

    if (s->_ring_count > 0) {
        log_error("%s: %zu presence writes left unwritten after %lld ms", __func__, s->_ring_count,
                  (long long)timeout_ms);
        rc = STORE_ERR_UNAVAILABLE;
    }
    struct overlay_entry *e, *tmp;
    HASH_ITER(hh, s->_overlay, e, tmp)
    {
        HASH_DEL(s->_overlay, e);
        free(e);
    }
    struct store_cache_stats cs;
    store_cache_get_stats(s, &cs);
    log_info("%s: person cache: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64
             " evictions, %" PRIu64 " reconnect tickets used; %" PRIu64 " batches, %" PRIu64
             " rows written",
             s->_ops->name, cs.hits, cs.misses, cs.evictions, cs.ticket_hits, s->_batches_written,
             s->_rows_written);
    cache_clear(s, true);
    for (int i = 0; i < STORE_CACHE_SHARDS; i++)
        pthread_mutex_destroy(&s->_cache[i].lock);
    free(s->_cache);
    s->_ops->close(s->_b);
    pthread_cond_destroy(&s->_done_cv);
    pthread_cond_destroy(&s->_work_cv);
    pthread_mutex_destroy(&s->_mu);
    free(s->_ring);
    free(s);
    return rc;
}

const char *store_backend_name(const struct store *s)
{
    return s->_ops->name;
}

void store_get_stats(struct store *s, struct store_stats *out)
{
    pthread_mutex_lock(&s->_mu);
    out->rows_written = s->_rows_written;
    out->batches_written = s->_batches_written;
    out->write_failures = s->_write_failures;
    out->queue_length = s->_ring_count;
    out->queue_dropped = s->_queue_dropped;
    pthread_mutex_unlock(&s->_mu);
}

/* --- reads ---------------------------------------------------------------------------------- */

bool store_ping(struct store *s)
{
    return s->_ops->ping(s->_b);
}

/* Reads one person through fn, fills the cache and applies the overlay; see DESIGN for the
 * re-read when a batch lands during the backend read. */
static int read_person(struct store *s,
                       int (*fn)(struct store_backend *, const char *, struct store_person *),
                       const char *key, struct store_person *out)
{
    for (int attempt = 0;; attempt++) {
        struct store_person p = {0};
        uint64_t gen0 = atomic_load(&s->_cache_gen);
        int rc = fn(s->_b, key, &p);
        if (rc != 0)
            return rc;
        if (pcache_publish(s, &p, gen0, attempt >= STORE_READ_RETRIES)) {
            *out = p;
            return 0;
        }
        store_person_clear(&p);
    }
}

static int person_get_norm(struct store *s, const char *nid, struct store_person *out)
{
    if (pcache_get(s, nid, out))
        return 0; /* no backend call at all */
    return read_person(s, s->_ops->person_get, nid, out);
}

int store_person_get(struct store *s, const char *id, struct store_person *out)
{
    char nid[OID_HEX_LEN + 1];
    if (!norm_id(id, nid))
        return STORE_ERR_NOT_FOUND; /* nothing is stored under a malformed id */
    return person_get_norm(s, nid, out);
}

int store_person_by_session_token(struct store *s, const char *token, struct store_person *out)
{
    if (token == NULL || *token == '\0' || strlen(token) > STORE_TOKEN_MAX)
        return STORE_ERR_NOT_FOUND;
    char id[OID_HEX_LEN + 1];
    if (tcache_get(s, token, id)) {
        struct store_person p = {0};
        int rc = person_get_norm(s, id, &p);
        if (rc == 0 && p.is_anonymous) {
            *out = p;
            return 0;
        }
        store_person_clear(&p);
        if (rc != 0 && rc != STORE_ERR_NOT_FOUND)
            return rc;
        tentry_drop(s, token); /* gone from a shared database: ask it by token */
    }
    struct store_person p = {0};
    int rc = read_person(s, s->_ops->person_by_session_token, token, &p);
    if (rc != 0)
        return rc;
    tcache_put(s, token, p.id);
    *out = p;
    return 0;
}

int store_person_conversations(struct store *s, const struct store_person *p,
                               struct store_id_list *out)
{
    char nid[OID_HEX_LEN + 1];
    if (p == NULL || !norm_id(p->id, nid))
        return STORE_ERR_INVALID;
    if (ccache_get(s, nid, p->is_anonymous, out))
        return 0;
    uint64_t gen0 = atomic_load(&s->_conv_gen);
    int rc = s->_ops->person_conversations(s->_b, p, out);
    if (rc == 0)
        ccache_publish(s, nid, p->is_anonymous, out, gen0);
    return rc;
}

/* --- cache-only reads (loop threads) -------------------------------------------------------- */

int store_person_get_cached(struct store *s, const char *id, struct store_person *out)
{
    char nid[OID_HEX_LEN + 1];
    if (!norm_id(id, nid))
        return STORE_ERR_NOT_FOUND;
    return pcache_get(s, nid, out) ? 0 : STORE_ERR_WOULD_BLOCK;
}

int store_person_by_session_token_cached(struct store *s, const char *token,
                                         struct store_person *out)
{
    if (token == NULL || *token == '\0' || strlen(token) > STORE_TOKEN_MAX)
        return STORE_ERR_NOT_FOUND;
    char id[OID_HEX_LEN + 1];
    if (!tcache_get(s, token, id))
        return STORE_ERR_WOULD_BLOCK;
    struct store_person p = {0};
    if (!pcache_get(s, id, &p))
        return STORE_ERR_WOULD_BLOCK;
    if (!p.is_anonymous) {
        store_person_clear(&p);
        return STORE_ERR_WOULD_BLOCK; /* the blocking read decides */
    }
    *out = p;
    return 0;
}

int store_person_conversations_cached(struct store *s, const struct store_person *p,
                                      struct store_id_list *out)
{
    char nid[OID_HEX_LEN + 1];
    if (p == NULL || !norm_id(p->id, nid))
        return STORE_ERR_INVALID;
    return ccache_get(s, nid, p->is_anonymous, out) ? 0 : STORE_ERR_WOULD_BLOCK;
}

int store_is_member(struct store *s, const char *conversation_id, const struct store_person *p,
                    bool *out)
{
    char cid[OID_HEX_LEN + 1];
    if (p == NULL)
        return STORE_ERR_INVALID;
    if (!norm_id(conversation_id, cid)) {
        *out = false;
        return 0;
    }
    return s->_ops->is_member(s->_b, cid, p, out);
}

int store_conversation_get(struct store *s, const char *id, struct store_conversation *out)
{
    char cid[OID_HEX_LEN + 1];
    if (!norm_id(id, cid))
        return STORE_ERR_NOT_FOUND;
    return s->_ops->conversation_get(s->_b, cid, out);
}

/* Applies the overlay to each person of l; persons for which keep() is false are removed. */
static void overlay_apply_list(struct store *s, struct store_person_list *l,
                               bool (*keep)(const struct store_person *, int64_t), int64_t arg)
{
    size_t j = 0;
    pthread_mutex_lock(&s->_mu);
    for (size_t i = 0; i < l->count; i++) {
        overlay_apply_locked(s, &l->items[i]);
        if (keep != NULL && !keep(&l->items[i], arg)) {
            store_person_clear(&l->items[i]);
            continue;
        }
        if (j != i)
            l->items[j] = l->items[i];
        j++;
    }
    pthread_mutex_unlock(&s->_mu);
    l->count = j;
}

/* Rows of a list just read from the backend replace the cached rows of the same persons
 * (when no batch landed during the read, gen0): a list read is as fresh as a miss. This keeps
 * the maintenance job's re-read of a zombie (store_person_get) in line with the zombie query
 * that found it, also when another writer made it online. Persons not cached stay out. */
static void cache_refresh(struct store *s, const struct store_person_list *l, uint64_t gen0)
{
    if (cache_ttl(s) <= 0)
        return;
    int64_t now = util_mono_ms();
    for (size_t i = 0; i < l->count; i++) {
        struct cache_shard *sh = cache_shard_of(s, l->items[i].id);
        struct pcache_entry *e;
        pthread_mutex_lock(&sh->lock);
        HASH_FIND_STR(sh->persons, l->items[i].id, e);
        if (e != NULL && atomic_load(&s->_cache_gen) == gen0)
            pentry_put_locked(s, sh, pentry_new(&l->items[i], now));
        pthread_mutex_unlock(&sh->lock);
    }
}

static int read_list(struct store *s, const char *cid, struct store_person_list *out,
                     int (*fn)(struct store_backend *, const char *, struct store_person_list *),
                     int64_t cutoff_ms, bool (*keep)(const struct store_person *, int64_t))
{
    for (int attempt = 0;; attempt++) {
        struct store_person_list l = {0};
        uint64_t gen0 = atomic_load(&s->_cache_gen);
        uint64_t seq0 = applied_seq(s);
        int rc = cid != NULL ? fn(s->_b, cid, &l) : s->_ops->zombies_find(s->_b, cutoff_ms, &l);
        if (rc != 0)
            return rc;
        /* A batch landed while we read: some overlay entries we need may be gone. */
        if ((applied_seq(s) != seq0 || atomic_load(&s->_cache_gen) != gen0) &&
            attempt < STORE_READ_RETRIES) {
            store_person_list_free(&l);
            continue;
        }
        cache_refresh(s, &l, gen0);
        overlay_apply_list(s, &l, keep, cutoff_ms);
        *out = l;
        return 0;
    }
}

int store_conversation_participants(struct store *s, const char *conversation_id,
                                    struct store_person_list *out)
{
    char cid[OID_HEX_LEN + 1];
    if (!norm_id(conversation_id, cid))
        return STORE_ERR_NOT_FOUND;
    return read_list(s, cid, out, s->_ops->conversation_participants, 0, NULL);
}

int store_conversation_member_ids(struct store *s, const char *conversation_id,
                                  struct store_id_list *out)
{
    char cid[OID_HEX_LEN + 1];
    if (!norm_id(conversation_id, cid))
        return STORE_ERR_NOT_FOUND;
    return s->_ops->conversation_member_ids(s->_b, cid, out);
}

int store_count_online(struct store *s, uint64_t *users, uint64_t *anonymous)
{
    return s->_ops->count_online(s->_b, users, anonymous);
}

/* --- provisioning --------------------------------------------------------------------------- */

static bool role_valid(const char *role)
{
    return strcmp(role, "USER") == 0 || strcmp(role, "ADMIN") == 0 || strcmp(role, "BIGBOSS") == 0;
}

int store_user_create(struct store *s, const struct store_user_new *u, struct store_person *out)
{
    char nid[OID_HEX_LEN + 1];
    if (u == NULL || u->username == NULL || u->username[0] == '\0')
        return STORE_ERR_INVALID;
    if (u->role != NULL && !role_valid(u->role))
        return STORE_ERR_INVALID;
    if (u->id != NULL) {
        if (!norm_id(u->id, nid))
            return STORE_ERR_INVALID;
    } else {
        util_oid_new(nid);
    }
    struct store_user_new n = *u;
    n.id = nid;
    if (n.role == NULL)
        n.role = "USER";
    int rc = s->_ops->user_create(s->_b, &n, out);
    if (rc == 0)
        pcache_forget(s, nid);
    return rc;
}

int store_conversation_create(struct store *s, const char *id, const char *title, const char *type,
                              struct store_conversation *out)
{
    char cid[OID_HEX_LEN + 1];
    if (id != NULL) {
        if (!norm_id(id, cid))
            return STORE_ERR_INVALID;
    } else {
        util_oid_new(cid);
    }
    if (type == NULL)
        type = "group";
    if (*type == '\0')
        return STORE_ERR_INVALID;
    return s->_ops->conversation_create(s->_b, cid, title, type, out);
}

int store_member_add(struct store *s, const char *conversation_id, const char *user_id, int *added)
{
    char cid[OID_HEX_LEN + 1], uid[OID_HEX_LEN + 1];
    if (!norm_id(conversation_id, cid) || !norm_id(user_id, uid))
        return STORE_ERR_INVALID;
    uint64_t own[2] = {0, 0};
    int rc = s->_ops->member_add(s->_b, cid, uid, added, own);
    /* The row holds no membership today; dropping it keeps that true for any future field. */
    if (rc == 0) {
        pcache_forget(s, uid);
        ccache_forget(s, uid);
        /* What this insert fired is no news to the changes poll (what it concerns is dropped
         * just above), unless another change came before it that the poll has not seen:
         * then the version it last saw is not own[0] and it empties the cache as usual. */
        uint64_t seen = own[0];
        if (own[1] != own[0])
            atomic_compare_exchange_strong(&s->_changes_v, &seen, own[1]);
    }
    return rc;
}

int store_member_count(struct store *s, const char *conversation_id, uint64_t *out)
{
    char cid[OID_HEX_LEN + 1];
    if (!norm_id(conversation_id, cid))
        return STORE_ERR_NOT_FOUND;
    return s->_ops->member_count(s->_b, cid, out);
}

int store_anonymous_create(struct store *s, const char *conversation_id, const char *username,
                           struct store_person *out, char token_out[65])
{
    char cid[OID_HEX_LEN + 1], token[65];
    if (!norm_id(conversation_id, cid))
        return STORE_ERR_INVALID;
    if (username == NULL || *username == '\0')
        return STORE_ERR_INVALID;
    if (util_random_hex(token, 32) != 0) {
        log_error("%s: no randomness for a session token", __func__);
        return STORE_ERR_INTERNAL;
    }
    int rc = s->_ops->anonymous_create(s->_b, cid, username, token, out);
    if (rc == 0) {
        pcache_forget(s, out->id);
        ccache_forget(s, out->id);
        memcpy(token_out, token, sizeof(token));
    }
    explicit_bzero(token, sizeof(token));
    return rc;
}

/* --- maintenance ---------------------------------------------------------------------------- */

static bool still_zombie(const struct store_person *p, int64_t cutoff_ms)
{
    return p->is_online && p->last_active_at_ms < cutoff_ms;
}

int store_zombies_find(struct store *s, int64_t cutoff_ms, struct store_person_list *out)
{
    return read_list(s, NULL, out, NULL, cutoff_ms, still_zombie);
}

int store_reconcile_startup(struct store *s, int64_t now_ms, uint64_t *count)
{
    uint64_t n = 0;
    int rc = s->_ops->reconcile_startup(s->_b, now_ms, &n);
    /* It writes presence behind the writer's back: no cached row may survive it (even a
     * failed run may have changed rows). */
    cache_clear(s, false);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&s->_mu);
    s->_rows_written += n;
    pthread_mutex_unlock(&s->_mu);
    *count = n;
    return 0;
}
