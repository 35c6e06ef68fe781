/*
 * store_backend.h - the function table each storage backend implements (Redis
 * ConnectionType). store.c owns the writer thread, the queue and the pending overlay, and
 * calls these; a backend only talks to its database.
 *
 * Threads: read and provisioning entries may be called concurrently from many threads (the
 * backend serializes internally if it must: SQLite a connection per thread or a mutex,
 * MongoDB a client pool). apply_batch is called only from the writer thread; zombies_find,
 * set_offline_many and reconcile_startup from the maintenance or main thread.
 *
 * Errors: the STORE_ERR_* codes of store.h. Out-parameters are untouched on error.
 */
#ifndef GW_STORE_BACKEND_H
#define GW_STORE_BACKEND_H

#include "store/store.h"

/* One person's presence update: the fields to set, 0/false meaning "leave unchanged".
 * store.c merges the queued writes of one person within a batch into one such update (an
 * online then an offline becomes isOnline=false with both lastActiveAt and lastSeen), so a
 * batch holds at most one update per person and a backend may apply it unordered. */
struct store_write {
    char id[OID_HEX_LEN + 1];
    bool is_anonymous;
    bool set_online; /* when true, isOnline := is_online */
    bool is_online;
    int64_t last_active_at_ms; /* when non-zero, lastActiveAt := this */
    int64_t last_seen_ms;      /* when non-zero, lastSeen := this */
};

struct store_backend;

struct store_backend_ops {
    const char *name; /* "sqlite", "mongodb" */
    /* url is the whole DATABASE_URL. Creates schema/indexes. */
    int (*open)(const char *url, struct store_backend **out);
    void (*close)(struct store_backend *b);
    bool (*ping)(struct store_backend *b);
    /* A number that changes whenever, since the last call, a person's identity (any field
     * but presence) or a membership may have changed, whoever wrote it; NULL when the
     * backend cannot tell (then store.c trusts nothing it cached for longer than its TTL). */
    int (*changes_version)(struct store_backend *b, uint64_t *out);

    int (*person_get)(struct store_backend *b, const char *id, struct store_person *out);
    int (*person_by_session_token)(struct store_backend *b, const char *token,
                                   struct store_person *out);
    int (*person_conversations)(struct store_backend *b, const struct store_person *p,
                                struct store_id_list *out);
    int (*is_member)(struct store_backend *b, const char *cid, const struct store_person *p,
                     bool *out);
    int (*conversation_get)(struct store_backend *b, const char *id,
                            struct store_conversation *out);
    int (*conversation_participants)(struct store_backend *b, const char *cid,
                                     struct store_person_list *out);
    int (*conversation_member_ids)(struct store_backend *b, const char *cid,
                                   struct store_id_list *out);
    int (*count_online)(struct store_backend *b, uint64_t *users, uint64_t *anonymous);

    int (*user_create)(struct store_backend *b, const struct store_user_new *u,
                       struct store_person *out);
    int (*conversation_create)(struct store_backend *b, const char *id, const char *title,
                               const char *type, struct store_conversation *out);
    /* own[0] and own[1] receive changes_version just before and just after the insert, in
     * its transaction (no other writer in between), when the backend reports changes: what
     * this write alone moved it by. */
    int (*member_add)(struct store_backend *b, const char *cid, const char *uid, int *added,
                      uint64_t own[2]);
    int (*member_count)(struct store_backend *b, const char *cid, uint64_t *out);
    int (*anonymous_create)(struct store_backend *b, const char *cid, const char *username,
                            const char *session_token, struct store_person *out);

    /* Applies the updates, all or nothing where the backend can (one SQLite transaction; one
     * unordered bulk write for MongoDB). *rows receives the rows changed. */
    int (*apply_batch)(struct store_backend *b, const struct store_write *w, size_t n,
                       uint64_t *rows);
    int (*zombies_find)(struct store_backend *b, int64_t cutoff_ms, struct store_person_list *out);
    int (*reconcile_startup)(struct store_backend *b, int64_t now_ms, uint64_t *count);
};

extern const struct store_backend_ops store__sqlite_ops;
extern const struct store_backend_ops store__mongo_ops;

#endif
