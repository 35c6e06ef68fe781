/*
 * engine.c - the Socket.IO engine's lifecycle, its handshake workers and the entry points of
 * socketio.h that other threads call (admin kick, member added, live connections, the
 * maintenance broadcast, shutdown).
 *
 * DESIGN
 *  - Loop threads (cfg->loop_threads, 0 = half the cores) own the sockets (loop.c). Nothing
 *    blocking runs there: authentication and membership checks read the store, so they run
 *    on a few handshake worker threads fed by one FIFO (mutex + condition variable, Redis
 *    bio.c style), and the result goes back to the loop through its MPSC queue.
 *  - Calls from other threads never touch a loop's connections: they post messages. Only
 *    sio_engine_disconnect_user waits, with a bound, for every loop to answer.
 *  - Shutdown: every loop says goodbye to its connections (41, close 1001), flushes for at
 *    most a second, detaches them without grace (store writes offline, broadcasts) and exits;
 *    persons still inside a grace are set offline last.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xmalloc.h"
#include "socketio/sio_internal.h"

#define SIO_WORKERS 2
#define KICK_WAIT_MS 2000

/* ---- workers -------------------------------------------------------------------------- */

void sio__worker_push(struct sio_engine *e, struct sio_msg *m)
{
    m->next = NULL;
    pthread_mutex_lock(&e->wmu);
    if (e->wtail != NULL)
        e->wtail->next = m;
    else
        e->whead = m;
    e->wtail = m;
    bool wake = e->widle > 0;
    pthread_mutex_unlock(&e->wmu);
    /* After the unlock, so that the woken worker does not block at once on wmu (a second
     * context switch per job); and only when a worker sleeps: busy ones find it themselves. */
    if (wake)
        pthread_cond_signal(&e->wcond);
}

bool sio__auth_run(struct sio_engine *e, struct sio_msg *m, bool cached)
{
    struct auth_result res;
    memset(&res, 0, sizeof(res));
    int64_t now_s = util_now_ms() / 1000;
    /* Before the reads: a ticket left at this person's disconnect is only as good as them. */
    m->ticket_stamp = store_ticket_stamp(e->store);
    int rc = cached ? auth_authenticate_cached(e->auth, m->jwt, m->session, false, now_s, &res)
                    : auth_authenticate(e->auth, m->jwt, m->session, false, now_s, &res);
    if (rc == AUTH_ERR_WOULD_BLOCK && cached) {
        struct store_id_list convs = {0};
        if (auth_authenticate_ticket(e->auth, &res, &convs) != 0) {
            auth_result_clear(&res);
            return false;
        }
        m->person = res.person;
        m->convs = convs;
        m->rc = 0;
        m->type = SIO_MSG_AUTH_RESULT;
        return true;
    }
    if (rc == AUTH_ERR_WOULD_BLOCK)
        return false;
    if (rc == 0 && !res.has_person)
        rc = AUTH_ERR_UNKNOWN_PERSON;
    if (rc == 0) {
        struct store_id_list convs = {0};
        int src = cached ? store_person_conversations_cached(e->store, &res.person, &convs)
                         : store_person_conversations(e->store, &res.person, &convs);
        if (src == STORE_ERR_WOULD_BLOCK) {
            auth_result_clear(&res);
            return false;
        }
        if (src != 0) {
            rc = AUTH_ERR_STORE;
        } else {
            /* the person moves into m: no copy of its strings */
            m->person = res.person;
            memset(&res.person, 0, sizeof(res.person));
            m->convs = convs;
        }
    }
    auth_result_clear(&res);
    m->rc = rc;
    m->type = SIO_MSG_AUTH_RESULT;
    return true;
}

static void job_auth(struct sio_engine *e, struct sio_msg *m)
{
    sio__auth_run(e, m, false);
    sio__free_secret(m->jwt);
    sio__free_secret(m->session);
    m->jwt = m->session = NULL;
}

static void job_join(struct sio_engine *e, struct sio_msg *m)
{
    struct store_person p;
    memset(&p, 0, sizeof(p));
    int rc = store_person_get(e->store, m->person_id, &p);
    bool ok = false;
    if (rc == 0)
        rc = store_is_member(e->store, m->cid, &p, &ok);
    if (rc == STORE_ERR_NOT_FOUND) {
        rc = 0;
        ok = false;
    }
    store_person_clear(&p);
    m->rc = rc;
    m->ok = ok;
    m->type = SIO_MSG_JOIN_RESULT;
}

