/*
 * store_sqlite.c - the embedded SQLite backend (store__sqlite_ops, SPEC §3 "Storage").
 *
 * One database file in WAL mode with synchronous=NORMAL: readers never block the writer and a
 * commit costs no fsync of the database (the WAL is synced at checkpoints). Batching presence
 * writes into one transaction is what makes it fast (STACK-NOTES §5: 350k rows/s in one
 * transaction against about 30k/s with one commit per row).
 *
 * Schema (version 3, PRAGMA user_version): users, anonymous_participants, conversations,
 * members, with camelCase columns as the MongoDB collections have; times are INTEGER ms since
 * the epoch, NULL for null. Both person tables carry a partial index on lastActiveAt of the
 * persons online (WHERE isOnline = 1) for the zombie query, the online counts and the startup
 * reconciliation. Version 3 put it in place of version 2's full (isOnline, lastActiveAt)
 * index: a presence change then costs the index one entry (inserted when the person comes
 * online, removed when they go) instead of a removal and an insertion at two places, and
 * the index holds only the persons online. Version 2 added gateway_changes, one row
 * whose v triggers bump on every change that a cached identity could miss (a person's
 * identity columns updated, a person deleted, a membership added, changed or removed), by any
 * connection of any process; presence columns (isOnline, lastSeen, lastActiveAt) do not fire
 * them. store.c polls v (changes_version) to know that nothing of the kind happened. An
 * older file is brought up to date at open: every statement of the schema is IF NOT EXISTS
 * and the schema ends by dropping the indexes that version 3 replaced.
 *
 * DESIGN
 *
 * Connections are opened with SQLITE_OPEN_NOMUTEX and each one is used by one thread at a
 * time, so a connection needs no lock of its own. They live in a pool: a mutex-protected free
 * list that a caller borrows from for the length of one call, opening a new connection when
 * the list is empty, up to SQ_POOL_MAX (then it waits). Each connection prepares its
 * statements on first use and keeps them (sq_sql[] indexes them). The writer thread also
 * borrows from the pool; it only ever needs one connection, so in steady state the pool holds
 * one connection per thread that reads concurrently.
 *
 * Writes that must see a consistent state (provisioning checks, apply_batch, reconciliation)
 * run in BEGIN IMMEDIATE transactions, which take the write lock up front: a deferred
 * transaction that upgrades from read to write can fail with SQLITE_BUSY at once, without
 * waiting for busy_timeout.
 */
#include "store/store_backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sqlite3.h>

#include "common/log.h"
#include "common/xmalloc.h"

#define SQ_SCHEMA_VERSION 3
#define SQ_POOL_MAX 32
#define SQ_BUSY_TIMEOUT_MS 5000
/* SQLite's own page cache per connection (its default is 2 MiB). Hot reads are cached above
 * it (the person and conversations caches of store.c) and the OS page cache backs it; a big one
 * grows page by page during a burst of handshakes, between the store cache's short-lived rows
 * in the same malloc arenas, and pins them: 2 MiB cost ≈ 140 B per idle connection at 19 500
 * (bench/results), with no measurable gain per connect. */
#define SQ_PAGE_CACHE_KIB 64

/* The body of every gateway_changes trigger. */
#define SQ_BUMP " BEGIN UPDATE gateway_changes SET v = v + 1 WHERE id = 1; END;"

static const char sq_schema[] =
    "CREATE TABLE IF NOT EXISTS users ("
    " id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 24),"
    " username TEXT NOT NULL UNIQUE,"
    " displayName TEXT, firstName TEXT, lastName TEXT, email TEXT, avatar TEXT,"
    " role TEXT NOT NULL DEFAULT 'USER',"
    " isActive INTEGER NOT NULL DEFAULT 1,"
    " isOnline INTEGER NOT NULL DEFAULT 0,"
    " lastSeen INTEGER, lastActiveAt INTEGER,"
    " createdAt INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS users_online ON users (lastActiveAt) WHERE isOnline = 1;"
    "CREATE TABLE IF NOT EXISTS conversations ("
    " id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 24),"
    " title TEXT, type TEXT NOT NULL DEFAULT 'group',"
    " createdAt INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS anonymous_participants ("
    " id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 24),"
    " conversationId TEXT NOT NULL REFERENCES conversations (id),"
    " username TEXT NOT NULL,"
    " sessionToken TEXT NOT NULL UNIQUE,"
    " isActive INTEGER NOT NULL DEFAULT 1,"
    " isOnline INTEGER NOT NULL DEFAULT 0,"
    " lastSeen INTEGER, lastActiveAt INTEGER,"
    " createdAt INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS anonymous_online ON anonymous_participants (lastActiveAt)"
    " WHERE isOnline = 1;"
    "CREATE INDEX IF NOT EXISTS anonymous_conversation ON anonymous_participants (conversationId);"
    "CREATE TABLE IF NOT EXISTS members ("
    " conversationId TEXT NOT NULL REFERENCES conversations (id),"
    " userId TEXT NOT NULL REFERENCES users (id),"
    " joinedAt INTEGER NOT NULL,"
    " PRIMARY KEY (conversationId, userId)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS members_user ON members (userId);"
    "CREATE TABLE IF NOT EXISTS gateway_changes ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO gateway_changes (id, v) VALUES (1, 0);"
    "CREATE TRIGGER IF NOT EXISTS users_identity_changed AFTER UPDATE OF id, username,"
    " displayName, firstName, lastName, email, avatar, role, isActive ON users" SQ_BUMP
    "CREATE TRIGGER IF NOT EXISTS users_deleted AFTER DELETE ON users" SQ_BUMP
    "CREATE TRIGGER IF NOT EXISTS anonymous_identity_changed AFTER UPDATE OF id,"
    " conversationId, username, sessionToken, isActive ON anonymous_participants" SQ_BUMP
    "CREATE TRIGGER IF NOT EXISTS anonymous_deleted AFTER DELETE ON anonymous_participants" SQ_BUMP
    "CREATE TRIGGER IF NOT EXISTS members_added AFTER INSERT ON members" SQ_BUMP
    "CREATE TRIGGER IF NOT EXISTS members_changed AFTER UPDATE ON members" SQ_BUMP
    "CREATE TRIGGER IF NOT EXISTS members_removed AFTER DELETE ON members" SQ_BUMP
    "DROP INDEX IF EXISTS users_presence;"
    "DROP INDEX IF EXISTS anonymous_presence;";

