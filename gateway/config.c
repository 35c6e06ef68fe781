/*
 * config.c - the configuration table and its loader. One table drives the environment, the
 * --flags, --help and the error messages, so a variable cannot be documented in one place
 * and parsed differently in another.
 */
#include "gateway/config.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xmalloc.h"

enum cfg_type { CFG_STRING, CFG_INT, CFG_MS, CFG_BOOL, CFG_LOGLEVEL };

struct cfg_entry {
    const char *env;
    const char *flag;
    enum cfg_type type;
    size_t offset;
    int64_t min, max;
    const char *def;
    const char *help;
};

#define OFF(f) offsetof(struct gw_config, f)
#define DAY_MS (24LL * 3600 * 1000)

static const struct cfg_entry cfg_table[] = {
    {"PORT", "--port", CFG_INT, OFF(port), 0, 65535, "8000", "TCP port (0 picks a free one)"},
    {"HOST", "--host", CFG_STRING, OFF(host), 0, 0, "0.0.0.0", "address to listen on"},
    {"DATABASE_URL", "--database-url", CFG_STRING, OFF(database_url), 0, 0,
     "sqlite:./data/presence.db", "sqlite:PATH (embedded) or mongodb://..."},
    {"JWT_SECRET", "--jwt-secret", CFG_STRING, OFF(jwt_secret), 0, 0, NULL,
     "HS256 secret (required, except with --dev)"},
    {"CORS_ORIGINS", "--cors-origins", CFG_STRING, OFF(cors_origins), 0, 0, "",
     "comma-separated allowed origins, or *; empty sends no CORS header"},
    {"PING_INTERVAL_MS", "--ping-interval-ms", CFG_MS, OFF(ping_interval_ms), 50, DAY_MS, "25000",
     "Engine.IO ping interval"},
    {"PING_TIMEOUT_MS", "--ping-timeout-ms", CFG_MS, OFF(ping_timeout_ms), 50, DAY_MS, "10000",
     "Engine.IO pong deadline"},
    {"CONNECT_TIMEOUT_MS", "--connect-timeout-ms", CFG_MS, OFF(connect_timeout_ms), 50, DAY_MS,
     "45000", "time allowed for the Socket.IO CONNECT"},
    {"ACTIVITY_THROTTLE_MS", "--activity-throttle-ms", CFG_MS, OFF(activity_throttle_ms), 0, DAY_MS,
     "60000", "at most one lastActiveAt write per person per this window"},
    {"OFFLINE_THRESHOLD_MS", "--offline-threshold-ms", CFG_MS, OFF(offline_threshold_ms), 1,
     30 * DAY_MS, "300000", "idle time after which an unconnected online person is a zombie"},
    {"MAINTENANCE_INTERVAL_MS", "--maintenance-interval-ms", CFG_MS, OFF(maintenance_interval_ms),
     10, DAY_MS, "60000", "zombie cleanup period"},
    {"AWAY_AFTER_MS", "--away-after-ms", CFG_MS, OFF(away_after_ms), 1, 30 * DAY_MS, "300000",
     "idle time after which an online person is away"},
    {"OFFLINE_AFTER_MS", "--offline-after-ms", CFG_MS, OFF(offline_after_ms), 1, 30 * DAY_MS,
     "1800000", "idle time after which a person is offline"},
    {"DISCONNECT_GRACE_MS", "--disconnect-grace-ms", CFG_MS, OFF(disconnect_grace_ms), 0, DAY_MS,
     "0", "delay before the last disconnect is broadcast (page reloads need not flap)"},
    {"SINGLE_SESSION", "--single-session", CFG_BOOL, OFF(single_session), 0, 1, "0",
     "1: a new connection closes the person's older ones"},
    {"MAX_PAYLOAD_BYTES", "--max-payload-bytes", CFG_MS, OFF(max_payload_bytes), 1024,
     64LL * 1024 * 1024, "1000000", "largest message or body accepted, and per-socket send queue"},
    {"MAX_EVENTS_PER_SEC", "--max-events-per-sec", CFG_INT, OFF(max_events_per_sec), 1, 1000000,
     "50", "client events per connection per second before it is disconnected"},
    {"REQUEST_TIMEOUT_MS", "--request-timeout-ms", CFG_MS, OFF(request_timeout_ms), 100, DAY_MS,
     "10000", "an HTTP request not complete in this time is closed"},
    {"MAX_CONNECTIONS", "--max-connections", CFG_INT, OFF(max_connections), 0, 10000000, "0",
     "connection limit (0: sized from the open-files limit)"},
    {"LOOP_THREADS", "--loop-threads", CFG_INT, OFF(loop_threads), 0, 256, "0",
     "Socket.IO event-loop threads (0: half the cores, at least one)"},
    {"HTTP_THREADS", "--http-threads", CFG_INT, OFF(http_threads), 0, 256, "0",
     "HTTP daemon threads (0: one per core)"},
    {"LOG_LEVEL", "--log-level", CFG_LOGLEVEL, OFF(log_level), 0, 0, "info",
     "debug, info, warn or error"},
};

