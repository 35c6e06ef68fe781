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
 * Everything else (reads, provisioning, maintenance) goes straight to the backend, with ids
 * checked and lowercased here so that both backends see the same input.
 *
 * DESIGN
 *
 * - Queue: a growable ring buffer of raw writes under _mu, bounded by STORE_QUEUE_MAX entries.
 *   Enqueue never blocks; past the bound a write is refused, counted in queue_dropped and
 *   logged once per burst. Entry i of the ring (from the head) has the sequence number
 *   _applied_seq + 1 + i; _enqueued_seq is the sequence of the newest entry.
 * - Writer: waits for work, then up to STORE_GATHER_MS (50 ms) for more (unless the ring
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
 */
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <uthash.h>

#include "common/log.h"
#include "common/xmalloc.h"
#include "store/store_backend.h"

#ifndef STORE_QUEUE_MAX
#define STORE_QUEUE_MAX 1000000 /* raw writes held at most (about 40 MB) */
#endif
#ifndef STORE_BATCH_MAX
#define STORE_BATCH_MAX 4096 /* raw writes per batch */
#endif
#define STORE_GATHER_MS 50
#define STORE_BACKOFF_MIN_MS 100
#define STORE_BACKOFF_MAX_MS 2000
#define STORE_READ_RETRIES 4
#define STORE_TOKEN_MAX 256

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
    struct batch_item *items = xcalloc(STORE_BATCH_MAX, sizeof(*items));
    struct store_write *batch = xcalloc(STORE_BATCH_MAX, sizeof(*batch));
    int64_t backoff_ms = STORE_BACKOFF_MIN_MS;

    pthread_mutex_lock(&s->_mu);
    for (;;) {
        while (s->_ring_count == 0 && !s->_stopping)
            pthread_cond_wait(&s->_work_cv, &s->_mu);
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

        pthread_mutex_lock(&s->_mu);
        if (rc == 0) {
            batch_done_locked(s, n, batch, nw);
            s->_rows_written += rows;
            s->_batches_written++;
            backoff_ms = STORE_BACKOFF_MIN_MS;
            pthread_cond_broadcast(&s->_done_cv);
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
                      "store catches up", __func__, STORE_QUEUE_MAX);
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
    log_error("%s: DATABASE_URL must start with sqlite: or mongodb:// or mongodb+srv://",
              __func__);
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
        log_error("%s: %zu presence writes left unwritten after %lld ms", __func__,
                  s->_ring_count, (long long)timeout_ms);
        rc = STORE_ERR_UNAVAILABLE;
    }
    struct overlay_entry *e, *tmp;
    HASH_ITER(hh, s->_overlay, e, tmp)
    {
        HASH_DEL(s->_overlay, e);
        free(e);
    }
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

/* Reads one person through fn and applies the overlay; see DESIGN for the re-read. */
static int read_person(struct store *s, int (*fn)(struct store_backend *, const char *,
                                                    struct store_person *),
                       const char *key, struct store_person *out)
{
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        struct store_person p = {0};
        uint64_t seq0 = applied_seq(s);
        rc = fn(s->_b, key, &p);
        if (rc != 0)
            return rc;
        pthread_mutex_lock(&s->_mu);
        struct overlay_entry *e;
        HASH_FIND_STR(s->_overlay, p.id, e);
        bool stale = e == NULL && s->_applied_seq != seq0 && attempt < STORE_READ_RETRIES;
        if (!stale)
            overlay_apply_locked(s, &p);
        pthread_mutex_unlock(&s->_mu);
        if (stale) {
            store_person_clear(&p);
            continue;
        }
        *out = p;
        return 0;
    }
}

int store_person_get(struct store *s, const char *id, struct store_person *out)
{
    char nid[OID_HEX_LEN + 1];
    if (!norm_id(id, nid))
        return STORE_ERR_NOT_FOUND; /* nothing is stored under a malformed id */
    return read_person(s, s->_ops->person_get, nid, out);
}

int store_person_by_session_token(struct store *s, const char *token, struct store_person *out)
{
    if (token == NULL || *token == '\0' || strlen(token) > STORE_TOKEN_MAX)
        return STORE_ERR_NOT_FOUND;
    return read_person(s, s->_ops->person_by_session_token, token, out);
}

int store_person_conversations(struct store *s, const struct store_person *p,
                               struct store_id_list *out)
{
    char nid[OID_HEX_LEN + 1];
    if (p == NULL || !norm_id(p->id, nid))
        return STORE_ERR_INVALID;
    return s->_ops->person_conversations(s->_b, p, out);
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

static int read_list(struct store *s, const char *cid, struct store_person_list *out,
                     int (*fn)(struct store_backend *, const char *, struct store_person_list *),
                     int64_t cutoff_ms, bool (*keep)(const struct store_person *, int64_t))
{
    for (int attempt = 0;; attempt++) {
        struct store_person_list l = {0};
        uint64_t seq0 = applied_seq(s);
        int rc = cid != NULL ? fn(s->_b, cid, &l) : s->_ops->zombies_find(s->_b, cutoff_ms, &l);
        if (rc != 0)
            return rc;
        /* A batch landed while we read: some overlay entries we need may be gone. */
        if (applied_seq(s) != seq0 && attempt < STORE_READ_RETRIES) {
            store_person_list_free(&l);
            continue;
        }
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
    return s->_ops->user_create(s->_b, &n, out);
}

int store_conversation_create(struct store *s, const char *id, const char *title,
                              const char *type, struct store_conversation *out)
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

int store_member_add(struct store *s, const char *conversation_id, const char *user_id,
                     int *added)
{
    char cid[OID_HEX_LEN + 1], uid[OID_HEX_LEN + 1];
    if (!norm_id(conversation_id, cid) || !norm_id(user_id, uid))
        return STORE_ERR_INVALID;
    return s->_ops->member_add(s->_b, cid, uid, added);
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
    if (rc == 0)
        memcpy(token_out, token, sizeof(token));
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
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&s->_mu);
    s->_rows_written += n;
    pthread_mutex_unlock(&s->_mu);
    *count = n;
    return 0;
}
