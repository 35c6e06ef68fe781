/*
 * metrics.h - the process-wide Prometheus counters and gauges of SPEC §3 "Metrics and logs".
 *
 * Plain atomics in one global struct: any module bumps them with relaxed atomic adds (no lock,
 * no allocation on a hot path) and routes/ renders them with metrics_render(). Counters that
 * other modules already keep (the store's rows written, the throttle's decisions) are read
 * from those modules by the renderer through the source callbacks, not duplicated here.
 *
 * Threads: any.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bounds (seconds) of the broadcast latency histogram buckets; +Inf is implicit. */
#define METRICS_LATENCY_BUCKETS 14
extern const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS];

struct gw_metrics {
    atomic_uint_fast64_t status_broadcasts_total;        /* meeshy_user_status_broadcasts_total */
    atomic_uint_fast64_t status_deliveries_total;        /* meeshy_user_status_deliveries_total */
    atomic_uint_fast64_t zombies_cleaned_total;          /* meeshy_zombies_cleaned_total */
    atomic_uint_fast64_t slow_reader_disconnects_total;  /* meeshy_slow_reader_disconnects_total */
    atomic_uint_fast64_t rate_limited_disconnects_total; /* meeshy_rate_limited_disconnects_total */
    atomic_int_fast64_t connected_sockets;               /* meeshy_connected_sockets (gauge) */
    atomic_int_fast64_t online_users;                    /* meeshy_online_users (gauge) */
    atomic_int_fast64_t online_anonymous;                /* meeshy_online_anonymous (gauge) */
    atomic_int_fast64_t polling_requests_held;           /* meeshy_polling_requests_held (gauge) */
    atomic_uint_fast64_t connects_total;                 /* meeshy_socket_connects_total */
    atomic_uint_fast64_t http_requests_total;            /* meeshy_http_requests_total */
    /* meeshy_status_broadcast_latency_seconds: cumulative counts per bucket are computed at
     * render time from these per-bucket counts. */
    atomic_uint_fast64_t latency_bucket[METRICS_LATENCY_BUCKETS + 1];
    atomic_uint_fast64_t latency_count;
    atomic_uint_fast64_t latency_sum_ns;
};

extern struct gw_metrics gw_metrics;

#define METRIC_INC(field) atomic_fetch_add_explicit(&gw_metrics.field, 1, memory_order_relaxed)
#define METRIC_ADD(field, n) atomic_fetch_add_explicit(&gw_metrics.field, (n), memory_order_relaxed)
#define METRIC_SUB(field, n) atomic_fetch_sub_explicit(&gw_metrics.field, (n), memory_order_relaxed)

/* Records one broadcast latency observation in nanoseconds. */
void metrics_observe_latency_ns(uint64_t ns);

/* Values owned by other modules, read at render time. Any field may be left 0. */
struct metrics_external {
    uint64_t activity_written;
    uint64_t activity_throttled;
    uint64_t db_updates_total;
    uint64_t db_write_failures_total;
    uint64_t db_queue_length;
    uint64_t db_queue_dropped_total;
    uint64_t person_cache_hits_total;
    uint64_t person_cache_misses_total;
    uint64_t reconnect_tickets_used_total;
};

/* Renders the Prometheus text exposition (version 0.0.4) of every metric, plus process
 * gauges (resident memory, open fds, start time). Returns a malloc'ed NUL-terminated string;
 * *len receives its length. */
char *metrics_render(const struct metrics_external *ext, size_t *len);

#endif
