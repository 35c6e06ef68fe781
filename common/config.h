/*
 * config.h - the gateway's configuration as every module reads it.
 *
 * gateway/config.c fills one struct gw_config from the environment and the command line (SPEC
 * §3) and hands a const pointer to each module at start; nothing changes it afterwards, so any
 * thread may read it without locks. Durations are milliseconds, sizes bytes.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_config {
    /* listener */
    int port;   /* PORT, 8000 */
    char *host; /* HOST, "0.0.0.0" */
    /* storage */
    char *database_url; /* DATABASE_URL, "sqlite:./data/presence.db" */
    /* auth */
    char *jwt_secret; /* JWT_SECRET, required unless dev */
    size_t jwt_secret_len;
    char *cors_origins; /* CORS_ORIGINS, comma-separated allowlist, "" = no CORS */
    /* Engine.IO */
    int64_t ping_interval_ms;   /* PING_INTERVAL_MS, 25000 */
    int64_t ping_timeout_ms;    /* PING_TIMEOUT_MS, 10000 */
    int64_t connect_timeout_ms; /* CONNECT_TIMEOUT_MS, 45000 */
    /* presence */
    int64_t activity_throttle_ms;    /* ACTIVITY_THROTTLE_MS, 60000 */
    int64_t offline_threshold_ms;    /* OFFLINE_THRESHOLD_MS, 300000 */
    int64_t maintenance_interval_ms; /* MAINTENANCE_INTERVAL_MS, 60000 */
    int64_t away_after_ms;           /* AWAY_AFTER_MS, 300000 */
    int64_t offline_after_ms;        /* OFFLINE_AFTER_MS, 1800000 */
    int64_t disconnect_grace_ms;     /* DISCONNECT_GRACE_MS, 0 */
    bool single_session;             /* SINGLE_SESSION, false */
    /* limits */
    int64_t max_payload_bytes;  /* MAX_PAYLOAD_BYTES, 1000000 */
    int max_events_per_sec;     /* MAX_EVENTS_PER_SEC, 50 */
    int64_t request_timeout_ms; /* REQUEST_TIMEOUT_MS, 10000 */
    int max_connections;        /* MAX_CONNECTIONS, 0 = sized from RLIMIT_NOFILE at start */
    /* threads */
    int loop_threads; /* LOOP_THREADS, 0 = half the cores */
    int http_threads; /* HTTP_THREADS, 0 = one per core */
    /* logging */
    char *log_level; /* LOG_LEVEL, "info" */
    /* modes */
    bool dev;         /* --dev: generate a secret, print an admin token */
    bool conformance; /* --conformance: protocol test-suite mode (SPEC §3) */
};

#endif
