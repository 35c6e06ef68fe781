/*
 * metrics.c - the global metrics and their Prometheus rendering.
 */
#include "common/metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "common/xmalloc.h"

struct gw_metrics gw_metrics;

const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

static int64_t process_start_ms;

__attribute__((constructor)) static void metrics_init_start(void)
{
    process_start_ms = util_now_ms();
}

void metrics_observe_latency_ns(uint64_t ns)
{
    double s = (double)ns / 1e9;
    int i = 0;
    while (i < METRICS_LATENCY_BUCKETS && s > metrics_latency_bounds[i])
        i++;
    atomic_fetch_add_explicit(&gw_metrics.latency_bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&gw_metrics.latency_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&gw_metrics.latency_sum_ns, ns, memory_order_relaxed);
}

struct buf {
    char *p;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void bprintf(struct buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap *= 2;
        b->p = xrealloc(b->p, b->cap);
    }
}

#define LOAD(f) ((unsigned long long)atomic_load_explicit(&gw_metrics.f, memory_order_relaxed))
#define LOADS(f) ((long long)atomic_load_explicit(&gw_metrics.f, memory_order_relaxed))

static void counter(struct buf *b, const char *name, const char *help, unsigned long long v)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, v);
}

static void gauge(struct buf *b, const char *name, const char *help, long long v)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, v);
}

static long process_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * sysconf(_SC_PAGESIZE);
}

static long process_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;
    if (d == NULL)
        return 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own fd */
}

char *metrics_render(const struct metrics_external *ext, size_t *len)
{
    struct buf b = {xmalloc(8192), 0, 8192};
    static const struct metrics_external none;
    if (ext == NULL)
        ext = &none;

    counter(&b, "meeshy_user_status_broadcasts_total", "Status changes broadcast.",
            LOAD(status_broadcasts_total));
    counter(&b, "meeshy_user_status_deliveries_total",
            "user:status packets written to recipient sockets.", LOAD(status_deliveries_total));

    bprintf(&b, "# HELP meeshy_status_broadcast_latency_seconds Time from a status change to the "
                "write of its packet to the last recipient.\n"
                "# TYPE meeshy_status_broadcast_latency_seconds histogram\n");
    unsigned long long cum = 0;
    for (int i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
        cum += LOAD(latency_bucket[i]);
        bprintf(&b, "meeshy_status_broadcast_latency_seconds_bucket{le=\"%g\"} %llu\n",
                metrics_latency_bounds[i], cum);
    }
    cum += LOAD(latency_bucket[METRICS_LATENCY_BUCKETS]);
    bprintf(&b, "meeshy_status_broadcast_latency_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    bprintf(&b, "meeshy_status_broadcast_latency_seconds_sum %.9f\n",
            (double)LOAD(latency_sum_ns) / 1e9);
    bprintf(&b, "meeshy_status_broadcast_latency_seconds_count %llu\n", cum);

    gauge(&b, "meeshy_online_users", "Users online (live connections on this node).",
          LOADS(online_users));
    gauge(&b, "meeshy_online_anonymous", "Anonymous participants online.", LOADS(online_anonymous));
    gauge(&b, "meeshy_connected_sockets", "Live Socket.IO connections.", LOADS(connected_sockets));
    gauge(&b, "meeshy_polling_requests_held",
          "Engine.IO long-polling GETs held open, waiting for data.", LOADS(polling_requests_held));
    counter(&b, "meeshy_socket_connects_total", "Socket.IO connections accepted.",
            LOAD(connects_total));
    counter(&b, "meeshy_zombies_cleaned_total", "Zombies set offline by the cleanup job.",
            LOAD(zombies_cleaned_total));
    bprintf(&b,
            "# HELP meeshy_activity_updates_total Activity throttle decisions.\n"
            "# TYPE meeshy_activity_updates_total counter\n"
            "meeshy_activity_updates_total{result=\"written\"} %llu\n"
            "meeshy_activity_updates_total{result=\"throttled\"} %llu\n",
            (unsigned long long)ext->activity_written, (unsigned long long)ext->activity_throttled);
    counter(&b, "meeshy_db_updates_total", "Rows written to the store.",
            (unsigned long long)ext->db_updates_total);
    counter(&b, "meeshy_db_write_failures_total", "Store write batches that failed (retried).",
            (unsigned long long)ext->db_write_failures_total);
    gauge(&b, "meeshy_db_write_queue_length", "Presence writes queued, not yet stored.",
          (long long)ext->db_queue_length);
    counter(&b, "meeshy_db_write_queue_dropped_total",
            "Presence writes refused because the queue bound was hit.",
            (unsigned long long)ext->db_queue_dropped_total);
    counter(&b, "meeshy_person_cache_hits_total",
            "Person reads (handshakes, REST) answered by the gateway's cache.",
            (unsigned long long)ext->person_cache_hits_total);
    counter(&b, "meeshy_person_cache_misses_total", "Person reads that went to the database.",
            (unsigned long long)ext->person_cache_misses_total);
    counter(
        &b, "meeshy_reconnect_tickets_used_total",
        "Reconnects answered by the ticket their last disconnect left, without a database read.",
        (unsigned long long)ext->reconnect_tickets_used_total);
    counter(&b, "meeshy_slow_reader_disconnects_total",
            "Connections dropped because their send queue exceeded MAX_PAYLOAD_BYTES.",
            LOAD(slow_reader_disconnects_total));
    counter(&b, "meeshy_rate_limited_disconnects_total",
            "Connections dropped for exceeding MAX_EVENTS_PER_SEC.",
            LOAD(rate_limited_disconnects_total));
    counter(&b, "meeshy_http_requests_total", "HTTP requests answered.", LOAD(http_requests_total));
    gauge(&b, "process_resident_memory_bytes", "Resident memory size in bytes.",
          process_rss_bytes());
    gauge(&b, "process_open_fds", "Open file descriptors.", process_open_fds());
    bprintf(&b,
            "# HELP process_start_time_seconds Start time of the process since the epoch.\n"
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n",
            (double)process_start_ms / 1000.0);
    *len = b.len;
    return b.p;
}
