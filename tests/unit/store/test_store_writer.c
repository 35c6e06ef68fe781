/*
 * test_store_writer.c - the batching writer of store.c over a scripted backend: merging per
 * person, failures kept at the head and retried in order, flush and close deadlines, the
 * queue bound (built with STORE_QUEUE_MAX=100) and the overlay's life cycle.
 *
 * Includes store.c (STYLE: test static functions by including the .c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../../store/store.c"

/* --- the scripted backend ----------------------------------------------------------------- */

#define FAKE_MAX_BATCHES 64

struct store_backend {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool gate_closed; /* apply_batch waits while true */
    bool in_apply;    /* apply_batch entered and waiting at the gate */
    int fail_next;    /* apply_batch fails this many more times */
    bool fail_always;
    int calls;
    size_t nbatches;
    struct store_write batches[FAKE_MAX_BATCHES][16];
    size_t batch_len[FAKE_MAX_BATCHES];
    struct store_person stored; /* one person, what the "database" holds */
    bool race_once;             /* person_get: let a batch land mid-read (see below) */
};

static struct store *cur_store;

static struct store_backend *fake;

static int fake_open(const char *url, struct store_backend **out)
{
    struct store_backend *b = calloc(1, sizeof(*b));
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    strcpy(b->stored.id, "aaaaaaaaaaaaaaaaaaaaaaaa");
    fake = b;
    *out = b;
    return 0;
}

static void fake_close(struct store_backend *b)
{
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
    fake = NULL;
}

static int fake_apply(struct store_backend *b, const struct store_write *w, size_t n,
                      uint64_t *rows)
{
    pthread_mutex_lock(&b->mu);
    b->in_apply = true;
    pthread_cond_broadcast(&b->cv);
    while (b->gate_closed)
        pthread_cond_wait(&b->cv, &b->mu);
    b->in_apply = false;
    b->calls++;
    if (b->fail_always || b->fail_next > 0) {
        if (b->fail_next > 0)
            b->fail_next--;
        pthread_mutex_unlock(&b->mu);
        return STORE_ERR_UNAVAILABLE;
    }
    if (b->nbatches < FAKE_MAX_BATCHES) {
        size_t k = n < 16 ? n : 16;
        memcpy(b->batches[b->nbatches], w, k * sizeof(*w));
        b->batch_len[b->nbatches] = n;
        b->nbatches++;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(w[i].id, b->stored.id) != 0)
            continue;
        if (w[i].set_online)
            b->stored.is_online = w[i].is_online;
        if (w[i].last_active_at_ms)
            b->stored.last_active_at_ms = w[i].last_active_at_ms;
        if (w[i].last_seen_ms)
            b->stored.last_seen_ms = w[i].last_seen_ms;
    }
    *rows = n;
    pthread_mutex_unlock(&b->mu);
    return 0;
}

static int fake_person_get(struct store_backend *b, const char *id, struct store_person *out)
{
    pthread_mutex_lock(&b->mu);
    int rc = STORE_ERR_NOT_FOUND;
    if (strcmp(id, b->stored.id) == 0) {
        *out = b->stored;
        rc = 0;
    }
    bool race = b->race_once;
    b->race_once = false;
    pthread_mutex_unlock(&b->mu);
    if (race) {
        /* Return the row as read before the pending batch lands, but only once that batch
         * has landed and left the overlay: the case read_person must read again for. */
        int64_t until = util_mono_ms() + 3000;
        while (util_mono_ms() < until) {
            pthread_mutex_lock(&cur_store->_mu);
            bool done = cur_store->_ring_count == 0;
            pthread_mutex_unlock(&cur_store->_mu);
            if (done)
                break;
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return rc;
}

static const struct store_backend_ops fake_ops = {
    .name = "fake",
    .open = fake_open,
    .close = fake_close,
    .apply_batch = fake_apply,
    .person_get = fake_person_get,
};

static void gate(struct store_backend *b, bool closed)
{
    pthread_mutex_lock(&b->mu);
    b->gate_closed = closed;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Waits (bounded) until the writer sits in apply_batch behind the closed gate. */
static void wait_in_apply(struct store_backend *b)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    pthread_mutex_lock(&b->mu);
    while (!b->in_apply)
        if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT)
            break;
    bool in = b->in_apply;
    pthread_mutex_unlock(&b->mu);
    assert_true(in);
}

#define A "aaaaaaaaaaaaaaaaaaaaaaaa"
#define B "bbbbbbbbbbbbbbbbbbbbbbbb"

static int setup(void **state)
{
    struct store *s = NULL;
    if (store_open_ops(&fake_ops, "fake:", &s) != 0)
        return -1;
    cur_store = s;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    if (fake != NULL)
        gate(fake, false);
    store_close(*state, 1000);
    return 0;
}

/* Writes queued while a batch is in flight merge into one update per person. */
static void test_merge_per_person(void **state)
{
    struct store *s = *state;
    struct store_backend *b = fake;
    gate(b, true);
    store_presence_activity(s, B, false, 1);
    wait_in_apply(b); /* batch 1 = {B} is in flight */
    store_presence_online(s, A, false, 10);
    store_presence_activity(s, "BBBBBBBBBBBBBBBBBBBBBBBB", false, 15);
    store_presence_activity(s, A, false, 20);
    store_presence_offline(s, A, false, 30);
    gate(b, false);
    assert_int_equal(store_flush(s, 5000), 0);

    assert_int_equal(b->nbatches, 2);
    assert_int_equal(b->batch_len[0], 1);
    assert_int_equal(b->batch_len[1], 2);
    const struct store_write *wa = NULL, *wb = NULL;
    for (int i = 0; i < 2; i++) {
        if (strcmp(b->batches[1][i].id, A) == 0)
            wa = &b->batches[1][i];
        if (strcmp(b->batches[1][i].id, B) == 0) /* lowercased on the way in */
            wb = &b->batches[1][i];
    }
    assert_non_null(wa);
    assert_non_null(wb);
    assert_true(wa->set_online);
    assert_false(wa->is_online);
    assert_int_equal(wa->last_active_at_ms, 20);
    assert_int_equal(wa->last_seen_ms, 30);
    assert_false(wb->set_online);
    assert_int_equal(wb->last_active_at_ms, 15);
    assert_int_equal(wb->last_seen_ms, 0);

    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.batches_written, 2);
    assert_int_equal(st.rows_written, 3);
    assert_int_equal(st.queue_length, 0);
    assert_int_equal(HASH_COUNT(s->_overlay), 0); /* applied entries leave the overlay */
}

