/*
 * main.c - presence-gateway's entry point: configuration, start order, signals and the
 * orderly shutdown of SPEC §2.6.
 *
 * DESIGN
 * Start: configuration → open-files limit → store (schema, writer thread) → startup
 * reconciliation (before any listener, SPEC §2.5) → auth and throttle → Socket.IO engine
 * (loop threads) → maintenance thread → HTTP daemon → "[READY]". The main thread then only
 * waits on a signalfd (SIGTERM, SIGINT), so no work ever runs in an async signal handler.
 * Stop is the reverse: the engine closes every connection properly and queues the offline
 * writes (polling clients collect their goodbye with one more GET, so the listener stays open
 * until then), the HTTP daemon stops accepting, maintenance stops, the daemon goes, and the store
 * drains its writer queue before the process exits 0 (1 when the store did not take every
 * write within GW_SHUTDOWN_FLUSH_MS: the next start's reconciliation repairs presence).
 * While it stops, a thread keeps reading the signalfd: a second SIGTERM or SIGINT ends the
 * process at once, for an operator who will not wait for a store that does not answer.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "gateway/config.h"
#include "maintenance/maintenance.h"
#include "middleware/auth.h"
#include "middleware/throttle.h"
#include "routes/http.h"
#include "socketio/socketio.h"
#include "store/store.h"

/* Files kept for the store, logs, eventfds, epoll and timers beyond connections. */
#define GW_FD_RESERVE 256
/* Persons the activity throttle remembers at most (≈ 100 B each). */
#define GW_THROTTLE_MAX_ENTRIES (1u << 20)
#define GW_SHUTDOWN_FLUSH_MS 10000

static const char *env_lookup(const char *name, void *cls)
{
    (void)cls;
    return getenv(name);
}

/* Raises the open-files soft limit to the hard one and sizes the connection limit from it. */
static void raise_nofile(struct gw_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_warn("getrlimit(RLIMIT_NOFILE)");
        return;
    }
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            log_warn("setrlimit(RLIMIT_NOFILE, %llu)", (unsigned long long)rl.rlim_max);
            rl.rlim_cur = before;
        }
    }
    long usable = (long)rl.rlim_cur - GW_FD_RESERVE;
    if (usable < 64)
        usable = 64;
    if (cfg->max_connections == 0 || cfg->max_connections > usable)
        cfg->max_connections = (int)usable;
    log_info("open files limit %llu (was %llu, hard %llu): up to %d connections",
             (unsigned long long)rl.rlim_cur, (unsigned long long)before,
             (unsigned long long)rl.rlim_max, cfg->max_connections);
}

/* Runs once shutdown has begun: a second signal exits now, without waiting for the store. */
static void *second_signal_thread(void *arg)
{
    int sfd = (int)(intptr_t)arg;
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = read(sfd, &si, sizeof(si));
        if (n == (ssize_t)sizeof(si))
            break;
        if (n < 0 && errno != EINTR)
            return NULL;
    }
    log_warnx("[SHUTDOWN] second signal %s: exiting now; store writes not yet applied are lost "
              "(the next start reconciles presence)",
              strsignal((int)si.ssi_signo));
    _exit(1);
}

/* `presence-gateway token --user ID [--role ROLE] [--ttl S]`: prints a token alone on a line. */
static int cmd_token(int argc, char **argv)
{
    const char *user = NULL, *role = NULL, *secret = getenv("JWT_SECRET");
    long long ttl = 3600;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("Usage: presence-gateway token --user ID [--role USER|ADMIN|BIGBOSS] "
                   "[--ttl SECONDS (0: no expiry)] [--jwt-secret S]\n"
                   "Prints an HS256 JWT signed with JWT_SECRET.\n");
            return 0;
        }
        if (v == NULL) {
            fprintf(stderr, "token: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--user"))
            user = v;
        else if (!strcmp(a, "--role"))
            role = v;
        else if (!strcmp(a, "--jwt-secret"))
            secret = v;
        else if (!strcmp(a, "--ttl")) {
            char *end;
            errno = 0;
            ttl = strtoll(v, &end, 10);
            if (errno || *end || ttl < 0 || ttl > 10LL * 365 * 86400) {
                fprintf(stderr, "token: --ttl: invalid value \"%s\" (seconds, 0..315360000)\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "token: unknown argument \"%s\"\n", a);
            return 2;
        }
        i++;
    }
    if (user == NULL || user[0] == '\0') {
        fprintf(stderr, "token: --user ID is required\n");
        return 2;
    }
    if (secret == NULL || secret[0] == '\0') {
        fprintf(stderr, "token: JWT_SECRET is not set\n");
        return 2;
    }
    if (role != NULL && strcmp(role, "USER") && strcmp(role, "ADMIN") && strcmp(role, "BIGBOSS")) {
        fprintf(stderr, "token: --role: invalid value \"%s\" (USER, ADMIN or BIGBOSS)\n", role);
        return 2;
    }
    char *tok = auth_mint_jwt(secret, strlen(secret), user, role, ttl, util_now_ms() / 1000);
    if (tok == NULL) {
        fprintf(stderr, "token: could not sign\n");
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}