/* Column lists shared by every query that returns persons; row_user()/row_anon() read them. */
#define SQ_USER_COLS                                                                               \
    "u.id, u.username, u.displayName, u.firstName, u.lastName, u.email, u.avatar, u.role, "        \
    "u.isActive, u.isOnline, u.lastSeen, u.lastActiveAt"
#define SQ_ANON_COLS                                                                               \
    "a.id, a.username, a.conversationId, a.isActive, a.isOnline, a.lastSeen, a.lastActiveAt"

enum sq_stmt {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PING,
    ST_CHANGES_VERSION,
    ST_USER_GET,
    ST_ANON_GET,
    ST_ANON_BY_TOKEN,
    ST_USER_CONVS,
    ST_MEMBER_EXISTS,
    ST_CONV_GET,
    ST_CONV_USERS,
    ST_CONV_ANONS,
    ST_CONV_USER_IDS,
    ST_CONV_ANON_IDS,
    ST_COUNT_ONLINE_USERS,
    ST_COUNT_ONLINE_ANONS,
    ST_USER_EXISTS,
    ST_ANON_EXISTS,
    ST_USER_INSERT,
    ST_CONV_INSERT,
    ST_MEMBER_INSERT,
    ST_MEMBER_COUNT,
    ST_ANON_INSERT,
    ST_USER_UPDATE,
    ST_ANON_UPDATE,
    ST_USER_ZOMBIES,
    ST_ANON_ZOMBIES,
    ST_USER_RECONCILE,
    ST_ANON_RECONCILE,
    ST__COUNT
};

