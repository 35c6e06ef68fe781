/*
 * test_throttle.c - the activity throttle: one write per person per window, independence of
 * persons, expiry, the memory bound and concurrent use.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "middleware/throttle.h"

#define WINDOW 60000
#define T0 1800000000000LL

static void id_of(unsigned n, char out[25])
{
    snprintf(out, 25, "%024x", n);
}

static void test_one_write_per_window(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(WINDOW, 1000);
    assert_true(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0));
    assert_false(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0));
    assert_false(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0 + 1));
    assert_false(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0 + WINDOW - 1));
    /* a time before the last write (jitter between threads) stays throttled */
    assert_false(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0 - 5));
    struct throttle_stats st;
    throttle_get_stats(t, &st);
    assert_int_equal(st.written, 1);
    assert_int_equal(st.throttled, 4);
    assert_int_equal(st.entries, 1);
    throttle_free(t);
}

static void test_second_person_independent(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(WINDOW, 1000);
    assert_true(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0));
    assert_true(throttle_should_write(t, "bbbbbbbbbbbbbbbbbbbbbbbb", T0 + 10));
    assert_false(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0 + 20));
    assert_false(throttle_should_write(t, "bbbbbbbbbbbbbbbbbbbbbbbb", T0 + 20));
    struct throttle_stats st;
    throttle_get_stats(t, &st);
    assert_int_equal(st.written, 2);
    assert_int_equal(st.throttled, 2);
    assert_int_equal(st.entries, 2);
    throttle_free(t);
}

static void test_window_expiry(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(WINDOW, 10000);
    assert_true(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0));
    assert_true(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0 + WINDOW));
    assert_false(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0 + WINDOW + 1));
    assert_true(throttle_should_write(t, "aaaaaaaaaaaaaaaaaaaaaaaa", T0 + 3 * WINDOW));

    char id[25];
    struct throttle_stats st;
    for (unsigned i = 0; i < 500; i++) {
        id_of(i, id);
        assert_true(throttle_should_write(t, id, T0 + 4 * WINDOW));
    }
    throttle_get_stats(t, &st);
    assert_int_equal(st.entries, 500); /* "a" expired at T0 + 4 W and was dropped */
    /* Far below the bound, so only expiry can drop entries: the 500 of two windows ago are
     * evicted lazily as the 2000 fresh ids pass through every shard. */
    for (unsigned i = 0; i < 2000; i++) {
        id_of(100000 + i, id);
        assert_true(throttle_should_write(t, id, T0 + 6 * WINDOW));
    }
    throttle_get_stats(t, &st);
    assert_int_equal(st.entries, 2000);
    for (unsigned i = 0; i < 500; i++) {
        id_of(i, id);
        assert_true(throttle_should_write(t, id, T0 + 6 * WINDOW));
    }
    throttle_free(t);
}

static void test_record_opens_window(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(WINDOW, 1000);
    throttle_record(t, "cccccccccccccccccccccccc", T0);
    assert_false(throttle_should_write(t, "cccccccccccccccccccccccc", T0 + 1000));
    /* a record moves the window forward */
    assert_true(throttle_should_write(t, "cccccccccccccccccccccccc", T0 + WINDOW));
    throttle_record(t, "cccccccccccccccccccccccc", T0 + WINDOW + 30000);
    assert_false(throttle_should_write(t, "cccccccccccccccccccccccc", T0 + 2 * WINDOW + 1000));
    struct throttle_stats st;
    throttle_get_stats(t, &st);
    assert_int_equal(st.written, 3); /* two records and one decision */
    assert_int_equal(st.throttled, 2);
    throttle_free(t);
}