static void *worker_main(void *arg)
{
    struct sio_engine *e = arg;
    util_thread_name("auth");
    for (;;) {
        pthread_mutex_lock(&e->wmu);
        while (e->whead == NULL && !e->wstop) {
            e->widle++;
            pthread_cond_wait(&e->wcond, &e->wmu);
            e->widle--;
        }
        struct sio_msg *m = e->whead;
        if (m == NULL) {
            pthread_mutex_unlock(&e->wmu);
            return NULL;
        }
        e->whead = m->next;
        if (e->whead == NULL)
            e->wtail = NULL;
        pthread_mutex_unlock(&e->wmu);
        struct sio_loop *l = m->loop;
        if (m->type == SIO_JOB_AUTH)
            job_auth(e, m);
        else
            job_join(e, m);
        sio__mpsc_push(&l->q, m);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------ */

struct sio_engine *sio_engine_new(const struct gw_config *cfg, struct store *store,
                                  struct auth_ctx *auth, struct throttle *throttle)
{
    struct sio_engine *e = xcalloc(1, sizeof(*e));
    /* --conformance: the test suites' timings (conformance.c) */
    e->cfg = cfg->conformance ? sio__conformance_config(cfg) : cfg;
    e->store = store;
    e->auth = auth;
    e->throttle = throttle;
    /* By default half the cores: the kernel's TCP work (a loopback send pays for the
     * receiver too), the handshake workers and the writer need the rest.
     * On 2 cores one loop measured 10-25 % less CPU per delivery and per connect than two,
     * and a lower fan-out p99 (bench/results). */
    e->nloops = cfg->loop_threads > 0 ? cfg->loop_threads : (int)sysconf(_SC_NPROCESSORS_ONLN) / 2;
    if (e->nloops < 1)
        e->nloops = 1;
    if (e->nloops > 64)
        e->nloops = 64;
    struct rlimit rl;
    e->fd_limit = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        e->fd_limit = (size_t)rl.rlim_cur;
    if (e->fd_limit > (1u << 22))
        e->fd_limit = 1u << 22;
    pthread_mutex_init(&e->wmu, NULL);
    pthread_cond_init(&e->wcond, NULL);
    pthread_mutex_init(&e->polls_mu, NULL);
    sio__registry_init(e);
    e->adapter = sio__adapter_local(e);
    e->loops = xcalloc((size_t)e->nloops, sizeof(*e->loops));
    for (int i = 0; i < e->nloops; i++) {
        if (sio__loop_init(e, &e->loops[i], i) != 0) {
            e->nloops = i + 1;
            sio_engine_free(e);
            return NULL;
        }
    }
    return e;
}

int sio_engine_start(struct sio_engine *e)
{
    atomic_store(&e->running, true);
    for (int i = 0; i < e->nloops; i++) {
        if (pthread_create(&e->loops[i].thread, NULL, sio__loop_main, &e->loops[i]) != 0) {
            log_warnx("sio_engine_start: cannot start loop thread %d", i);
            return -1;
        }
        e->loops[i].started = true;
    }
    e->workers = xcalloc(SIO_WORKERS, sizeof(*e->workers));
    for (int i = 0; i < SIO_WORKERS; i++) {
        if (pthread_create(&e->workers[i], NULL, worker_main, e) != 0) {
            log_warnx("sio_engine_start: cannot start a handshake worker");
            return -1;
        }
        e->nworkers++;
    }
    log_info("socketio: %d loop threads, %d handshake workers, ping %lld/%lld ms", e->nloops,
             e->nworkers, (long long)e->cfg->ping_interval_ms, (long long)e->cfg->ping_timeout_ms);
    return 0;
}

static void workers_stop(struct sio_engine *e)
{
    pthread_mutex_lock(&e->wmu);
    e->wstop = true;
    pthread_cond_broadcast(&e->wcond);
    pthread_mutex_unlock(&e->wmu);
    for (int i = 0; i < e->nworkers; i++)
        pthread_join(e->workers[i], NULL);
    e->nworkers = 0;
}

int sio_engine_loops(const struct sio_engine *e)
{
    return e->nloops;
}

bool sio_engine_host(struct sio_engine *e, int i, const struct sio_hosted *h)
{
    if (i < 0 || i >= e->nloops || !e->loops[i].started || !atomic_load(&e->running))
        return false;
    struct sio_msg *m = xcalloc(1, sizeof(*m));
    m->type = SIO_MSG_HOST;
    m->fd = -1;
    m->host = *h;
    sio__mpsc_push(&e->loops[i].q, m);
    return true;
}

void sio_engine_shutdown(struct sio_engine *e)
{
    if (e == NULL || !atomic_load(&e->running))
        return;
    for (int i = 0; i < e->nloops; i++) {
        if (!e->loops[i].started)
            continue;
        struct sio_msg *m = xcalloc(1, sizeof(*m));
        m->type = SIO_MSG_SHUTDOWN;
        m->fd = -1;
        sio__mpsc_push(&e->loops[i].q, m);
    }
    for (int i = 0; i < e->nloops; i++) {
        if (e->loops[i].started) {
            pthread_join(e->loops[i].thread, NULL);
            e->loops[i].started = false;
        }
    }
    atomic_store(&e->running, false);
    /* A polling client with no GET out when the goodbye was queued gets it (41, then the
     * close packet) on its next GET, as the reference server waits for it too. Those
     * sessions stay mapped until that GET takes them, and the answer is on the wire once MHD
     * reports the request completed; give them a bounded moment while the HTTP side still
     * accepts (main quiesces it after this call). */
    int64_t until =
        sio__mono_ms() + (e->cfg->ping_timeout_ms < 2000 ? e->cfg->ping_timeout_ms : 2000);
    for (;;) {
        pthread_mutex_lock(&e->polls_mu);
        unsigned left = HASH_COUNT(e->polls);
        pthread_mutex_unlock(&e->polls_mu);
        if ((left == 0 && atomic_load(&e->poll_requests) == 0) || sio__mono_ms() >= until)
            break;
        usleep(5000);
    }
    workers_stop(e);
    sio__registry_flush_grace(e);
    e->adapter.close(e->adapter.cls);
    log_info("socketio: stopped");
}

void sio_engine_free(struct sio_engine *e)
{
    if (e == NULL)
        return;
    sio_engine_shutdown(e);
    workers_stop(e);
    /* Jobs nobody ran (the workers stopped first) */
    while (e->whead != NULL) {
        struct sio_msg *m = e->whead;
        e->whead = m->next;
        sio_msg_free(m);
    }
    for (int i = 0; i < e->nloops; i++)
        sio__loop_destroy(&e->loops[i]);
    free(e->loops);
    free(e->workers);
    struct sio_poll *p, *ptmp;
    HASH_ITER(hh, e->polls, p, ptmp)
    {
        HASH_DEL(e->polls, p);
        sio__poll_release(p);
    }
    pthread_mutex_destroy(&e->polls_mu);
    sio__registry_destroy(e);
    pthread_mutex_destroy(&e->wmu);
    pthread_cond_destroy(&e->wcond);
    free(e);
}

/* ---- calls from other threads --------------------------------------------------------- */

void sio__kick_wait_done(struct sio_kick_wait *w, int closed)
{
    pthread_mutex_lock(&w->mu);
    w->closed += closed;
    w->pending--;
    bool last = --w->refs == 0;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    if (last) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cond);
        free(w);
    }
}