static const char *const sq_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PING] = "SELECT 1",
    [ST_CHANGES_VERSION] = "SELECT v FROM gateway_changes WHERE id = 1",
    [ST_USER_GET] = "SELECT " SQ_USER_COLS " FROM users u WHERE u.id = ?1",
    [ST_ANON_GET] = "SELECT " SQ_ANON_COLS " FROM anonymous_participants a WHERE a.id = ?1",
    [ST_ANON_BY_TOKEN] =
        "SELECT " SQ_ANON_COLS " FROM anonymous_participants a WHERE a.sessionToken = ?1",
    [ST_USER_CONVS] = "SELECT conversationId FROM members WHERE userId = ?1",
    [ST_MEMBER_EXISTS] = "SELECT 1 FROM members WHERE conversationId = ?1 AND userId = ?2",
    [ST_CONV_GET] = "SELECT id, title, type FROM conversations WHERE id = ?1",
    [ST_CONV_USERS] = "SELECT " SQ_USER_COLS
                      " FROM members m JOIN users u ON u.id = m.userId WHERE m.conversationId = ?1",
    [ST_CONV_ANONS] =
        "SELECT " SQ_ANON_COLS " FROM anonymous_participants a WHERE a.conversationId = ?1",
    [ST_CONV_USER_IDS] = "SELECT userId FROM members WHERE conversationId = ?1",
    [ST_CONV_ANON_IDS] = "SELECT id FROM anonymous_participants WHERE conversationId = ?1",
    [ST_COUNT_ONLINE_USERS] = "SELECT count(*) FROM users WHERE isOnline = 1",
    [ST_COUNT_ONLINE_ANONS] = "SELECT count(*) FROM anonymous_participants WHERE isOnline = 1",
    [ST_USER_EXISTS] = "SELECT 1 FROM users WHERE id = ?1",
    [ST_ANON_EXISTS] = "SELECT 1 FROM anonymous_participants WHERE id = ?1",
    [ST_USER_INSERT] = "INSERT INTO users (id, username, displayName, firstName, lastName, email,"
                       " avatar, role, isActive, isOnline, createdAt)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10)",
    [ST_CONV_INSERT] =
        "INSERT INTO conversations (id, title, type, createdAt) VALUES (?1, ?2, ?3, ?4)",
    [ST_MEMBER_INSERT] = "INSERT OR IGNORE INTO members (conversationId, userId, joinedAt)"
                         " VALUES (?1, ?2, ?3)",
    [ST_MEMBER_COUNT] = "SELECT count(*) FROM members WHERE conversationId = ?1",
    [ST_ANON_INSERT] = "INSERT INTO anonymous_participants (id, conversationId, username,"
                       " sessionToken, isActive, isOnline, createdAt)"
                       " VALUES (?1, ?2, ?3, ?4, 1, 0, ?5)",
    /* ?1 set_online, ?2 is_online, ?3 lastActiveAt or NULL, ?4 lastSeen or NULL, ?5 id */
    [ST_USER_UPDATE] = "UPDATE users SET isOnline = CASE WHEN ?1 THEN ?2 ELSE isOnline END,"
                       " lastActiveAt = coalesce(?3, lastActiveAt),"
                       " lastSeen = coalesce(?4, lastSeen) WHERE id = ?5",
    [ST_ANON_UPDATE] = "UPDATE anonymous_participants"
                       " SET isOnline = CASE WHEN ?1 THEN ?2 ELSE isOnline END,"
                       " lastActiveAt = coalesce(?3, lastActiveAt),"
                       " lastSeen = coalesce(?4, lastSeen) WHERE id = ?5",
    /* Range scans of the partial index of the persons online: NULLs sort first. */
    [ST_USER_ZOMBIES] = "SELECT " SQ_USER_COLS " FROM users u WHERE u.isOnline = 1 AND"
                        " (u.lastActiveAt IS NULL OR u.lastActiveAt < ?1)",
    [ST_ANON_ZOMBIES] = "SELECT " SQ_ANON_COLS " FROM anonymous_participants a"
                        " WHERE a.isOnline = 1 AND (a.lastActiveAt IS NULL OR a.lastActiveAt < ?1)",
    [ST_USER_RECONCILE] = "UPDATE users SET isOnline = 0, lastSeen = coalesce(lastActiveAt, ?1)"
                          " WHERE isOnline = 1",
    [ST_ANON_RECONCILE] = "UPDATE anonymous_participants SET isOnline = 0,"
                          " lastSeen = coalesce(lastActiveAt, ?1) WHERE isOnline = 1",
};

struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    struct sq_conn *next;
};

struct store_backend {
    char *path;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a connection came back */
    struct sq_conn *free_list;
    int open_count;
};

/* --- connections ---------------------------------------------------------------------------- */

static int sq_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_CONSTRAINT:
        return STORE_ERR_CONFLICT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
        return STORE_ERR_UNAVAILABLE;
    default:
        return STORE_ERR_INTERNAL;
    }
}

static void conn_close(struct sq_conn *c)
{
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close(c->db);
    free(c);
}

static int conn_open(const char *path, struct sq_conn **out)
{
    struct sq_conn *c = xcalloc(1, sizeof(*c));
    int rc = sqlite3_open_v2(
        path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        log_error("%s: cannot open %s: %s", __func__, path,
                  c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, SQ_BUSY_TIMEOUT_MS);
    char *err = NULL;
    char pragmas[128];
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -%d;",
             SQ_PAGE_CACHE_KIB);
    rc = sqlite3_exec(c->db, pragmas, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        log_error("%s: %s: %s", __func__, path, err != NULL ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        goto fail;
    }
    *out = c;
    return 0;
fail:
    sqlite3_close(c->db);
    free(c);
    rc = sq_err(rc);
    return rc != 0 ? rc : STORE_ERR_INTERNAL;
}

static int conn_get(struct store_backend *b, struct sq_conn **out)
{
    pthread_mutex_lock(&b->mu);
    while (b->free_list == NULL && b->open_count >= SQ_POOL_MAX)
        pthread_cond_wait(&b->cv, &b->mu);
    struct sq_conn *c = b->free_list;
    if (c != NULL) {
        b->free_list = c->next;
        pthread_mutex_unlock(&b->mu);
        *out = c;
        return 0;
    }
    b->open_count++;
    pthread_mutex_unlock(&b->mu);

    int rc = conn_open(b->path, &c);
    if (rc != 0) {
        pthread_mutex_lock(&b->mu);
        b->open_count--;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
        return rc;
    }
    *out = c;
    return 0;
}

static void conn_put(struct store_backend *b, struct sq_conn *c)
{
    pthread_mutex_lock(&b->mu);
    c->next = b->free_list;
    b->free_list = c;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* The prepared statement idx of c, reset and unbound, or NULL (logged). */
static sqlite3_stmt *stmt(struct sq_conn *c, enum sq_stmt idx)
{
    if (c->st[idx] == NULL) {
        if (sqlite3_prepare_v3(c->db, sq_sql[idx], -1, SQLITE_PREPARE_PERSISTENT, &c->st[idx],
                               NULL) != SQLITE_OK) {
            log_error("%s: cannot prepare statement %d: %s", __func__, (int)idx,
                      sqlite3_errmsg(c->db));
            return NULL;
        }
    } else {
        sqlite3_reset(c->st[idx]);
        sqlite3_clear_bindings(c->st[idx]);
    }
    return c->st[idx];
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s == NULL)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

static void bind_time(sqlite3_stmt *st, int i, int64_t ms)
{
    if (ms == 0)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int64(st, i, ms);
}

/* Steps a statement that returns no row; logs and maps the error. */
static int exec_step(struct sq_conn *c, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        return 0;
    if ((rc & 0xff) != SQLITE_CONSTRAINT)
        log_warnx("sqlite: %s", sqlite3_errmsg(c->db));
    return sq_err(rc);
}

static int exec_simple(struct sq_conn *c, enum sq_stmt idx)
{
    sqlite3_stmt *st = stmt(c, idx);
    return st == NULL ? STORE_ERR_INTERNAL : exec_step(c, st);
}

/* Runs a statement with ?1 = key (and ?2 = key2 when non-NULL) and tells whether it returned
 * a row. */
static int exists(struct sq_conn *c, enum sq_stmt idx, const char *key, const char *key2, bool *out)
{
    sqlite3_stmt *st = stmt(c, idx);
    if (st == NULL)
        return STORE_ERR_INTERNAL;
    bind_text(st, 1, key);
    if (key2 != NULL)
        bind_text(st, 2, key2);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        log_warnx("sqlite: %s", sqlite3_errmsg(c->db));
        return sq_err(rc);
    }
    *out = rc == SQLITE_ROW;
    return 0;
}

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t != NULL ? xstrdup((const char *)t) : NULL;
}

