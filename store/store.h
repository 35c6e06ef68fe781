/*
 * store.h - the persistent store of persons, conversations and presence (SPEC §3 "Storage").
 *
 * One interface, two backends chosen by the DATABASE_URL scheme: "sqlite:PATH" (embedded
 * default, store_sqlite.c) and "mongodb://" / "mongodb+srv://" (store_mongo.c). Both sit
 * behind struct store_backend (store_backend.h); this front end adds what both share:
 *
 *  - the batching writer: one thread that drains a FIFO of presence writes (online, offline,
 *    activity) and applies many per transaction / bulk write. Hot paths (MHD threads, loop
 *    threads) only enqueue and never wait. Queued writes reach the backend within one second;
 *    store_flush() and store_close() drain the queue. When the backend fails, the batch stays
 *    at the head of the queue and is retried in order.
 *  - the pending overlay: a read of a person applies the queued, not yet written presence
 *    writes of that person, so a read never shows an older presence than what was enqueued.
 *
 * Person ids are 24-hex ObjectId strings, unique across users and anonymous participants.
 * Times are ms since the epoch, 0 = null.
 *
 * Threads: every function may be called from any thread except where noted. Reads and
 * provisioning calls block on the backend (microseconds for SQLite, a round trip for
 * MongoDB): never call them on a Socket.IO loop thread. The enqueue calls
 * (store_presence_*) never block.
 *
 * Errors: functions returning int give 0 or one of the STORE_ERR_* codes below. On error the
 * out-parameters are untouched.
 */
#ifndef GW_STORE_H
#define GW_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define STORE_ERR_NOT_FOUND (-1)   /* no such row/document */
#define STORE_ERR_CONFLICT (-2)    /* unique key taken (username, id) */
#define STORE_ERR_INVALID (-3)     /* argument refused (bad id, bad URL, missing field) */
#define STORE_ERR_UNAVAILABLE (-4) /* backend down, slow or failing: answer 503 */
#define STORE_ERR_INTERNAL (-5)    /* anything else (logged) */
#define STORE_ERR_WOULD_BLOCK (-6) /* *_cached: the answer needs the backend */

#define STORE_ROLE_LEN 16

/* A user or an anonymous participant with its presence fields. Strings are owned by the
 * struct and released by store_person_clear(); NULL means absent. */
struct store_person {
    char id[OID_HEX_LEN + 1];
    bool is_anonymous;
    char *username;
    /* users only */
    char *display_name;
    char *first_name;
    char *last_name;
    char *email;
    char *avatar;
    char role[STORE_ROLE_LEN]; /* "USER", "ADMIN", "BIGBOSS"; "" for anonymous */
    bool is_active;            /* anonymous participants are always active */
    /* anonymous only */
    char conversation_id[OID_HEX_LEN + 1]; /* "" for users */
    /* presence */
    bool is_online;
    int64_t last_active_at_ms;
    int64_t last_seen_ms;
};

/* Frees the strings of p (not p itself) and zeroes it. Safe on a zeroed struct. */
void store_person_clear(struct store_person *p);
/* Deep copy of src into dst (dst is overwritten, not cleared first). */
void store_person_copy(struct store_person *dst, const struct store_person *src);

struct store_conversation {
    char id[OID_HEX_LEN + 1];
    char *title; /* may be NULL */
    char *type;  /* "group" by default */
};
void store_conversation_clear(struct store_conversation *c);

/* A list of persons, owned by the caller; release with store_person_list_free(). */
struct store_person_list {
    struct store_person *items;
    size_t count;
};
void store_person_list_free(struct store_person_list *l);

/* A list of ids, owned by the caller; release with store_id_list_free(). */
struct store_id_list {
    char (*ids)[OID_HEX_LEN + 1];
    size_t count;
};
void store_id_list_free(struct store_id_list *l);

/* Counters for /metrics and stats. Monotonic except the queue gauge. */
struct store_stats {
    uint64_t
        rows_written; /* rows updated by the writer and by maintenance (meeshy_db_updates_total) */
    uint64_t batches_written; /* transactions / bulk writes applied by the writer */
    uint64_t write_failures;  /* batches that failed and were kept for retry */
    uint64_t queue_length;    /* writes queued now, not yet applied */
    uint64_t queue_dropped;   /* writes refused because the queue bound was hit */
};

struct store;

/* --- lifecycle (main thread) --------------------------------------------------------------- */