#define CFG_COUNT (sizeof(cfg_table) / sizeof(cfg_table[0]))

static int set_value(struct gw_config *cfg, const struct cfg_entry *e, const char *v, char *err,
                     size_t errlen)
{
    char *p = (char *)cfg + e->offset;
    switch (e->type) {
    case CFG_STRING:
    case CFG_LOGLEVEL: {
        if (e->type == CFG_LOGLEVEL) {
            enum log_level lvl;
            if (log_level_parse(v, &lvl) != 0) {
                snprintf(err, errlen,
                         "%s: invalid value \"%s\" (expected debug, info, warn or error)", e->env,
                         v);
                return GW_CONFIG_ERR;
            }
        }
        char **s = (char **)p;
        free(*s);
        *s = xstrdup(v);
        return GW_CONFIG_OK;
    }
    case CFG_BOOL: {
        bool b;
        if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
            !strcasecmp(v, "on"))
            b = true;
        else if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
                 !strcasecmp(v, "off") || !strcmp(v, ""))
            b = false;
        else {
            snprintf(err, errlen, "%s: invalid value \"%s\" (expected 0 or 1)", e->env, v);
            return GW_CONFIG_ERR;
        }
        *(bool *)p = b;
        return GW_CONFIG_OK;
    }
    case CFG_INT:
    case CFG_MS: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || n < e->min || n > e->max) {
            snprintf(err, errlen, "%s: invalid value \"%s\" (expected an integer in [%lld, %lld])",
                     e->env, v, (long long)e->min, (long long)e->max);
            return GW_CONFIG_ERR;
        }
        if (e->type == CFG_INT)
            *(int *)p = (int)n;
        else
            *(int64_t *)p = n;
        return GW_CONFIG_OK;
    }
    }
    return GW_CONFIG_ERR;
}

static const struct cfg_entry *find_flag(const char *flag, size_t len)
{
    for (size_t i = 0; i < CFG_COUNT; i++)
        if (strlen(cfg_table[i].flag) == len && strncmp(cfg_table[i].flag, flag, len) == 0)
            return &cfg_table[i];
    return NULL;
}