/* Hook adapters between routes/ and the engine and maintenance. */
struct gw_app {
    struct sio_engine *engine;
    struct maint *maint;
};

static enum MHD_Result hook_engine_request(void *cls, struct MHD_Connection *conn, const char *url,
                                           const char *method, const char *upload_data,
                                           size_t *upload_data_size, void **con_cls)
{
    return sio_engine_http_request(((struct gw_app *)cls)->engine, conn, url, method, upload_data,
                                   upload_data_size, con_cls);
}

static void hook_engine_request_done(void *cls, void *con_cls)
{
    sio_engine_http_request_done(((struct gw_app *)cls)->engine, con_cls);
}

static void ws_handshake_of(const struct http_ws_head *h, struct sio_ws_handshake *out)
{
    out->path = h->path;
    out->query = h->query;
    out->key = h->key;
    out->authorization = h->authorization;
    out->session_token = h->session_token;
}

static bool hook_engine_ws_accepts(void *cls, const struct http_ws_head *h)
{
    struct sio_ws_handshake hs;
    ws_handshake_of(h, &hs);
    return sio_engine_ws_accepts(((struct gw_app *)cls)->engine, &hs);
}

static void hook_engine_ws_take(void *cls, int fd, const struct http_ws_head *h)
{
    struct sio_ws_handshake hs;
    ws_handshake_of(h, &hs);
    sio_engine_ws_take(((struct gw_app *)cls)->engine, fd, &hs);
}

static int hook_engine_loops(void *cls)
{
    return sio_engine_loops(((struct gw_app *)cls)->engine);
}

static bool hook_engine_host(void *cls, int i, const struct http_hosted *w)
{
    struct sio_hosted h = {
        .fd = w->fd, .index = w->index, .run = w->run, .release = w->release, .arg = w->arg};
    return sio_engine_host(((struct gw_app *)cls)->engine, i, &h);
}

static int hook_disconnect_user(void *cls, const char *user_id)
{
    return sio_engine_disconnect_user(((struct gw_app *)cls)->engine, user_id);
}

static void hook_member_added(void *cls, const char *cid, const char *uid)
{
    sio_engine_member_added(((struct gw_app *)cls)->engine, cid, uid);
}

static int hook_live(void *cls, const char *person_id)
{
    return sio_engine_live_connections(((struct gw_app *)cls)->engine, person_id);
}

static json_t *hook_maint_stats(void *cls)
{
    return maint_stats_json(((struct gw_app *)cls)->maint);
}

static json_t *hook_maint_cleanup(void *cls)
{
    return maint_run_now(((struct gw_app *)cls)->maint);
}

static int engine_live(void *cls, const char *person_id)
{
    return sio_engine_live_connections(cls, person_id);
}

static void engine_broadcast(void *cls, const struct store_person *p)
{
    sio_engine_broadcast_status(cls, p);
}