/* Opens the backend named by url ("sqlite:PATH", "mongodb://…", "mongodb+srv://…"), creates
 * the schema or indexes when missing, and starts the writer thread. For SQLite the parent
 * directory of PATH is created when missing. Errors: STORE_ERR_INVALID (unknown scheme, bad
 * URL), STORE_ERR_UNAVAILABLE (cannot open/connect), STORE_ERR_INTERNAL. */
int store_open(const char *url, struct store **out);
/* Drains the writer queue (retrying for at most timeout_ms when the backend fails), stops the
 * writer thread and closes the backend. Returns 0, or STORE_ERR_UNAVAILABLE when writes were
 * left unwritten after timeout_ms (they are logged). */
int store_close(struct store *s, int64_t timeout_ms);
/* "sqlite" or "mongodb". */
const char *store_backend_name(const struct store *s);

/* --- reads (any thread but a loop thread; block on the backend) ------------------------------ */

/* True when the backend answers a trivial query now (/readyz). */
bool store_ping(struct store *s);
/* A user or anonymous participant by id. NOT_FOUND when neither exists. The pending overlay
 * is applied. */
int store_person_get(struct store *s, const char *id, struct store_person *out);
/* An anonymous participant by its session token. */
int store_person_by_session_token(struct store *s, const char *token, struct store_person *out);
/* The ids of the conversations the person belongs to: for a user its memberships, for an
 * anonymous participant its one conversation. */
int store_person_conversations(struct store *s, const struct store_person *p,
                               struct store_id_list *out);
/* Whether the person is a member of the conversation (users: a member row; anonymous: its own
 * conversation). *out false and return 0 when the conversation does not exist. */
int store_is_member(struct store *s, const char *conversation_id, const struct store_person *p,
                    bool *out);
int store_conversation_get(struct store *s, const char *id, struct store_conversation *out);
/* Users who are members and anonymous participants of the conversation, unordered (the caller
 * sorts), overlay applied. NOT_FOUND when the conversation does not exist. */
int store_conversation_participants(struct store *s, const char *conversation_id,
                                    struct store_person_list *out);
/* The ids of every member of the conversation: its users and its anonymous participants. */
int store_conversation_member_ids(struct store *s, const char *conversation_id,
                                  struct store_id_list *out);
/* The same three reads answered from the cache only, for a loop thread that must not block:
 * STORE_ERR_WOULD_BLOCK when the answer needs the backend (the blocking read then fills the
 * cache). A hit is what the blocking read would have answered from the cache. */
int store_person_get_cached(struct store *s, const char *id, struct store_person *out);
int store_person_by_session_token_cached(struct store *s, const char *token,
                                         struct store_person *out);
int store_person_conversations_cached(struct store *s, const struct store_person *p,
                                      struct store_id_list *out);
/* Counts persons stored as online: users and anonymous separately. */
int store_count_online(struct store *s, uint64_t *users, uint64_t *anonymous);

/* --- provisioning (any thread but a loop thread; synchronous) -------------------------------- */

struct store_user_new {
    const char *id; /* NULL: a new ObjectId is generated */
    const char *username;
    const char *display_name, *first_name, *last_name, *email, *avatar; /* NULL allowed */
    const char *role;                                                   /* NULL: "USER" */
    bool is_active;
};
/* Creates a user (offline, never active). CONFLICT when the id or username is taken. */
int store_user_create(struct store *s, const struct store_user_new *u, struct store_person *out);
/* Creates a conversation; id NULL generates one, type NULL means "group". CONFLICT on id. */
int store_conversation_create(struct store *s, const char *id, const char *title, const char *type,
                              struct store_conversation *out);
/* Adds a user to a conversation. *added is 1, or 0 when already a member. NOT_FOUND when the
 * conversation or the user does not exist. */
int store_member_add(struct store *s, const char *conversation_id, const char *user_id, int *added);
/* Counts the user members of a conversation. */
int store_member_count(struct store *s, const char *conversation_id, uint64_t *out);
/* Creates an anonymous participant in a conversation with a new random session token (64 hex
 * characters) returned in token_out (65 bytes). NOT_FOUND when the conversation does not
 * exist. */
int store_anonymous_create(struct store *s, const char *conversation_id, const char *username,
                           struct store_person *out, char token_out[65]);

/* --- presence writes (any thread; never block; applied by the writer thread) ----------------- */