static void col_copy(sqlite3_stmt *st, int i, char *dst, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, size, "%s", t != NULL ? (const char *)t : "");
}

static void row_user(sqlite3_stmt *st, struct store_person *p)
{
    memset(p, 0, sizeof(*p));
    col_copy(st, 0, p->id, sizeof(p->id));
    p->username = col_text(st, 1);
    p->display_name = col_text(st, 2);
    p->first_name = col_text(st, 3);
    p->last_name = col_text(st, 4);
    p->email = col_text(st, 5);
    p->avatar = col_text(st, 6);
    col_copy(st, 7, p->role, sizeof(p->role));
    p->is_active = sqlite3_column_int(st, 8) != 0;
    p->is_online = sqlite3_column_int(st, 9) != 0;
    p->last_seen_ms = sqlite3_column_int64(st, 10);
    p->last_active_at_ms = sqlite3_column_int64(st, 11);
}

static void row_anon(sqlite3_stmt *st, struct store_person *p)
{
    memset(p, 0, sizeof(*p));
    col_copy(st, 0, p->id, sizeof(p->id));
    p->is_anonymous = true;
    p->username = col_text(st, 1);
    col_copy(st, 2, p->conversation_id, sizeof(p->conversation_id));
    p->is_active = sqlite3_column_int(st, 3) != 0;
    p->is_online = sqlite3_column_int(st, 4) != 0;
    p->last_seen_ms = sqlite3_column_int64(st, 5);
    p->last_active_at_ms = sqlite3_column_int64(st, 6);
}

/* Runs a one-person query keyed by ?1. NOT_FOUND when it returns no row. */
static int query_person(struct sq_conn *c, enum sq_stmt idx, const char *key,
                        struct store_person *out)
{
    sqlite3_stmt *st = stmt(c, idx);
    if (st == NULL)
        return STORE_ERR_INTERNAL;
    bind_text(st, 1, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (idx == ST_USER_GET)
            row_user(st, out);
        else
            row_anon(st, out);
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return STORE_ERR_NOT_FOUND;
    log_warnx("sqlite: %s", sqlite3_errmsg(c->db));
    return sq_err(rc);
}

/* Appends every row of a person query (?1 = key text, or int64 when key is NULL) to l. */
static int query_persons(struct sq_conn *c, enum sq_stmt idx, const char *key, int64_t ikey,
                         bool anon, struct store_person_list *l, size_t *cap)
{
    sqlite3_stmt *st = stmt(c, idx);
    if (st == NULL)
        return STORE_ERR_INTERNAL;
    if (key != NULL)
        bind_text(st, 1, key);
    else
        sqlite3_bind_int64(st, 1, ikey);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (l->count == *cap) {
            *cap = *cap != 0 ? *cap * 2 : 16;
            l->items = xrealloc(l->items, *cap * sizeof(*l->items));
        }
        if (anon)
            row_anon(st, &l->items[l->count++]);
        else
            row_user(st, &l->items[l->count++]);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_warnx("sqlite: %s", sqlite3_errmsg(c->db));
        return sq_err(rc);
    }
    return 0;
}