/* A failing batch stays at the head and is retried, in order, until it lands. */
static void test_failure_retried_in_order(void **state)
{
    struct store *s = *state;
    struct store_backend *b = fake;
    b->fail_next = 2;
    store_presence_online(s, A, false, 100);
    store_presence_offline(s, A, false, 200);
    store_presence_online(s, A, false, 300);
    /* the overlay shows the queued state while the backend refuses */
    struct store_person p = {0};
    assert_int_equal(store_person_get(s, A, &p), 0);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, 300);
    assert_int_equal(p.last_seen_ms, 200);

    int64_t t0 = util_mono_ms();
    assert_int_equal(store_flush(s, 5000), 0);
    int64_t took = util_mono_ms() - t0;
    assert_true(took >= 100 + 200 - 20); /* two backoffs: 100 ms then 200 ms */
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.write_failures, 2);
    assert_int_equal(b->calls, 3);
    assert_true(b->stored.is_online);
    assert_int_equal(b->stored.last_active_at_ms, 300);
    assert_int_equal(b->stored.last_seen_ms, 200);
    assert_int_equal(HASH_COUNT(s->_overlay), 0);
}

/* A backend that never recovers: flush and close give up at their deadlines. */
static void test_deadlines(void **state)
{
    struct store *s = *state;
    struct store_backend *b = fake;
    b->fail_always = true;
    store_presence_online(s, A, false, 1);
    int64_t t0 = util_mono_ms();
    assert_int_equal(store_flush(s, 150), STORE_ERR_UNAVAILABLE);
    int64_t took = util_mono_ms() - t0;
    assert_true(took >= 140 && took < 2000);
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.queue_length, 1); /* kept, not dropped */
    assert_true(st.write_failures >= 1);
    t0 = util_mono_ms();
    assert_int_equal(store_close(s, 300), STORE_ERR_UNAVAILABLE);
    took = util_mono_ms() - t0;
    assert_true(took < 2500);
    *state = NULL;
}

static int teardown_closed(void **state)
{
    return 0;
}

/* Past STORE_QUEUE_MAX (100 in this build) writes are refused and counted. */
static void test_queue_bound(void **state)
{
    struct store *s = *state;
    struct store_backend *b = fake;
    gate(b, true);
    store_presence_activity(s, B, false, 1);
    wait_in_apply(b);
    for (int i = 0; i < 150; i++)
        store_presence_activity(s, A, false, 10 + i);
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.queue_length, 100); /* the in-flight write still counts */
    assert_int_equal(st.queue_dropped, 51);
    gate(b, false);
    assert_int_equal(store_flush(s, 5000), 0);
    store_get_stats(s, &st);
    assert_int_equal(st.queue_length, 0);
    assert_int_equal(b->stored.last_active_at_ms, 10 + 98);
    /* room again once drained */
    store_presence_activity(s, A, false, 5000);
    assert_int_equal(store_flush(s, 5000), 0);
    assert_int_equal(b->stored.last_active_at_ms, 5000);
}

/* The writer gathers a burst into one batch, and the gather wait stays short. */
static void test_gather_latency(void **state)
{
    struct store *s = *state;
    struct store_backend *b = fake;
    int64_t t0 = util_mono_ms();
    store_presence_activity(s, A, false, 1);
    store_presence_activity(s, B, false, 2);
    /* Without a flush the write must still land soon (SPEC: within one second). */
    for (;;) {
        struct store_stats st;
        store_get_stats(s, &st);
        if (st.queue_length == 0)
            break;
        assert_true(util_mono_ms() - t0 < 1000);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(b->nbatches, 1);
    assert_int_equal(b->batch_len[0], 2);
}

/* A batch that lands and leaves the overlay while a read is at the backend: the read must not
 * return the row it got from before the batch without the overlay. */
static void test_read_during_batch(void **state)
{
    struct store *s = *state;
    struct store_backend *b = fake;
    b->race_once = true;
    store_presence_online(s, A, false, 77);
    struct store_person p = {0};
    assert_int_equal(store_person_get(s, A, &p), 0);
    assert_false(b->race_once);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, 77);
    assert_int_equal(HASH_COUNT(s->_overlay), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_merge_per_person, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_retried_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadlines, setup, teardown_closed),
        cmocka_unit_test_setup_teardown(test_queue_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gather_latency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_during_batch, setup, teardown),
    };
    return cmocka_run_group_tests_name("store_writer", tests, NULL, NULL);
}