static void test_memory_bound(void **state)
{
    (void)state;
    const size_t bounds[] = {1, 10, 64, 1000, 5000};
    for (size_t b = 0; b < sizeof(bounds) / sizeof(bounds[0]); b++) {
        size_t max = bounds[b];
        struct throttle *t = throttle_new(WINDOW, max);
        char id[25];
        struct throttle_stats st;
        for (unsigned i = 0; i < 10 * max; i++) {
            id_of(i, id);
            /* all inside one window: nothing expires, only the bound evicts */
            assert_true(throttle_should_write(t, id, T0 + i % 100));
            throttle_get_stats(t, &st);
            assert_true(st.entries <= max);
        }
        throttle_get_stats(t, &st);
        assert_int_equal(st.written, 10 * max);
        assert_true(st.entries > 0);
        /* the most recent id is remembered */
        assert_false(throttle_should_write(t, id, T0 + 200));
        throttle_free(t);
    }
}

static void test_bad_args(void **state)
{
    (void)state;
    assert_null(throttle_new(-1, 10));
    assert_null(throttle_new(WINDOW, 0));
    throttle_free(NULL);
    struct throttle *t = throttle_new(WINDOW, 10);
    /* ids we do not remember are never throttled */
    char longid[300];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    assert_true(throttle_should_write(t, longid, T0));
    assert_true(throttle_should_write(t, longid, T0));
    assert_true(throttle_should_write(t, "", T0));
    struct throttle_stats st;
    throttle_get_stats(t, &st);
    assert_int_equal(st.entries, 0);
    throttle_free(t);
}

#define NTHREADS 8
#define NPERSONS 2000
#define ROUNDS 5

struct worker {
    struct throttle *t;
    int64_t now;
    unsigned seed;
    unsigned written;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    char id[25];
    for (int r = 0; r < ROUNDS; r++) {
        for (unsigned i = 0; i < NPERSONS; i++) {
            /* each thread walks the persons in its own order */
            unsigned p = (i * 7919u + w->seed * 104729u) % NPERSONS;
            id_of(p, id);
            if (throttle_should_write(w->t, id, w->now))
                w->written++;
        }
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(WINDOW, 100000);
    for (int window = 0; window < 3; window++) {
        pthread_t th[NTHREADS];
        struct worker w[NTHREADS];
        for (unsigned i = 0; i < NTHREADS; i++) {
            w[i] = (struct worker){.t = t, .now = T0 + window * WINDOW, .seed = i, .written = 0};
            assert_int_equal(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
        }
        unsigned total = 0;
        for (unsigned i = 0; i < NTHREADS; i++) {
            pthread_join(th[i], NULL);
            total += w[i].written;
        }
        /* exactly one write per distinct person per window, whichever thread won it */
        assert_int_equal(total, NPERSONS);
    }
    struct throttle_stats st;
    throttle_get_stats(t, &st);
    assert_int_equal(st.written, 3 * NPERSONS);
    assert_int_equal(st.throttled, 3 * ((uint64_t)NTHREADS * ROUNDS * NPERSONS - NPERSONS));
    assert_int_equal(st.entries, NPERSONS);
    throttle_free(t);
}

/* A clock set back by a window or more does not throttle a person until it catches up. */
static void test_clock_step_back(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(WINDOW, 1000);
    assert_true(throttle_should_write(t, "dddddddddddddddddddddddd", T0));
    assert_false(throttle_should_write(t, "dddddddddddddddddddddddd", T0 - WINDOW + 1));
    assert_true(throttle_should_write(t, "dddddddddddddddddddddddd", T0 - WINDOW));
    /* the window restarted at the new time */
    assert_false(throttle_should_write(t, "dddddddddddddddddddddddd", T0 - WINDOW + 10));
    assert_true(throttle_should_write(t, "dddddddddddddddddddddddd", T0));
    /* a record at a time far back also restarts the window there */
    throttle_record(t, "dddddddddddddddddddddddd", T0 - 10 * WINDOW);
    assert_false(throttle_should_write(t, "dddddddddddddddddddddddd", T0 - 10 * WINDOW + 1));
    throttle_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_write_per_window),
        cmocka_unit_test(test_second_person_independent),
        cmocka_unit_test(test_window_expiry),
        cmocka_unit_test(test_record_opens_window),
        cmocka_unit_test(test_memory_bound),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_clock_step_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