/* Appends the first column of every row of an id query keyed by ?1 to l. */
static int query_ids(struct sq_conn *c, enum sq_stmt idx, const char *key, struct store_id_list *l,
                     size_t *cap)
{
    sqlite3_stmt *st = stmt(c, idx);
    if (st == NULL)
        return STORE_ERR_INTERNAL;
    bind_text(st, 1, key);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (l->count == *cap) {
            *cap = *cap != 0 ? *cap * 2 : 16;
            l->ids = xrealloc(l->ids, *cap * sizeof(*l->ids));
        }
        col_copy(st, 0, l->ids[l->count++], sizeof(l->ids[0]));
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_warnx("sqlite: %s", sqlite3_errmsg(c->db));
        return sq_err(rc);
    }
    return 0;
}

static int query_count(struct sq_conn *c, enum sq_stmt idx, const char *key, uint64_t *out)
{
    sqlite3_stmt *st = stmt(c, idx);
    if (st == NULL)
        return STORE_ERR_INTERNAL;
    if (key != NULL)
        bind_text(st, 1, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) {
        log_warnx("sqlite: %s", sqlite3_errmsg(c->db));
        return sq_err(rc);
    }
    return 0;
}

/* --- open / close --------------------------------------------------------------------------- */

static int sq_schema_init(struct sq_conn *c)
{
    char *err = NULL;
    /* journal_mode is persistent in the file: set once here, every connection inherits it. */
    int rc = sqlite3_exec(c->db, "PRAGMA journal_mode = WAL", NULL, NULL, &err);
    if (rc != SQLITE_OK)
        goto fail;
    rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, &err);
    if (rc != SQLITE_OK)
        goto fail;
    sqlite3_stmt *st = NULL;
    int version = 0;
    rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > SQ_SCHEMA_VERSION) {
        log_error("%s: database schema version %d is newer than this build's %d", __func__, version,
                  SQ_SCHEMA_VERSION);
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        return STORE_ERR_INTERNAL;
    }
    if (version < SQ_SCHEMA_VERSION) {
        rc = sqlite3_exec(c->db, sq_schema, NULL, NULL, &err);
        if (rc != SQLITE_OK)
            goto fail_tx;
        char pragma[64];
        snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", SQ_SCHEMA_VERSION);
        rc = sqlite3_exec(c->db, pragma, NULL, NULL, &err);
        if (rc != SQLITE_OK)
            goto fail_tx;
        if (version == 0)
            log_info("store: sqlite schema created (version %d)", SQ_SCHEMA_VERSION);
        else
            log_info("store: sqlite schema upgraded from version %d to %d", version,
                     SQ_SCHEMA_VERSION);
    }
    rc = sqlite3_exec(c->db, "COMMIT", NULL, NULL, &err);
    if (rc != SQLITE_OK)
        goto fail_tx;
    return 0;
fail_tx:
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
fail:
    log_error("%s: %s", __func__, err != NULL ? err : sqlite3_errstr(rc));
    sqlite3_free(err);
    return sq_err(rc) ? sq_err(rc) : STORE_ERR_INTERNAL;
}

static int sq_open(const char *url, struct store_backend **out)
{
    const char *path = NULL;
    if (strncmp(url, "sqlite://", 9) == 0)
        path = url + 9;
    else if (strncmp(url, "sqlite:", 7) == 0)
        path = url + 7;
    if (path == NULL || *path == '\0')
        return STORE_ERR_INVALID;

    struct store_backend *b = xcalloc(1, sizeof(*b));
    b->path = xstrdup(path);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);

    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        goto fail;
    rc = sq_schema_init(c);
    conn_put(b, c);
    if (rc != 0)
        goto fail;
    *out = b;
    return 0;
fail:
    while (b->free_list != NULL) {
        c = b->free_list;
        b->free_list = c->next;
        conn_close(c);
    }
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->path);
    free(b);
    return rc;
}

static void sq_close(struct store_backend *b)
{
    /* Every borrower has returned its connection: callers stop using the store first. */
    while (b->free_list != NULL) {
        struct sq_conn *c = b->free_list;
        b->free_list = c->next;
        conn_close(c);
    }
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->path);
    free(b);
}

static bool sq_ping(struct store_backend *b)
{
    struct sq_conn *c;
    if (conn_get(b, &c) != 0)
        return false;
    sqlite3_stmt *st = stmt(c, ST_PING);
    bool ok = st != NULL && sqlite3_step(st) == SQLITE_ROW;
    if (st != NULL)
        sqlite3_reset(st);
    conn_put(b, c);
    return ok;
}

static int sq_changes_version(struct store_backend *b, uint64_t *out)
{
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = query_count(c, ST_CHANGES_VERSION, NULL, out);
    conn_put(b, c);
    return rc;
}

/* --- reads ---------------------------------------------------------------------------------- */

static int sq_person_get(struct store_backend *b, const char *id, struct store_person *out)
{
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = query_person(c, ST_USER_GET, id, out);
    if (rc == STORE_ERR_NOT_FOUND)
        rc = query_person(c, ST_ANON_GET, id, out);
    conn_put(b, c);
    return rc;
}

