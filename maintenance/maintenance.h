/*
 * maintenance.h - the maintenance thread: zombie cleanup every MAINTENANCE_INTERVAL_MS, the
 * startup reconciliation, and the stats of GET /api/admin/maintenance/stats (SPEC §2 flows
 * 4–5). It knows nothing of sockets: it asks "is this person live here?" and reports each
 * person it set offline through callbacks the Socket.IO engine registers (the seed's
 * setStatusBroadcastCallback).
 *
 * Threads: maint_new/start/stop on the main thread; maint_run_now and maint_stats_json from
 * any thread but a loop thread (they block on the store).
 */
#ifndef GW_MAINTENANCE_H
#define GW_MAINTENANCE_H

#include <jansson.h>
#include <stdbool.h>

#include "common/config.h"
#include "store/store.h"

/* Live connections of a person on this node (persons with > 0 are never zombies). */
typedef int (*maint_live_fn)(void *cls, const char *person_id);
/* A person was set offline by the cleanup: broadcast user:status (p is borrowed). */
typedef void (*maint_broadcast_fn)(void *cls, const struct store_person *p);

struct maint;

struct maint *maint_new(const struct gw_config *cfg, struct store *store);
void maint_set_callbacks(struct maint *m, maint_live_fn live, maint_broadcast_fn broadcast,
                         void *cls);
/* Startup reconciliation; call before the listener opens. Returns 0 or a STORE_ERR_*. */
int maint_reconcile(struct maint *m);
int maint_start(struct maint *m);
/* Runs a cleanup now; returns {cleaned:[ids], count} (new reference), or NULL on store failure. */
json_t *maint_run_now(struct maint *m);
/* The stats object of SPEC §3 (new reference). */
json_t *maint_stats_json(struct maint *m);
void maint_stop(struct maint *m);
void maint_free(struct maint *m);

#endif