int gw_config_load(struct gw_config *cfg, int argc, char **argv, gw_env_fn env, void *env_cls,
                   char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CFG_COUNT; i++) {
        const struct cfg_entry *e = &cfg_table[i];
        const char *v = env ? env(e->env, env_cls) : NULL;
        if (v == NULL)
            v = e->def;
        if (v != NULL && set_value(cfg, e, v, err, errlen) != GW_CONFIG_OK)
            goto fail;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            gw_config_free(cfg);
            return GW_CONFIG_HELP;
        }
        if (!strcmp(a, "--dev")) {
            cfg->dev = true;
            continue;
        }
        if (!strcmp(a, "--conformance")) {
            cfg->conformance = true;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const struct cfg_entry *e = strncmp(a, "--", 2) == 0 ? find_flag(a, len) : NULL;
        if (e == NULL) {
            snprintf(err, errlen, "unknown argument \"%.*s\" (see --help)", (int)len, a);
            goto fail;
        }
        const char *v;
        if (eq)
            v = eq + 1;
        else if (e->type == CFG_BOOL)
            v = "1";
        else if (i + 1 < argc)
            v = argv[++i];
        else {
            snprintf(err, errlen, "%s: %s needs a value", e->env, e->flag);
            goto fail;
        }
        if (set_value(cfg, e, v, err, errlen) != GW_CONFIG_OK)
            goto fail;
    }
    if (cfg->jwt_secret != NULL && cfg->jwt_secret[0] == '\0') {
        free(cfg->jwt_secret);
        cfg->jwt_secret = NULL;
    }
    if (cfg->jwt_secret == NULL && !cfg->dev && !cfg->conformance) {
        snprintf(err, errlen, "JWT_SECRET: required (set it, or run with --dev for development)");
        goto fail;
    }
    if (cfg->jwt_secret != NULL && strlen(cfg->jwt_secret) < 16) {
        snprintf(err, errlen, "JWT_SECRET: too short (at least 16 characters)");
        goto fail;
    }
    if (cfg->away_after_ms > cfg->offline_after_ms) {
        snprintf(err, errlen, "AWAY_AFTER_MS: must not exceed OFFLINE_AFTER_MS (%lld)",
                 (long long)cfg->offline_after_ms);
        goto fail;
    }
    if (strncmp(cfg->database_url, "sqlite:", 7) != 0 &&
        strncmp(cfg->database_url, "mongodb://", 10) != 0 &&
        strncmp(cfg->database_url, "mongodb+srv://", 14) != 0) {
        snprintf(err, errlen,
                 "DATABASE_URL: unsupported \"%s\" (expected sqlite:PATH or mongodb://...)",
                 cfg->database_url);
        goto fail;
    }
    cfg->jwt_secret_len = cfg->jwt_secret ? strlen(cfg->jwt_secret) : 0;
    return GW_CONFIG_OK;
fail:
    gw_config_free(cfg);
    return GW_CONFIG_ERR;
}

void gw_config_free(struct gw_config *cfg)
{
    for (size_t i = 0; i < CFG_COUNT; i++) {
        const struct cfg_entry *e = &cfg_table[i];
        if (e->type == CFG_STRING || e->type == CFG_LOGLEVEL) {
            char **s = (char **)((char *)cfg + e->offset);
            if (*s != NULL && e->offset == OFF(jwt_secret))
                explicit_bzero(*s, strlen(*s));
            free(*s);
            *s = NULL;
        }
    }
}

void gw_config_usage(FILE *out, const char *prog)
{
    fprintf(out,
            "Usage: %s [--flag value ...] [--dev] [--conformance]\n"
            "       %s token --user ID [--role ROLE] [--ttl SECONDS]\n\n"
            "presence-gateway: real-time user presence over Socket.IO, REST and Prometheus.\n"
            "Every setting is an environment variable or its --flag (the flag wins).\n\n",
            prog, prog);
    for (size_t i = 0; i < CFG_COUNT; i++) {
        const struct cfg_entry *e = &cfg_table[i];
        char range[64] = "";
        if (e->type == CFG_INT || e->type == CFG_MS)
            snprintf(range, sizeof(range), " [%lld..%lld]", (long long)e->min, (long long)e->max);
        fprintf(out, "  %-26s %-28s %s (default: %s)%s\n", e->env, e->flag, e->help,
                e->def ? (e->def[0] ? e->def : "\"\"") : "none", range);
    }
    fprintf(out,
            "\n  --dev            generate a JWT secret for this run and print an admin token\n"
            "  --conformance    serve the Engine.IO/Socket.IO protocol test suites' server\n"
            "  --help           this text\n");
}