static int sq_person_by_session_token(struct store_backend *b, const char *token,
                                      struct store_person *out)
{
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = query_person(c, ST_ANON_BY_TOKEN, token, out);
    conn_put(b, c);
    return rc;
}

static int sq_person_conversations(struct store_backend *b, const struct store_person *p,
                                   struct store_id_list *out)
{
    struct store_id_list l = {0};
    if (p->is_anonymous) {
        if (p->conversation_id[0] != '\0') {
            l.ids = xmalloc(sizeof(*l.ids));
            memcpy(l.ids[0], p->conversation_id, sizeof(l.ids[0]));
            l.count = 1;
        }
        *out = l;
        return 0;
    }
    struct sq_conn *c;
    size_t cap = 0;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = query_ids(c, ST_USER_CONVS, p->id, &l, &cap);
    conn_put(b, c);
    if (rc != 0) {
        store_id_list_free(&l);
        return rc;
    }
    *out = l;
    return 0;
}

static int sq_is_member(struct store_backend *b, const char *cid, const struct store_person *p,
                        bool *out)
{
    if (p->is_anonymous) {
        *out = strcasecmp(p->conversation_id, cid) == 0;
        return 0;
    }
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = exists(c, ST_MEMBER_EXISTS, cid, p->id, out);
    conn_put(b, c);
    return rc;
}

static int conv_get(struct sq_conn *c, const char *id, struct store_conversation *out)
{
    sqlite3_stmt *st = stmt(c, ST_CONV_GET);
    if (st == NULL)
        return STORE_ERR_INTERNAL;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        col_copy(st, 0, out->id, sizeof(out->id));
        out->title = col_text(st, 1);
        out->type = col_text(st, 2);
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return STORE_ERR_NOT_FOUND;
    log_warnx("sqlite: %s", sqlite3_errmsg(c->db));
    return sq_err(rc);
}

/* NOT_FOUND unless conversation cid exists. */
static int conv_exists(struct sq_conn *c, const char *cid)
{
    struct store_conversation conv;
    int rc = conv_get(c, cid, &conv);
    if (rc == 0)
        store_conversation_clear(&conv);
    return rc;
}

static int sq_conversation_get(struct store_backend *b, const char *id,
                               struct store_conversation *out)
{
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = conv_get(c, id, out);
    conn_put(b, c);
    return rc;
}

static int sq_conversation_participants(struct store_backend *b, const char *cid,
                                        struct store_person_list *out)
{
    struct store_person_list l = {0};
    size_t cap = 0;
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    /* One read transaction so that the three queries see the same snapshot. */
    sqlite3_exec(c->db, "BEGIN", NULL, NULL, NULL);
    rc = conv_exists(c, cid);
    if (rc == 0)
        rc = query_persons(c, ST_CONV_USERS, cid, 0, false, &l, &cap);
    if (rc == 0)
        rc = query_persons(c, ST_CONV_ANONS, cid, 0, true, &l, &cap);
    sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
    conn_put(b, c);
    if (rc != 0) {
        store_person_list_free(&l);
        return rc;
    }
    *out = l;
    return 0;
}

static int sq_conversation_member_ids(struct store_backend *b, const char *cid,
                                      struct store_id_list *out)
{
    struct store_id_list l = {0};
    size_t cap = 0;
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    sqlite3_exec(c->db, "BEGIN", NULL, NULL, NULL);
    rc = conv_exists(c, cid);
    if (rc == 0)
        rc = query_ids(c, ST_CONV_USER_IDS, cid, &l, &cap);
    if (rc == 0)
        rc = query_ids(c, ST_CONV_ANON_IDS, cid, &l, &cap);
    sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
    conn_put(b, c);
    if (rc != 0) {
        store_id_list_free(&l);
        return rc;
    }
    *out = l;
    return 0;
}

static int sq_count_online(struct store_backend *b, uint64_t *users, uint64_t *anonymous)
{
    uint64_t u = 0, a = 0;
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = query_count(c, ST_COUNT_ONLINE_USERS, NULL, &u);
    if (rc == 0)
        rc = query_count(c, ST_COUNT_ONLINE_ANONS, NULL, &a);
    conn_put(b, c);
    if (rc != 0)
        return rc;
    *users = u;
    *anonymous = a;
    return 0;
}

/* --- provisioning --------------------------------------------------------------------------- */