/* isOnline=true, lastActiveAt=at_ms. */
void store_presence_online(struct store *s, const char *id, bool is_anonymous, int64_t at_ms);
/* isOnline=false, lastSeen=at_ms. */
void store_presence_offline(struct store *s, const char *id, bool is_anonymous, int64_t at_ms);
/* lastActiveAt=at_ms (the throttled activity write). */
void store_presence_activity(struct store *s, const char *id, bool is_anonymous, int64_t at_ms);
/* Blocks until every write enqueued before the call is applied, or timeout_ms passes.
 * Returns 0, or STORE_ERR_UNAVAILABLE on timeout. */
int store_flush(struct store *s, int64_t timeout_ms);

/* --- maintenance (maintenance thread or main thread; synchronous) ---------------------------- */

/* Persons stored with isOnline=true and lastActiveAt < cutoff_ms (or null), via the index of
 * the persons online (SQLite: partial, on lastActiveAt); the pending overlay is applied (a person
 * whose queued write made it offline or active is left out). */
int store_zombies_find(struct store *s, int64_t cutoff_ms, struct store_person_list *out);
/* Startup reconciliation (SPEC §2.5): every person stored online is set offline with lastSeen =
 * its lastActiveAt, or now_ms when that is null. *count receives the rows changed. Call before
 * the listener opens. */
int store_reconcile_startup(struct store *s, int64_t now_ms, uint64_t *count);

void store_get_stats(struct store *s, struct store_stats *out);

/* --- person read cache (any thread) ------------------------------------------------------------
 */

/* store_person_get and store_person_by_session_token keep the rows they read from the backend
 * in a bounded cache (STORE_CACHE_MAX_ENTRIES persons and as many session tokens, sharded),
 * store_person_conversations the conversation ids it read (as many lists),
 * so that a REST request or a handshake by a known person does not touch the database. The
 * writer updates the presence fields of a cached row when it applies a batch, provisioning
 * calls and the startup reconciliation drop what they change, and the pending overlay still
 * applies on top: presence read through the cache is as exact as without it. A row lives
 * ttl_ms (default STORE_CACHE_TTL_MS) after it was read: that bounds how long a change made by
 * another writer of a shared database (role, isActive, a profile field) stays unseen. */
#define STORE_CACHE_TTL_MS 2000
#define STORE_CACHE_MAX_ENTRIES 65536

struct store_cache_stats {
    uint64_t hits;         /* person reads answered from the cache */
    uint64_t misses;       /* person reads that went to the backend (absent or expired row) */
    uint64_t entries;      /* persons cached now */
    uint64_t tokens;       /* session tokens cached now */
    uint64_t evictions;    /* rows dropped because their shard was full */
    uint64_t ticket_hits;  /* reconnects answered by a ticket */
    uint64_t tickets;      /* tickets held now */
    uint64_t change_polls; /* polls of the backend's changes_version done */
};

/* Sets the time a cached row is trusted; 0 disables the cache (every read goes to the
 * backend; rows already cached are dropped). Takes effect for the reads that start after it. */
void store_cache_set_ttl(struct store *s, int64_t ttl_ms);
void store_cache_get_stats(struct store *s, struct store_cache_stats *out);

/* --- reconnect tickets (any thread) -------------------------------------------------------------
 *
 * When a user's last connection closes, the registry leaves a ticket: its username, lastSeen
 * and conversations as they were when it connected. A reconnect within STORE_TICKET_TTL_MS
 * takes it instead of reading the backend, if nothing since could have changed them: the
 * backend reports changes by anyone (SQLite: triggers on identity and membership changes,
 * polled every STORE_WATCH_MS while tickets exist), and a change becomes visible to the
 * reconnects that start STORE_TICKET_FRESH_MS after it. A ticket answers a Socket.IO
 * handshake only (id, username, lastSeen, conversations; is_active true), never a REST read.
 * A backend that cannot report changes (MongoDB today) gets no tickets. */
#define STORE_TICKET_TTL_MS 10000
#define STORE_WATCH_MS 100
#define STORE_TICKET_FRESH_MS 500

/* The stamp to take before the reads a ticket will be built from; 0 when tickets are off. */
uint64_t store_ticket_stamp(struct store *s);
/* Leaves a ticket for user id (convs copied); dropped when stamp is 0 or no longer current. */
void store_ticket_put(struct store *s, uint64_t stamp, const char *id, const char *username,
                      int64_t last_seen_ms, const struct store_id_list *convs);
/* Takes id's ticket (it is gone after the call): 0 and *out, *convs filled (free them) when it
 * was still good, STORE_ERR_NOT_FOUND otherwise. Never touches the backend. */
int store_ticket_take(struct store *s, const char *id, struct store_person *out,
                      struct store_id_list *convs);

#endif