static void print_dev_banner(const struct gw_config *cfg, int port)
{
    char *tok = auth_mint_jwt(cfg->jwt_secret, cfg->jwt_secret_len, "000000000000000000000001",
                              "ADMIN", 24 * 3600, util_now_ms() / 1000);
    fprintf(stdout,
            "\npresence-gateway --dev: a JWT secret was generated for this run only.\n"
            "  JWT_SECRET=%s\n"
            "  admin token (24 h): %s\n"
            "  try: curl -H 'Authorization: Bearer %s' "
            "http://127.0.0.1:%d/api/admin/maintenance/stats\n\n",
            cfg->jwt_secret, tok ? tok : "(signing failed)", tok ? tok : "", port);
    fflush(stdout);
    free(tok);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return cmd_token(argc, argv);

    struct gw_config cfg;
    char err[512];
    int rc = gw_config_load(&cfg, argc, argv, env_lookup, NULL, err, sizeof(err));
    if (rc == GW_CONFIG_HELP) {
        gw_config_usage(stdout, "presence-gateway");
        return 0;
    }
    if (rc != GW_CONFIG_OK) {
        fprintf(stderr, "presence-gateway: %s\n", err);
        return 2;
    }
    enum log_level lvl = LOG_LEVEL_INFO;
    log_level_parse(cfg.log_level, &lvl);
    log_set_level(lvl);
    if (cfg.jwt_secret == NULL) {
        /* --dev (or --conformance, which authenticates nobody): a throw-away secret. */
        char hex[65];
        if (util_random_hex(hex, 32) != 0)
            fatal("cannot generate a JWT secret");
        cfg.jwt_secret = xstrdup(hex);
        cfg.jwt_secret_len = strlen(hex);
        explicit_bzero(hex, sizeof(hex));
    }
    raise_nofile(&cfg);

    /* Signals are taken synchronously through a signalfd by this thread only; every thread
     * created below inherits the blocked mask. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0)
        fatal("signalfd: %s", strerror(errno));

    struct store *store = NULL;
    rc = store_open(cfg.database_url, &store);
    if (rc != 0) {
        log_error("cannot open the store (DATABASE_URL): error %d", rc);
        return 1;
    }
    log_info("store: %s", store_backend_name(store));

    struct maint *maint = maint_new(&cfg, store);
    if (!cfg.conformance && maint_reconcile(maint) != 0) {
        log_error("startup reconciliation failed");
        store_close(store, GW_SHUTDOWN_FLUSH_MS);
        return 1;
    }
    struct auth_ctx *auth = auth_new(cfg.jwt_secret, cfg.jwt_secret_len, store);
    struct throttle *throttle = throttle_new(cfg.activity_throttle_ms, GW_THROTTLE_MAX_ENTRIES);

    struct sio_engine *engine = sio_engine_new(&cfg, store, auth, throttle);
    if (engine == NULL || sio_engine_start(engine) != 0)
        fatal("cannot start the Socket.IO engine");
    maint_set_callbacks(maint, engine_live, engine_broadcast, engine);
    if (!cfg.conformance && maint_start(maint) != 0)
        fatal("cannot start the maintenance thread");

    struct gw_app app = {engine, maint};
    struct http_hooks hooks = {
        .cls = &app,
        .engine_request = hook_engine_request,
        .engine_request_done = hook_engine_request_done,
        .disconnect_user = hook_disconnect_user,
        .member_added = hook_member_added,
        .live_connections = hook_live,
        .maintenance_stats = hook_maint_stats,
        .maintenance_cleanup = hook_maint_cleanup,
        .engine_ws_accepts = hook_engine_ws_accepts,
        .engine_ws_take = hook_engine_ws_take,
        .engine_loops = hook_engine_loops,
        .engine_host = hook_engine_host,
    };
    struct http_server *http = http_start(&cfg, store, auth, throttle, &hooks);
    if (http == NULL)
        fatal("cannot listen on %s:%d", cfg.host, cfg.port);
    int port = http_port(http);
    if (cfg.dev)
        print_dev_banner(&cfg, port);
    log_info("[READY] listening on http://%s:%d (store %s%s)", cfg.host, port,
             store_backend_name(store), cfg.conformance ? ", conformance mode" : "");

    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = read(sfd, &si, sizeof(si));
        if (n == (ssize_t)sizeof(si))
            break;
        if (n < 0 && errno != EINTR)
            fatal("signalfd read: %s", strerror(errno));
    }
    log_info("[SHUTDOWN] signal %s: closing connections and flushing the store",
             strsignal((int)si.ssi_signo));
    int64_t t0 = util_mono_ms();
    pthread_t watcher;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&watcher, &attr, second_signal_thread, (void *)(intptr_t)sfd) != 0)
        log_warnx("[SHUTDOWN] cannot watch for a second signal; stopping anyway");
    pthread_attr_destroy(&attr);
    /* The engine says goodbye first, while the listener still accepts: a polling client
     * collects its goodbye with its next GET, which may come on a new connection. */
    sio_engine_shutdown(engine);
    http_quiesce(http);
    maint_stop(maint);
    http_stop(http);
    rc = store_close(store, GW_SHUTDOWN_FLUSH_MS);
    sio_engine_free(engine);
    maint_free(maint);
    throttle_free(throttle);
    auth_free(auth);
    /* sfd stays open: the second-signal thread may be blocked reading it until exit. */
    log_info("[SHUTDOWN] done in %lld ms%s", (long long)(util_mono_ms() - t0),
             rc == 0 ? "" : " (some store writes could not be flushed)");
    gw_config_free(&cfg);
    return rc == 0 ? 0 : 1;
}