static int sq_user_create(struct store_backend *b, const struct store_user_new *u,
                          struct store_person *out)
{
    struct sq_conn *c;
    bool taken = false;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = exec_simple(c, ST_BEGIN);
    if (rc != 0)
        goto out;
    /* Ids are unique across users and anonymous participants. */
    rc = exists(c, ST_ANON_EXISTS, u->id, NULL, &taken);
    if (rc == 0 && taken)
        rc = STORE_ERR_CONFLICT;
    if (rc == 0) {
        sqlite3_stmt *st = stmt(c, ST_USER_INSERT);
        if (st == NULL) {
            rc = STORE_ERR_INTERNAL;
        } else {
            bind_text(st, 1, u->id);
            bind_text(st, 2, u->username);
            bind_text(st, 3, u->display_name);
            bind_text(st, 4, u->first_name);
            bind_text(st, 5, u->last_name);
            bind_text(st, 6, u->email);
            bind_text(st, 7, u->avatar);
            bind_text(st, 8, u->role != NULL ? u->role : "USER");
            sqlite3_bind_int(st, 9, u->is_active ? 1 : 0);
            sqlite3_bind_int64(st, 10, util_now_ms());
            rc = exec_step(c, st);
        }
    }
    if (rc == 0)
        rc = exec_simple(c, ST_COMMIT);
    if (rc != 0)
        exec_simple(c, ST_ROLLBACK);
    if (rc == 0)
        rc = query_person(c, ST_USER_GET, u->id, out);
out:
    conn_put(b, c);
    return rc;
}

static int sq_conversation_create(struct store_backend *b, const char *id, const char *title,
                                  const char *type, struct store_conversation *out)
{
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st = stmt(c, ST_CONV_INSERT);
    if (st == NULL) {
        rc = STORE_ERR_INTERNAL;
        goto out;
    }
    bind_text(st, 1, id);
    bind_text(st, 2, title);
    bind_text(st, 3, type);
    sqlite3_bind_int64(st, 4, util_now_ms());
    rc = exec_step(c, st);
    if (rc == 0)
        rc = conv_get(c, id, out);
out:
    conn_put(b, c);
    return rc;
}

static int sq_member_add(struct store_backend *b, const char *cid, const char *uid, int *added,
                         uint64_t own[2])
{
    struct sq_conn *c;
    bool user = false;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = exec_simple(c, ST_BEGIN);
    if (rc != 0)
        goto out;
    rc = conv_exists(c, cid);
    if (rc == 0)
        rc = exists(c, ST_USER_EXISTS, uid, NULL, &user);
    if (rc == 0 && !user)
        rc = STORE_ERR_NOT_FOUND;
    int n = 0;
    uint64_t v0 = 0, v1 = 0;
    if (rc == 0)
        rc = query_count(c, ST_CHANGES_VERSION, NULL, &v0);
    if (rc == 0) {
        sqlite3_stmt *st = stmt(c, ST_MEMBER_INSERT);
        if (st == NULL) {
            rc = STORE_ERR_INTERNAL;
        } else {
            bind_text(st, 1, cid);
            bind_text(st, 2, uid);
            sqlite3_bind_int64(st, 3, util_now_ms());
            rc = exec_step(c, st);
            n = sqlite3_changes(c->db);
        }
    }
    if (rc == 0)
        rc = query_count(c, ST_CHANGES_VERSION, NULL, &v1);
    if (rc == 0)
        rc = exec_simple(c, ST_COMMIT);
    if (rc != 0) {
        exec_simple(c, ST_ROLLBACK);
    } else {
        *added = n > 0 ? 1 : 0;
        own[0] = v0;
        own[1] = v1;
    }
out:
    conn_put(b, c);
    return rc;
}

static int sq_member_count(struct store_backend *b, const char *cid, uint64_t *out)
{
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = conv_exists(c, cid);
    if (rc == 0)
        rc = query_count(c, ST_MEMBER_COUNT, cid, out);
    conn_put(b, c);
    return rc;
}

static int sq_anonymous_create(struct store_backend *b, const char *cid, const char *username,
                               const char *session_token, struct store_person *out)
{
    char id[OID_HEX_LEN + 1];
    struct sq_conn *c;
    bool taken = false;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    util_oid_new(id);
    rc = exec_simple(c, ST_BEGIN);
    if (rc != 0)
        goto out;
    rc = conv_exists(c, cid);
    if (rc == 0)
        rc = exists(c, ST_USER_EXISTS, id, NULL, &taken);
    if (rc == 0 && taken)
        rc = STORE_ERR_CONFLICT;
    if (rc == 0) {
        sqlite3_stmt *st = stmt(c, ST_ANON_INSERT);
        if (st == NULL) {
            rc = STORE_ERR_INTERNAL;
        } else {
            bind_text(st, 1, id);
            bind_text(st, 2, cid);
            bind_text(st, 3, username);
            bind_text(st, 4, session_token);
            sqlite3_bind_int64(st, 5, util_now_ms());
            rc = exec_step(c, st);
        }
    }
    if (rc == 0)
        rc = exec_simple(c, ST_COMMIT);
    if (rc != 0)
        exec_simple(c, ST_ROLLBACK);
    if (rc == 0)
        rc = query_person(c, ST_ANON_GET, id, out);
out:
    conn_put(b, c);
    return rc;
}

/* --- writer and maintenance ----------------------------------------------------------------- */

