/*
 * mongo_harness.c - drives the MongoDB backend step by step for the mockupdb scripts in
 * tests/mongo/. The script plays the server, asserts each command the backend sends and
 * scripts its reply; this program runs the steps named on its command line and prints one
 * line per result on stdout, which the script checks too.
 *
 * Built twice: with HARNESS_FRONTEND the steps go through the store front end (store_open,
 * store_presence_*, store_flush: the batching writer and its retries); without it, through
 * store__mongo_ops directly (one apply_batch per "flush").
 *
 * usage: mongo_harness URL STEP...
 *   online|offline|activity ID ANON MS   enqueue one presence write (ANON 0 or 1); prints
 *                                        "queued STEP"
 *   activity-many N ANON MS              activity of the ids 1..N written as 24-hex
 *   flush                                apply what is queued: prints "flush RC ROWS" (ROWS:
 *                                        of this batch, or written in total for the front end)
 *   wait                                 prints "waiting", reads one line from stdin
 *   zombies CUTOFF_MS                    prints "zombies COUNT" then "zombie ID ANON"
 *   reconcile NOW_MS                     prints "reconciled RC COUNT"
 *   ping                                 prints "ping 0|1"
 *   get ID                               prints "get RC [USERNAME ONLINE LASTACTIVE LASTSEEN]"
 * The store is opened first ("open RC") and closed last ("closed RC").
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "store/store_backend.h"

#ifdef HARNESS_FRONTEND
typedef struct store handle_t;
#else
typedef struct store_backend handle_t;

/* The list helpers live in store.c, which this variant does not link. */
void store_person_clear(struct store_person *p)
{
    free(p->username);
    free(p->display_name);
    free(p->first_name);
    free(p->last_name);
    free(p->email);
    free(p->avatar);
    memset(p, 0, sizeof *p);
}