int sio_engine_disconnect_user(struct sio_engine *e, const char *person_id)
{
    if (person_id == NULL || strlen(person_id) > OID_HEX_LEN || !atomic_load(&e->running))
        return 0;
    struct sio_kick_wait *w = xcalloc(1, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    w->pending = e->nloops;
    w->refs = e->nloops + 1;
    for (int i = 0; i < e->nloops; i++) {
        struct sio_msg *m = xcalloc(1, sizeof(*m));
        m->type = SIO_MSG_KICK;
        m->fd = -1;
        snprintf(m->person_id, sizeof(m->person_id), "%s", person_id);
        m->announce = true;
        m->skip_grace = true;
        m->wait = w;
        sio__mpsc_push(&e->loops[i].q, m);
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += KICK_WAIT_MS / 1000;
    pthread_mutex_lock(&w->mu);
    while (w->pending > 0) {
        if (pthread_cond_timedwait(&w->cond, &w->mu, &dl) == ETIMEDOUT)
            break;
    }
    int closed = w->closed;
    bool last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cond);
        free(w);
    }
    /* Connections closed just before (a page reload) may have left the person inside its
     * grace: the kick ends it. */
    sio__registry_end_grace(e, person_id);
    log_info("socketio: admin disconnect user=%s connections=%d", person_id, closed);
    return closed;
}

void sio_engine_member_added(struct sio_engine *e, const char *conversation_id, const char *user_id)
{
    if (conversation_id == NULL || user_id == NULL || strlen(conversation_id) > OID_HEX_LEN ||
        strlen(user_id) > OID_HEX_LEN || !atomic_load(&e->running))
        return;
    sio__registry_member_added(e, conversation_id, user_id);
    for (int i = 0; i < e->nloops; i++) {
        struct sio_msg *m = xcalloc(1, sizeof(*m));
        m->type = SIO_MSG_MEMBER_ADDED;
        m->fd = -1;
        snprintf(m->cid, sizeof(m->cid), "%s", conversation_id);
        snprintf(m->person_id, sizeof(m->person_id), "%s", user_id);
        sio__mpsc_push(&e->loops[i].q, m);
    }
}

int sio_engine_live_connections(struct sio_engine *e, const char *person_id)
{
    if (e == NULL || person_id == NULL || strlen(person_id) > OID_HEX_LEN)
        return 0;
    return sio__registry_live(e, person_id);
}

void sio_engine_broadcast_status(struct sio_engine *e, const struct store_person *p)
{
    if (e == NULL || p == NULL)
        return;
    struct store_id_list convs = {0};
    if (store_person_conversations(e->store, p, &convs) != 0) {
        log_warnx("socketio: broadcast of user=%s: the store did not give its conversations",
                  p->id);
        return;
    }
    sio__broadcast(e, p->id, p->username, p->is_anonymous, p->is_online, p->last_active_at_ms,
                   p->last_seen_ms, (const char(*)[OID_HEX_LEN + 1]) convs.ids, convs.count,
                   util_mono_ns());
    store_id_list_free(&convs);
}