static int update_one(struct sq_conn *c, enum sq_stmt idx, const struct store_write *w, int *n)
{
    sqlite3_stmt *st = stmt(c, idx);
    if (st == NULL)
        return STORE_ERR_INTERNAL;
    sqlite3_bind_int(st, 1, w->set_online ? 1 : 0);
    sqlite3_bind_int(st, 2, w->is_online ? 1 : 0);
    bind_time(st, 3, w->last_active_at_ms);
    bind_time(st, 4, w->last_seen_ms);
    bind_text(st, 5, w->id);
    int rc = exec_step(c, st);
    if (rc == 0)
        *n = sqlite3_changes(c->db);
    return rc;
}

static int write_by_id(const void *a, const void *b)
{
    const struct store_write *x = *(const struct store_write *const *)a;
    const struct store_write *y = *(const struct store_write *const *)b;
    return memcmp(x->id, y->id, OID_HEX_LEN);
}

static int sq_apply_batch(struct store_backend *b, const struct store_write *w, size_t n,
                          uint64_t *rows)
{
    struct sq_conn *c;
    uint64_t total = 0;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    /* The rows go in id order: the id index and the table (ids grow with creation time, as
     * rowids do) are then walked in one direction, so the rows of a batch that share a page
     * come one after the other, and the page is read once instead of again after SQLite's
     * small page cache (SQ_PAGE_CACHE_KIB) dropped it. The batch holds one write per person
     * (store.c merges them), so the order changes nothing else. */
    const struct store_write **order = xmalloc(n * sizeof(*order));
    for (size_t i = 0; i < n; i++)
        order[i] = &w[i];
    qsort(order, n, sizeof(*order), write_by_id);
    rc = exec_simple(c, ST_BEGIN);
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < n && rc == 0; i++) {
        /* The caller's is_anonymous picks the table to try first; the other one is the
         * fallback, since ids are unique across both. */
        const struct store_write *x = order[i];
        enum sq_stmt first = x->is_anonymous ? ST_ANON_UPDATE : ST_USER_UPDATE;
        enum sq_stmt second = x->is_anonymous ? ST_USER_UPDATE : ST_ANON_UPDATE;
        int changed = 0;
        rc = update_one(c, first, x, &changed);
        if (rc == 0 && changed == 0)
            rc = update_one(c, second, x, &changed);
        total += (uint64_t)changed;
    }
    if (rc == 0)
        rc = exec_simple(c, ST_COMMIT);
    if (rc != 0)
        exec_simple(c, ST_ROLLBACK);
    else
        *rows = total;
out:
    free(order);
    conn_put(b, c);
    return rc;
}

static int sq_zombies_find(struct store_backend *b, int64_t cutoff_ms,
                           struct store_person_list *out)
{
    struct store_person_list l = {0};
    size_t cap = 0;
    struct sq_conn *c;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = query_persons(c, ST_USER_ZOMBIES, NULL, cutoff_ms, false, &l, &cap);
    if (rc == 0)
        rc = query_persons(c, ST_ANON_ZOMBIES, NULL, cutoff_ms, true, &l, &cap);
    conn_put(b, c);
    if (rc != 0) {
        store_person_list_free(&l);
        return rc;
    }
    *out = l;
    return 0;
}

static int sq_reconcile_startup(struct store_backend *b, int64_t now_ms, uint64_t *count)
{
    struct sq_conn *c;
    uint64_t total = 0;
    int rc = conn_get(b, &c);
    if (rc != 0)
        return rc;
    rc = exec_simple(c, ST_BEGIN);
    if (rc != 0)
        goto out;
    static const enum sq_stmt idx[2] = {ST_USER_RECONCILE, ST_ANON_RECONCILE};
    for (int i = 0; i < 2 && rc == 0; i++) {
        sqlite3_stmt *st = stmt(c, idx[i]);
        if (st == NULL) {
            rc = STORE_ERR_INTERNAL;
            break;
        }
        sqlite3_bind_int64(st, 1, now_ms);
        rc = exec_step(c, st);
        if (rc == 0)
            total += (uint64_t)sqlite3_changes(c->db);
    }
    if (rc == 0)
        rc = exec_simple(c, ST_COMMIT);
    if (rc != 0)
        exec_simple(c, ST_ROLLBACK);
    else
        *count = total;
out:
    conn_put(b, c);
    return rc;
}

const struct store_backend_ops store__sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .ping = sq_ping,
    .changes_version = sq_changes_version,
    .person_get = sq_person_get,
    .person_by_session_token = sq_person_by_session_token,
    .person_conversations = sq_person_conversations,
    .is_member = sq_is_member,
    .conversation_get = sq_conversation_get,
    .conversation_participants = sq_conversation_participants,
    .conversation_member_ids = sq_conversation_member_ids,
    .count_online = sq_count_online,
    .user_create = sq_user_create,
    .conversation_create = sq_conversation_create,
    .member_add = sq_member_add,
    .member_count = sq_member_count,
    .anonymous_create = sq_anonymous_create,
    .apply_batch = sq_apply_batch,
    .zombies_find = sq_zombies_find,
    .reconcile_startup = sq_reconcile_startup,
};