void store_person_list_free(struct store_person_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        store_person_clear(&l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

void store_id_list_free(struct store_id_list *l)
{
    free(l->ids);
    l->ids = NULL;
    l->count = 0;
}

static struct store_write *pending;
static size_t npending, cappending;
#endif

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void enqueue(handle_t *h, const char *kind, const char *id, bool anon, int64_t ms)
{
#ifdef HARNESS_FRONTEND
    if (strcmp(kind, "online") == 0)
        store_presence_online(h, id, anon, ms);
    else if (strcmp(kind, "offline") == 0)
        store_presence_offline(h, id, anon, ms);
    else
        store_presence_activity(h, id, anon, ms);
#else
    (void)h;
    if (npending == cappending) {
        cappending = cappending ? cappending * 2 : 16;
        pending = xrealloc(pending, cappending * sizeof pending[0]);
    }
    struct store_write *w = &pending[npending++];
    memset(w, 0, sizeof *w);
    snprintf(w->id, sizeof w->id, "%s", id);
    w->is_anonymous = anon;
    if (strcmp(kind, "online") == 0) {
        w->set_online = true;
        w->is_online = true;
        w->last_active_at_ms = ms;
    } else if (strcmp(kind, "offline") == 0) {
        w->set_online = true;
        w->is_online = false;
        w->last_seen_ms = ms;
    } else {
        w->last_active_at_ms = ms;
    }
#endif
}

static int need(int i, int n, int argc, const char *step)
{
    if (i + n >= argc) {
        fprintf(stderr, "mongo_harness: %s needs %d arguments\n", step, n);
        exit(2);
    }
    return i + 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s URL STEP...\n", argv[0]);
        return 2;
    }
    log_set_level(LOG_LEVEL_DEBUG);
    handle_t *h = NULL;
#ifdef HARNESS_FRONTEND
    int rc = store_open(argv[1], &h);
#else
    int rc = store__mongo_ops.open(argv[1], &h);
#endif
    out("open %d", rc);
    if (rc != 0)
        return 1;

    for (int i = 2; i < argc; i++) {
        const char *step = argv[i];
        if (strcmp(step, "online") == 0 || strcmp(step, "offline") == 0 ||
            strcmp(step, "activity") == 0) {
            int a = need(i, 3, argc, step);
            enqueue(h, step, argv[a], atoi(argv[a + 1]) != 0, strtoll(argv[a + 2], NULL, 10));
            out("queued %s", step);
            i += 3;
        } else if (strcmp(step, "activity-many") == 0) {
            int a = need(i, 3, argc, step);
            int n = atoi(argv[a]);
            bool anon = atoi(argv[a + 1]) != 0;
            int64_t ms = strtoll(argv[a + 2], NULL, 10);
            for (int k = 1; k <= n; k++) {
                char id[OID_HEX_LEN + 1];
                snprintf(id, sizeof id, "%024x", k);
                enqueue(h, "activity", id, anon, ms);
            }
            out("queued %s", step);
            i += 3;
        } else if (strcmp(step, "wait") == 0) {
            char line[64];
            out("waiting");
            if (fgets(line, sizeof line, stdin) == NULL)
                return 2;
        } else if (strcmp(step, "flush") == 0) {
#ifdef HARNESS_FRONTEND
            rc = store_flush(h, 20000);
            struct store_stats st;
            store_get_stats(h, &st);
            out("flush %d %llu", rc, (unsigned long long)st.rows_written);
#else
            uint64_t rows = 0;
            rc = store__mongo_ops.apply_batch(h, pending, npending, &rows);
            if (rc == 0)
                npending = 0; /* kept on failure, as the front end does */
            out("flush %d %llu", rc, (unsigned long long)rows);
#endif
        } else if (strcmp(step, "zombies") == 0) {
            int a = need(i, 1, argc, step);
            struct store_person_list l = {0};
#ifdef HARNESS_FRONTEND
            rc = store_zombies_find(h, strtoll(argv[a], NULL, 10), &l);
#else
            rc = store__mongo_ops.zombies_find(h, strtoll(argv[a], NULL, 10), &l);
#endif
            out("zombies %d %zu", rc, l.count);
            for (size_t k = 0; k < l.count; k++)
                out("zombie %s %d %s %lld", l.items[k].id, l.items[k].is_anonymous,
                    l.items[k].username ? l.items[k].username : "-",
                    (long long)l.items[k].last_active_at_ms);
            store_person_list_free(&l);
            i += 1;
        } else if (strcmp(step, "reconcile") == 0) {
            int a = need(i, 1, argc, step);
            uint64_t count = 0;
#ifdef HARNESS_FRONTEND
            rc = store_reconcile_startup(h, strtoll(argv[a], NULL, 10), &count);
#else
            rc = store__mongo_ops.reconcile_startup(h, strtoll(argv[a], NULL, 10), &count);
#endif
            out("reconciled %d %llu", rc, (unsigned long long)count);
            i += 1;
        } else if (strcmp(step, "ping") == 0) {
#ifdef HARNESS_FRONTEND
            out("ping %d", store_ping(h));
#else
            out("ping %d", store__mongo_ops.ping(h));
#endif
        } else if (strcmp(step, "get") == 0) {
            int a = need(i, 1, argc, step);
            struct store_person p;
            memset(&p, 0, sizeof p);
#ifdef HARNESS_FRONTEND
            rc = store_person_get(h, argv[a], &p);
#else
            rc = store__mongo_ops.person_get(h, argv[a], &p);
#endif
            if (rc == 0)
                out("get 0 %s %d %d %lld %lld", p.username ? p.username : "-", p.is_anonymous,
                    p.is_online, (long long)p.last_active_at_ms, (long long)p.last_seen_ms);
            else
                out("get %d", rc);
            store_person_clear(&p);
            i += 1;
        } else {
            fprintf(stderr, "mongo_harness: unknown step %s\n", step);
            return 2;
        }
    }
#ifdef HARNESS_FRONTEND
    rc = store_close(h, 5000);
#else
    store__mongo_ops.close(h);
    free(pending);
    rc = 0;
#endif
    out("closed %d", rc);
    return 0;
}
