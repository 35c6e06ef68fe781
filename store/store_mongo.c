/*
 * store_mongo.c - the MongoDB backend of the store (SPEC §3 "Storage"), through libmongoc.
 *
 * It reads and writes the collections Meeshy's Prisma schema uses, with their camelCase
 * fields and ObjectId _ids, so the gateway can run against an existing Meeshy database:
 *
 *   User                 {_id, username, displayName, firstName, lastName, email, avatar, role,
 *                         isActive, isOnline, lastSeen, lastActiveAt, createdAt}
 *   AnonymousParticipant {_id, conversationId, username, sessionToken, isActive, isOnline,
 *                         lastSeen, lastActiveAt, joinedAt}
 *   Conversation         {_id, title, type, createdAt}
 *   ConversationMember   {_id, conversationId, userId, role, joinedAt, isActive}
 *
 * Dates are BSON dates, null when never set. The database is the one named in the URI path,
 * "meeshy" when the URI names none. The indexes the queries need are created at open
 * (createIndexes is a no-op for an index that already exists; one that exists under another
 * name, as Prisma names them, is accepted as it is).
 *
 * DESIGN
 * mongoc_client_pools: every call pops a client, runs its commands and pushes it back, so reads
 * from many threads (REST, handshakes) run concurrently while the writer thread and the
 * maintenance thread take their own clients. mongoc_init() runs once per process. Error API v2
 * distinguishes server errors from network ones.
 *
 * A down or slow server must not stall callers for long: unless the URI sets them,
 * serverSelectionTimeoutMS and connectTimeoutMS are 2000 ms, so any call to a server that is
 * down fails within about two seconds with STORE_ERR_UNAVAILABLE, and the front end keeps its
 * batch and retries it in order. The socket timeout (a server that accepts but does not
 * answer) cannot be one number for everything: 2000 ms suits a read by _id, but a bulk of
 * thousands of updates or a reconciliation over every online person may rightly take longer,
 * and a batch that always times out would be retried forever. So there are two pools over the
 * same servers, which differ only in socketTimeoutMS when the URI does not set it: the read
 * pool (2000 ms) for reads, ping and provisioning, and the bulk pool (30000 ms) for
 * apply_batch, zombies_find, reconcile_startup and the index builds at open, which run on the
 * writer, maintenance and main threads, never on a request's path.
 *
 * apply_batch sends ONE unordered bulk write per collection (two at most: User and
 * AnonymousParticipant), each holding one update_one {_id} {$set: ...} per person, so the N
 * activity updates of an interval are one `update` command of N statements. The two bulks are
 * not atomic together; the front end retries the whole batch after a failure, which is safe
 * because every statement is an idempotent $set.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <mongoc/mongoc.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "store/store_backend.h"

#define MONGO_DEFAULT_DB "meeshy"
#define MONGO_APPNAME "presence-gateway"
#define MONGO_TIMEOUT_MS 2000      /* server selection, connect; socket of the read pool */
#define MONGO_BULK_SOCKET_MS 30000 /* socket of the bulk pool */

#define COLL_USER "User"
#define COLL_ANON "AnonymousParticipant"
#define COLL_CONV "Conversation"
#define COLL_MEMBER "ConversationMember"

/* MongoDB server error codes the backend maps (src/mongo/base/error_codes.yml). */
#define MERR_DUPLICATE_KEY 11000
#define MERR_INDEX_OPTIONS_CONFLICT 85
#define MERR_INDEX_KEY_SPECS_CONFLICT 86

struct mpool {
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
};

struct store_backend {
    struct mpool _read; /* reads, ping, provisioning */
    struct mpool _bulk; /* presence batches, maintenance, index builds */
    char *_db;
};

static pthread_once_t mongo_init_once = PTHREAD_ONCE_INIT;

/* libmongoc's own log lines go through ours (its default handler writes to stdout). Network
 * chatter during an outage ("stream", "cluster", "monitor" domains) is at debug level: each
 * failed call already logs one warning here. */
static void mongo_log(mongoc_log_level_t level, const char *domain, const char *message, void *arg)
{
    (void)arg;
    bool noisy = strcmp(domain, "stream") == 0 || strcmp(domain, "cluster") == 0 ||
                 strcmp(domain, "monitor") == 0 || strcmp(domain, "socket") == 0;
    if (level <= MONGOC_LOG_LEVEL_WARNING && !noisy)
        log_warnx("libmongoc %s: %s", domain, message);
    else if (level <= MONGOC_LOG_LEVEL_INFO)
        log_debug("libmongoc %s: %s", domain, message);
}

static void mongo_init(void)
{
    mongoc_log_set_handler(mongo_log, NULL);
    mongoc_init();
}

/* --- errors ------------------------------------------------------------------------------- */

/* Server codes that mean "not reachable or not ready now": retry later. */
static bool mongo_code_transient(uint32_t code)
{
    switch (code) {
    case 6:     /* HostUnreachable */
    case 7:     /* HostNotFound */
    case 50:    /* MaxTimeMSExpired */
    case 89:    /* NetworkTimeout */
    case 91:    /* ShutdownInProgress */
    case 189:   /* PrimarySteppedDown */
    case 262:   /* ExceededTimeLimit */
    case 9001:  /* SocketException */
    case 10107: /* NotWritablePrimary */
    case 11600: /* InterruptedAtShutdown */
    case 11602: /* InterruptedDueToReplStateChange */
    case 13435: /* NotPrimaryNoSecondaryOk */
    case 13436: /* NotPrimaryOrSecondary */
        return true;
    default:
        return false;
    }
}

/* Maps a libmongoc error (API v2) to a STORE_ERR_* code and logs it. */
static int mongo_error(const bson_error_t *e, const char *what)
{
    switch (e->domain) {
    case MONGOC_ERROR_STREAM:
    case MONGOC_ERROR_SERVER_SELECTION:
    case MONGOC_ERROR_PROTOCOL:
        log_warnx("%s: MongoDB unavailable: %s", what, e->message);
        return STORE_ERR_UNAVAILABLE;
    case MONGOC_ERROR_SERVER:
    case MONGOC_ERROR_COMMAND:
    case MONGOC_ERROR_QUERY:
    case MONGOC_ERROR_WRITE_CONCERN:
        if (e->code == MERR_DUPLICATE_KEY || e->code == 11001 || e->code == 12582) {
            log_debug("%s: duplicate key: %s", what, e->message);
            return STORE_ERR_CONFLICT;
        }
        if (mongo_code_transient(e->code)) {
            log_warnx("%s: MongoDB unavailable: %s", what, e->message);
            return STORE_ERR_UNAVAILABLE;
        }
        break;
    case MONGOC_ERROR_CLIENT:
        /* Authentication and session failures: the server cannot be used now. */
        if (e->code == MONGOC_ERROR_CLIENT_AUTHENTICATE ||
            e->code == MONGOC_ERROR_CLIENT_SESSION_FAILURE) {
            log_warnx("%s: MongoDB unavailable: %s", what, e->message);
            return STORE_ERR_UNAVAILABLE;
        }
        break;
    default:
        break;
    }
    log_warnx("%s: MongoDB error %u.%u: %s", what, e->domain, e->code, e->message);
    return STORE_ERR_INTERNAL;
}

/* --- URI ---------------------------------------------------------------------------------- */

/* Parses url and fills in what the gateway needs unless the URL sets it: the fail-fast
 * timeouts, socketTimeoutMS = socket_timeout_ms, and the appname. Returns the URI or NULL
 * (logged). */
static mongoc_uri_t *mongo_uri_prepare(const char *url, int32_t socket_timeout_ms)
{
    bson_error_t err;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(url, &err);
    if (uri == NULL) {
        /* The message may quote the URL, which may hold a password: log only the reason. */
        log_warnx("DATABASE_URL: not a valid MongoDB URI");
        return NULL;
    }
    static const char *const timeouts[] = {MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                           MONGOC_URI_CONNECTTIMEOUTMS};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++)
        if (!mongoc_uri_has_option(uri, timeouts[i]))
            mongoc_uri_set_option_as_int32(uri, timeouts[i], MONGO_TIMEOUT_MS);
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SOCKETTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, socket_timeout_ms);
    /* Set in the URI only, never through mongoc_client_pool_set_appname too: libmongoc logs
     * "Cannot set appname more than once" otherwise. */
    if (mongoc_uri_get_appname(uri) == NULL)
        mongoc_uri_set_appname(uri, MONGO_APPNAME);
    return uri;
}

/* The database named in the URI path, else "meeshy" (Meeshy's own). */
static const char *mongo_db_name(const mongoc_uri_t *uri)
{
    const char *db = mongoc_uri_get_database(uri);
    return db != NULL && db[0] != '\0' ? db : MONGO_DEFAULT_DB;
}

/* --- reading documents -------------------------------------------------------------------- */

static char *doc_str(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return xstrdup(bson_iter_utf8(&it, NULL));
    return NULL;
}

static bool doc_bool(const bson_t *doc, const char *key, bool dflt)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_BOOL(&it))
        return bson_iter_bool(&it);
    return dflt;
}

/* A date as ms since the epoch; 0 for null or absent. An ISO string (data written by other
 * tools) is accepted too. */
static int64_t doc_date(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    int64_t ms = 0;
    if (!bson_iter_init_find(&it, doc, key))
        return 0;
    if (BSON_ITER_HOLDS_DATE_TIME(&it))
        return bson_iter_date_time(&it);
    if (BSON_ITER_HOLDS_UTF8(&it) && util_parse_iso_time(bson_iter_utf8(&it, NULL), &ms) == 0)
        return ms;
    return 0;
}

/* An ObjectId field (or a 24-hex string) as lowercase hex; "" when absent. */
static void doc_oid(const bson_t *doc, const char *key, char out[OID_HEX_LEN + 1])
{
    bson_iter_t it;
    out[0] = '\0';
    if (!bson_iter_init_find(&it, doc, key))
        return;
    if (BSON_ITER_HOLDS_OID(&it)) {
        bson_oid_to_string(bson_iter_oid(&it), out);
    } else if (BSON_ITER_HOLDS_UTF8(&it) && util_oid_valid(bson_iter_utf8(&it, NULL))) {
        const char *s = bson_iter_utf8(&it, NULL);
        for (int i = 0; i < OID_HEX_LEN; i++)
            out[i] = (char)((s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 'a' : s[i]);
        out[OID_HEX_LEN] = '\0';
    }
}

/* Fills out (zeroed first) from a User or AnonymousParticipant document. */
static void doc_to_person(const bson_t *doc, bool anonymous, struct store_person *out)
{
    memset(out, 0, sizeof *out);
    doc_oid(doc, "_id", out->id);
    out->is_anonymous = anonymous;
    out->username = doc_str(doc, "username");
    out->is_active = doc_bool(doc, "isActive", true);
    out->is_online = doc_bool(doc, "isOnline", false);
    out->last_active_at_ms = doc_date(doc, "lastActiveAt");
    out->last_seen_ms = doc_date(doc, "lastSeen");
    if (anonymous) {
        doc_oid(doc, "conversationId", out->conversation_id);
        return;
    }
    out->display_name = doc_str(doc, "displayName");
    out->first_name = doc_str(doc, "firstName");
    out->last_name = doc_str(doc, "lastName");
    out->email = doc_str(doc, "email");
    out->avatar = doc_str(doc, "avatar");
    bson_iter_t it;
    const char *role = "USER";
    if (bson_iter_init_find(&it, doc, "role") && BSON_ITER_HOLDS_UTF8(&it))
        role = bson_iter_utf8(&it, NULL);
    snprintf(out->role, sizeof out->role, "%s", role);
}

static void doc_to_conversation(const bson_t *doc, struct store_conversation *out)
{
    memset(out, 0, sizeof *out);
    doc_oid(doc, "_id", out->id);
    out->title = doc_str(doc, "title");
    out->type = doc_str(doc, "type");
    if (out->type == NULL)
        out->type = xstrdup("group");
}

/* --- small helpers ------------------------------------------------------------------------ */

/* Parses a 24-hex id. Returns false when it is not one. */
static bool parse_oid(const char *id, bson_oid_t *oid)
{
    if (!util_oid_valid(id))
        return false;
    bson_oid_init_from_string(oid, id);
    return true;
}

static void append_str_or_null(bson_t *doc, const char *key, const char *v)
{
    if (v != NULL)
        BSON_APPEND_UTF8(doc, key, v);
    else
        BSON_APPEND_NULL(doc, key);
}

static void person_list_push(struct store_person_list *l, size_t *cap, const bson_t *doc,
                             bool anonymous)
{
    if (l->count == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        l->items = xrealloc(l->items, *cap * sizeof l->items[0]);
    }
    doc_to_person(doc, anonymous, &l->items[l->count++]);
}

static void id_list_push(struct store_id_list *l, size_t *cap, const char id[OID_HEX_LEN + 1])
{
    if (l->count == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        l->ids = xrealloc(l->ids, *cap * sizeof l->ids[0]);
    }
    memcpy(l->ids[l->count++], id, OID_HEX_LEN + 1);
}

/* A client and a collection handle for one call. */
struct mcall {
    mongoc_client_pool_t *pool;
    mongoc_client_t *client;
    mongoc_collection_t *coll;
};

/* A call on the read pool (mcall_begin) or on the bulk pool (mcall_begin_bulk). */
static void mcall_begin_on(struct store_backend *b, struct mpool *p, const char *coll,
                           struct mcall *c)
{
    c->pool = p->pool;
    c->client = mongoc_client_pool_pop(p->pool);
    c->coll = mongoc_client_get_collection(c->client, b->_db, coll);
}

static void mcall_begin(struct store_backend *b, const char *coll, struct mcall *c)
{
    mcall_begin_on(b, &b->_read, coll, c);
}

static void mcall_begin_bulk(struct store_backend *b, const char *coll, struct mcall *c)
{
    mcall_begin_on(b, &b->_bulk, coll, c);
}

static void mcall_switch(struct store_backend *b, const char *coll, struct mcall *c)
{
    mongoc_collection_destroy(c->coll);
    c->coll = mongoc_client_get_collection(c->client, b->_db, coll);
}

static void mcall_end(struct store_backend *b, struct mcall *c)
{
    mongoc_collection_destroy(c->coll);
    mongoc_client_pool_push(c->pool, c->client);
}

typedef void (*doc_cb)(const bson_t *doc, void *arg);

/* Runs a find on the call's collection and calls cb for each document. Returns 0 or an error;
 * documents seen before a failure have been passed to cb (the caller discards them). */
static int find_each(struct mcall *c, const bson_t *filter, const bson_t *opts, doc_cb cb,
                     void *arg, const char *what)
{
    bson_error_t err;
    const bson_t *doc;
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c->coll, filter, opts, NULL);
    while (mongoc_cursor_next(cur, &doc))
        cb(doc, arg);
    int rc = 0;
    if (mongoc_cursor_error(cur, &err))
        rc = mongo_error(&err, what);
    mongoc_cursor_destroy(cur);
    return rc;
}

static void copy_first(const bson_t *doc, void *arg)
{
    bson_t **out = arg;
    if (*out == NULL)
        *out = bson_copy(doc);
}

/* Finds one document of the call's collection. Returns 0 with *out (bson_destroy it),
 * STORE_ERR_NOT_FOUND, or an error. */
static int find_one(struct mcall *c, const bson_t *filter, bson_t **out, const char *what)
{
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1), "singleBatch", BCON_BOOL(true));
    bson_t *doc = NULL;
    int rc = find_each(c, filter, opts, copy_first, &doc, what);
    bson_destroy(opts);
    if (rc != 0) {
        if (doc != NULL)
            bson_destroy(doc);
        return rc;
    }
    if (doc == NULL)
        return STORE_ERR_NOT_FOUND;
    *out = doc;
    return 0;
}

/* Whether a document with this _id exists in the call's collection. */
static int exists_by_id(struct mcall *c, const bson_oid_t *oid, const char *what)
{
    bson_t *filter = BCON_NEW("_id", BCON_OID(oid));
    bson_t *doc = NULL;
    int rc = find_one(c, filter, &doc, what);
    bson_destroy(filter);
    if (doc != NULL)
        bson_destroy(doc);
    return rc;
}

/* Counts documents of the call's collection matching filter. */
static int count_docs(struct mcall *c, const bson_t *filter, uint64_t *out, const char *what)
{
    bson_error_t err;
    int64_t n = mongoc_collection_count_documents(c->coll, filter, NULL, NULL, NULL, &err);
    if (n < 0)
        return mongo_error(&err, what);
    *out = (uint64_t)n;
    return 0;
}

/* The filter {isActive: {$ne: false}}: a membership is live unless marked inactive (Meeshy
 * keeps left members with isActive false; rows written by other tools may lack the field). */
static void append_active(bson_t *filter)
{
    bson_t ne;
    BSON_APPEND_DOCUMENT_BEGIN(filter, "isActive", &ne);
    BSON_APPEND_BOOL(&ne, "$ne", false);
    bson_append_document_end(filter, &ne);
}

/* --- lifecycle ---------------------------------------------------------------------------- */

/* Creates the indexes of one collection with one createIndexes command. An index that exists
 * with another name or options (85/86, e.g. Prisma's "User_username_key") is kept as it is:
 * then each index is created alone so the others are still made. */
static int create_indexes(struct store_backend *b, mongoc_client_t *client, const char *coll,
                          bson_t *const *specs, size_t n)
{
    bson_error_t err;
    bson_t reply;
    bson_t cmd = BSON_INITIALIZER, arr;
    char key[16];
    const char *k;

    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
    for (size_t i = 0; i < n; i++) {
        bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
        BSON_APPEND_DOCUMENT(&arr, k, specs[i]);
    }
    bson_append_array_end(&cmd, &arr);
    bool ok = mongoc_client_write_command_with_opts(client, b->_db, &cmd, NULL, &reply, &err);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    if (ok)
        return 0;
    if (err.code != MERR_INDEX_OPTIONS_CONFLICT && err.code != MERR_INDEX_KEY_SPECS_CONFLICT)
        return mongo_error(&err, "createIndexes");

    for (size_t i = 0; i < n; i++) {
        bson_t one = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&one, "createIndexes", coll);
        BSON_APPEND_ARRAY_BEGIN(&one, "indexes", &arr);
        BSON_APPEND_DOCUMENT(&arr, "0", specs[i]);
        bson_append_array_end(&one, &arr);
        ok = mongoc_client_write_command_with_opts(client, b->_db, &one, NULL, &reply, &err);
        bson_destroy(&reply);
        bson_destroy(&one);
        if (ok)
            continue;
        if (err.code == MERR_INDEX_OPTIONS_CONFLICT || err.code == MERR_INDEX_KEY_SPECS_CONFLICT) {
            log_info("MongoDB %s: keeping an existing index: %s", coll, err.message);
            continue;
        }
        return mongo_error(&err, "createIndexes");
    }
    return 0;
}

#define IDX1(name, f) BCON_NEW("key", "{", f, BCON_INT32(1), "}", "name", BCON_UTF8(name))
#define IDX1U(name, f)                                                                             \
    BCON_NEW("key", "{", f, BCON_INT32(1), "}", "name", BCON_UTF8(name), "unique", BCON_BOOL(true))
#define IDX2(name, f, g)                                                                           \
    BCON_NEW("key", "{", f, BCON_INT32(1), g, BCON_INT32(1), "}", "name", BCON_UTF8(name))
#define IDX2U(name, f, g)                                                                          \
    BCON_NEW("key", "{", f, BCON_INT32(1), g, BCON_INT32(1), "}", "name", BCON_UTF8(name),         \
             "unique", BCON_BOOL(true))

static int mongo_schema(struct store_backend *b)
{
    bson_t *user[4] = {
        IDX1("isOnline_1", "isOnline"),
        IDX1("lastActiveAt_1", "lastActiveAt"),
        IDX2("isOnline_1_lastActiveAt_1", "isOnline", "lastActiveAt"),
        IDX1U("username_1", "username"),
    };
    bson_t *anon[5] = {
        IDX1("isOnline_1", "isOnline"),
        IDX1("lastActiveAt_1", "lastActiveAt"),
        IDX2("isOnline_1_lastActiveAt_1", "isOnline", "lastActiveAt"),
        IDX1U("sessionToken_1", "sessionToken"),
        IDX1("conversationId_1", "conversationId"),
    };
    bson_t *member[3] = {
        IDX1("userId_1", "userId"),
        IDX1("conversationId_1", "conversationId"),
        IDX2U("conversationId_1_userId_1", "conversationId", "userId"),
    };
    mongoc_client_t *client = mongoc_client_pool_pop(b->_bulk.pool);
    int rc = create_indexes(b, client, COLL_USER, user, 4);
    if (rc == 0)
        rc = create_indexes(b, client, COLL_ANON, anon, 5);
    if (rc == 0)
        rc = create_indexes(b, client, COLL_MEMBER, member, 3);
    mongoc_client_pool_push(b->_bulk.pool, client);
    for (size_t i = 0; i < 4; i++)
        bson_destroy(user[i]);
    for (size_t i = 0; i < 5; i++)
        bson_destroy(anon[i]);
    for (size_t i = 0; i < 3; i++)
        bson_destroy(member[i]);
    return rc;
}

static void mongo_close(struct store_backend *b)
{
    if (b == NULL)
        return;
    struct mpool *pools[] = {&b->_read, &b->_bulk};
    for (size_t i = 0; i < 2; i++) {
        if (pools[i]->pool != NULL)
            mongoc_client_pool_destroy(pools[i]->pool);
        if (pools[i]->uri != NULL)
            mongoc_uri_destroy(pools[i]->uri);
    }
    free(b->_db);
    free(b);
}

static int mongo_open(const char *url, struct store_backend **out)
{
    int rc;
    pthread_once(&mongo_init_once, mongo_init);
    if (url == NULL ||
        (strncmp(url, "mongodb://", 10) != 0 && strncmp(url, "mongodb+srv://", 14) != 0))
        return STORE_ERR_INVALID;
    struct store_backend *b = xcalloc(1, sizeof *b);
    b->_read.uri = mongo_uri_prepare(url, MONGO_TIMEOUT_MS);
    b->_bulk.uri = mongo_uri_prepare(url, MONGO_BULK_SOCKET_MS);
    if (b->_read.uri == NULL || b->_bulk.uri == NULL) {
        rc = STORE_ERR_INVALID;
        goto fail;
    }
    b->_db = xstrdup(mongo_db_name(b->_read.uri));
    struct mpool *pools[] = {&b->_read, &b->_bulk};
    for (size_t i = 0; i < 2; i++) {
        bson_error_t err;
        pools[i]->pool = mongoc_client_pool_new_with_error(pools[i]->uri, &err);
        if (pools[i]->pool == NULL) {
            log_warnx("MongoDB: cannot create a client pool: %s", err.message);
            rc = STORE_ERR_INVALID;
            goto fail;
        }
        mongoc_client_pool_set_error_api(pools[i]->pool, MONGOC_ERROR_API_VERSION_2);
    }
    rc = mongo_schema(b);
    if (rc != 0)
        goto fail;
    log_info("store: MongoDB database \"%s\" ready", b->_db);
    *out = b;
    return 0;
fail:
    mongo_close(b);
    return rc;
}

static bool mongo_ping(struct store_backend *b)
{
    bson_error_t err;
    bson_t reply;
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    mongoc_client_t *client = mongoc_client_pool_pop(b->_read.pool);
    bool ok = mongoc_client_command_simple(client, b->_db, cmd, NULL, &reply, &err);
    mongoc_client_pool_push(b->_read.pool, client);
    bson_destroy(&reply);
    bson_destroy(cmd);
    if (!ok)
        log_debug("store ping: %s", err.message);
    return ok;
}

/* --- reads -------------------------------------------------------------------------------- */

static int mongo_person_get(struct store_backend *b, const char *id, struct store_person *out)
{
    bson_oid_t oid;
    if (!parse_oid(id, &oid))
        return STORE_ERR_INVALID;
    struct mcall c;
    bson_t *doc = NULL;
    bson_t *filter = BCON_NEW("_id", BCON_OID(&oid));
    bool anonymous = false;
    mcall_begin(b, COLL_USER, &c);
    int rc = find_one(&c, filter, &doc, "person_get");
    if (rc == STORE_ERR_NOT_FOUND) {
        anonymous = true;
        mcall_switch(b, COLL_ANON, &c);
        rc = find_one(&c, filter, &doc, "person_get");
    }
    mcall_end(b, &c);
    bson_destroy(filter);
    if (rc != 0)
        return rc;
    doc_to_person(doc, anonymous, out);
    bson_destroy(doc);
    return 0;
}

static int mongo_person_by_session_token(struct store_backend *b, const char *token,
                                         struct store_person *out)
{
    if (token == NULL || token[0] == '\0')
        return STORE_ERR_INVALID;
    struct mcall c;
    bson_t *doc = NULL;
    bson_t *filter = BCON_NEW("sessionToken", BCON_UTF8(token));
    mcall_begin(b, COLL_ANON, &c);
    int rc = find_one(&c, filter, &doc, "person_by_session_token");
    mcall_end(b, &c);
    bson_destroy(filter);
    if (rc != 0)
        return rc;
    doc_to_person(doc, true, out);
    bson_destroy(doc);
    return 0;
}

struct id_collect {
    struct store_id_list list;
    size_t cap;
    const char *field;
};

static void collect_id(const bson_t *doc, void *arg)
{
    struct id_collect *ic = arg;
    char id[OID_HEX_LEN + 1];
    doc_oid(doc, ic->field, id);
    if (id[0] != '\0')
        id_list_push(&ic->list, &ic->cap, id);
}

static int mongo_person_conversations(struct store_backend *b, const struct store_person *p,
                                      struct store_id_list *out)
{
    struct id_collect ic = {.field = "conversationId"};
    if (p->is_anonymous) {
        if (p->conversation_id[0] != '\0')
            id_list_push(&ic.list, &ic.cap, p->conversation_id);
        *out = ic.list;
        return 0;
    }
    bson_oid_t oid;
    if (!parse_oid(p->id, &oid))
        return STORE_ERR_INVALID;
    bson_t *filter = BCON_NEW("userId", BCON_OID(&oid));
    append_active(filter);
    bson_t *opts =
        BCON_NEW("projection", "{", "conversationId", BCON_INT32(1), "_id", BCON_INT32(0), "}");
    struct mcall c;
    mcall_begin(b, COLL_MEMBER, &c);
    int rc = find_each(&c, filter, opts, collect_id, &ic, "person_conversations");
    mcall_end(b, &c);
    bson_destroy(filter);
    bson_destroy(opts);
    if (rc != 0) {
        store_id_list_free(&ic.list);
        return rc;
    }
    *out = ic.list;
    return 0;
}

static int mongo_is_member(struct store_backend *b, const char *cid, const struct store_person *p,
                           bool *out)
{
    bson_oid_t coid, uoid;
    if (!parse_oid(cid, &coid)) {
        *out = false;
        return 0;
    }
    struct mcall c;
    int rc;
    if (p->is_anonymous) {
        if (strcasecmp(p->conversation_id, cid) != 0) {
            *out = false;
            return 0;
        }
        /* Its own conversation: a member as long as the conversation exists. */
        mcall_begin(b, COLL_CONV, &c);
        rc = exists_by_id(&c, &coid, "is_member");
        mcall_end(b, &c);
    } else {
        if (!parse_oid(p->id, &uoid)) {
            *out = false;
            return 0;
        }
        /* A membership row is only written while its conversation exists (member_add). */
        bson_t *filter = BCON_NEW("conversationId", BCON_OID(&coid), "userId", BCON_OID(&uoid));
        append_active(filter);
        bson_t *doc = NULL;
        mcall_begin(b, COLL_MEMBER, &c);
        rc = find_one(&c, filter, &doc, "is_member");
        mcall_end(b, &c);
        bson_destroy(filter);
        if (doc != NULL)
            bson_destroy(doc);
    }
    if (rc != 0 && rc != STORE_ERR_NOT_FOUND)
        return rc;
    *out = rc == 0;
    return 0;
}

static int mongo_conversation_get(struct store_backend *b, const char *id,
                                  struct store_conversation *out)
{
    bson_oid_t oid;
    if (!parse_oid(id, &oid))
        return STORE_ERR_INVALID;
    struct mcall c;
    bson_t *doc = NULL;
    bson_t *filter = BCON_NEW("_id", BCON_OID(&oid));
    mcall_begin(b, COLL_CONV, &c);
    int rc = find_one(&c, filter, &doc, "conversation_get");
    mcall_end(b, &c);
    bson_destroy(filter);
    if (rc != 0)
        return rc;
    doc_to_conversation(doc, out);
    bson_destroy(doc);
    return 0;
}

/* The user ids of the live memberships of a conversation, as a BSON array {"0": oid, ...}
 * appended to dst under key. */
struct oid_array {
    bson_t *arr;
    uint32_t n;
};

static void collect_user_oid(const bson_t *doc, void *arg)
{
    struct oid_array *oa = arg;
    bson_iter_t it;
    char key[16];
    const char *k;
    if (bson_iter_init_find(&it, doc, "userId") && BSON_ITER_HOLDS_OID(&it)) {
        bson_uint32_to_string(oa->n++, &k, key, sizeof key);
        BSON_APPEND_OID(oa->arr, k, bson_iter_oid(&it));
    }
}

struct person_collect {
    struct store_person_list list;
    size_t cap;
    bool anonymous;
};

static void collect_person(const bson_t *doc, void *arg)
{
    struct person_collect *pc = arg;
    person_list_push(&pc->list, &pc->cap, doc, pc->anonymous);
}

/* Runs with an open call: the users who are live members of the conversation (their ids
 * first, then one $in find) and its anonymous participants, into pc (users) and apc. */
static int members_find(struct store_backend *b, struct mcall *c, const bson_oid_t *coid,
                        const bson_t *user_opts, doc_cb user_cb, void *user_arg,
                        const bson_t *anon_opts, doc_cb anon_cb, void *anon_arg)
{
    bson_t ids = BSON_INITIALIZER;
    struct oid_array oa = {.arr = &ids};
    bson_t *filter = BCON_NEW("conversationId", BCON_OID(coid));
    append_active(filter);
    bson_t *opts = BCON_NEW("projection", "{", "userId", BCON_INT32(1), "_id", BCON_INT32(0), "}");
    mcall_switch(b, COLL_MEMBER, c);
    int rc = find_each(c, filter, opts, collect_user_oid, &oa, "conversation members");
    bson_destroy(filter);
    bson_destroy(opts);
    if (rc == 0 && oa.n > 0) {
        bson_t in;
        filter = bson_new();
        BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &in);
        BSON_APPEND_ARRAY(&in, "$in", &ids);
        bson_append_document_end(filter, &in);
        mcall_switch(b, COLL_USER, c);
        rc = find_each(c, filter, user_opts, user_cb, user_arg, "conversation members");
        bson_destroy(filter);
    }
    bson_destroy(&ids);
    if (rc == 0) {
        filter = BCON_NEW("conversationId", BCON_OID(coid));
        mcall_switch(b, COLL_ANON, c);
        rc = find_each(c, filter, anon_opts, anon_cb, anon_arg, "conversation members");
        bson_destroy(filter);
    }
    return rc;
}

/* Moves every person of src to the end of dst; src is left empty (its array freed). */
static void list_concat(struct store_person_list *dst, struct store_person_list *src)
{
    if (src->count > 0) {
        dst->items = xrealloc(dst->items, (dst->count + src->count) * sizeof dst->items[0]);
        memcpy(dst->items + dst->count, src->items, src->count * sizeof src->items[0]);
        dst->count += src->count;
    }
    free(src->items);
    src->items = NULL;
    src->count = 0;
}

static int mongo_conversation_participants(struct store_backend *b, const char *cid,
                                           struct store_person_list *out)
{
    bson_oid_t coid;
    if (!parse_oid(cid, &coid))
        return STORE_ERR_INVALID;
    struct person_collect users = {.anonymous = false}, anons = {.anonymous = true};
    struct mcall c;
    mcall_begin(b, COLL_CONV, &c);
    int rc = exists_by_id(&c, &coid, "conversation_participants");
    if (rc == 0)
        rc = members_find(b, &c, &coid, NULL, collect_person, &users, NULL, collect_person, &anons);
    mcall_end(b, &c);
    if (rc != 0) {
        store_person_list_free(&users.list);
        store_person_list_free(&anons.list);
        return rc;
    }
    list_concat(&users.list, &anons.list); /* the users, then the anonymous participants */
    *out = users.list;
    return 0;
}

static int mongo_conversation_member_ids(struct store_backend *b, const char *cid,
                                         struct store_id_list *out)
{
    bson_oid_t coid;
    if (!parse_oid(cid, &coid))
        return STORE_ERR_INVALID;
    struct id_collect ic = {.field = "_id"};
    bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}");
    struct mcall c;
    mcall_begin(b, COLL_CONV, &c);
    int rc = exists_by_id(&c, &coid, "conversation_member_ids");
    if (rc == 0)
        rc = members_find(b, &c, &coid, opts, collect_id, &ic, opts, collect_id, &ic);
    mcall_end(b, &c);
    bson_destroy(opts);
    if (rc != 0) {
        store_id_list_free(&ic.list);
        return rc;
    }
    *out = ic.list;
    return 0;
}

static int mongo_count_online(struct store_backend *b, uint64_t *users, uint64_t *anonymous)
{
    uint64_t u = 0, a = 0;
    bson_t *filter = BCON_NEW("isOnline", BCON_BOOL(true));
    struct mcall c;
    mcall_begin(b, COLL_USER, &c);
    int rc = count_docs(&c, filter, &u, "count_online");
    if (rc == 0) {
        mcall_switch(b, COLL_ANON, &c);
        rc = count_docs(&c, filter, &a, "count_online");
    }
    mcall_end(b, &c);
    bson_destroy(filter);
    if (rc != 0)
        return rc;
    *users = u;
    *anonymous = a;
    return 0;
}

/* --- provisioning ------------------------------------------------------------------------- */

static int insert_doc(struct mcall *c, const bson_t *doc, const char *what)
{
    bson_error_t err;
    bson_t reply;
    bool ok = mongoc_collection_insert_one(c->coll, doc, NULL, &reply, &err);
    bson_destroy(&reply);
    return ok ? 0 : mongo_error(&err, what);
}

static int mongo_user_create(struct store_backend *b, const struct store_user_new *u,
                             struct store_person *out)
{
    bson_oid_t oid;
    if (u->username == NULL || u->username[0] == '\0')
        return STORE_ERR_INVALID;
    if (u->id != NULL) {
        if (!parse_oid(u->id, &oid))
            return STORE_ERR_INVALID;
    } else {
        bson_oid_init(&oid, NULL);
    }
    const char *role = u->role != NULL ? u->role : "USER";
    if (strlen(role) >= STORE_ROLE_LEN)
        return STORE_ERR_INVALID;

    bson_t *doc = bson_new();
    BSON_APPEND_OID(doc, "_id", &oid);
    BSON_APPEND_UTF8(doc, "username", u->username);
    append_str_or_null(doc, "displayName", u->display_name);
    append_str_or_null(doc, "firstName", u->first_name);
    append_str_or_null(doc, "lastName", u->last_name);
    append_str_or_null(doc, "email", u->email);
    append_str_or_null(doc, "avatar", u->avatar);
    BSON_APPEND_UTF8(doc, "role", role);
    BSON_APPEND_BOOL(doc, "isActive", u->is_active);
    BSON_APPEND_BOOL(doc, "isOnline", false);
    BSON_APPEND_NULL(doc, "lastSeen");
    BSON_APPEND_NULL(doc, "lastActiveAt");
    BSON_APPEND_DATE_TIME(doc, "createdAt", util_now_ms());

    struct mcall c;
    mcall_begin(b, COLL_ANON, &c);
    /* Ids are unique across users and anonymous participants; only a given id can clash. */
    int rc = u->id != NULL ? exists_by_id(&c, &oid, "user_create") : STORE_ERR_NOT_FOUND;
    if (rc == 0)
        rc = STORE_ERR_CONFLICT;
    else if (rc == STORE_ERR_NOT_FOUND) {
        mcall_switch(b, COLL_USER, &c);
        rc = insert_doc(&c, doc, "user_create");
    }
    mcall_end(b, &c);
    if (rc == 0)
        doc_to_person(doc, false, out);
    bson_destroy(doc);
    return rc;
}

static int mongo_conversation_create(struct store_backend *b, const char *id, const char *title,
                                     const char *type, struct store_conversation *out)
{
    bson_oid_t oid;
    if (id != NULL) {
        if (!parse_oid(id, &oid))
            return STORE_ERR_INVALID;
    } else {
        bson_oid_init(&oid, NULL);
    }
    bson_t *doc = bson_new();
    BSON_APPEND_OID(doc, "_id", &oid);
    append_str_or_null(doc, "title", title);
    BSON_APPEND_UTF8(doc, "type", type != NULL ? type : "group");
    BSON_APPEND_DATE_TIME(doc, "createdAt", util_now_ms());
    struct mcall c;
    mcall_begin(b, COLL_CONV, &c);
    int rc = insert_doc(&c, doc, "conversation_create");
    mcall_end(b, &c);
    if (rc == 0)
        doc_to_conversation(doc, out);
    bson_destroy(doc);
    return rc;
}

static int mongo_member_add(struct store_backend *b, const char *cid, const char *uid, int *added,
                            uint64_t own[2])
{
    (void)own; /* no changes_version here */
    bson_oid_t coid, uoid;
    if (!parse_oid(cid, &coid) || !parse_oid(uid, &uoid))
        return STORE_ERR_INVALID;
    struct mcall c;
    mcall_begin(b, COLL_CONV, &c);
    int rc = exists_by_id(&c, &coid, "member_add");
    if (rc == 0) {
        mcall_switch(b, COLL_USER, &c);
        rc = exists_by_id(&c, &uoid, "member_add");
    }
    if (rc != 0) {
        mcall_end(b, &c);
        return rc;
    }
    /* One upsert: a new row, a reactivated row (a member who had left), or nothing. The
     * server gives a new row its ObjectId _id. */
    bson_t *filter = BCON_NEW("conversationId", BCON_OID(&coid), "userId", BCON_OID(&uoid));
    bson_t *update =
        BCON_NEW("$set", "{", "isActive", BCON_BOOL(true), "}", "$setOnInsert", "{", "role",
                 BCON_UTF8("MEMBER"), "joinedAt", BCON_DATE_TIME(util_now_ms()), "}");
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    bson_t reply;
    bson_error_t err;
    bson_iter_t it;
    int n = 0;
    mcall_switch(b, COLL_MEMBER, &c);
    if (mongoc_collection_update_one(c.coll, filter, update, opts, &reply, &err)) {
        if (bson_iter_init_find(&it, &reply, "upsertedCount"))
            n += (int)bson_iter_as_int64(&it);
        if (bson_iter_init_find(&it, &reply, "modifiedCount"))
            n += (int)bson_iter_as_int64(&it);
    } else {
        rc = mongo_error(&err, "member_add");
        /* Two concurrent adds of the same member: the other one inserted the row. */
        if (rc == STORE_ERR_CONFLICT)
            rc = 0;
    }
    bson_destroy(&reply);
    mcall_end(b, &c);
    bson_destroy(filter);
    bson_destroy(update);
    bson_destroy(opts);
    if (rc != 0)
        return rc;
    *added = n > 0 ? 1 : 0;
    return 0;
}

static int mongo_member_count(struct store_backend *b, const char *cid, uint64_t *out)
{
    bson_oid_t coid;
    if (!parse_oid(cid, &coid))
        return STORE_ERR_INVALID;
    bson_t *filter = BCON_NEW("conversationId", BCON_OID(&coid));
    append_active(filter);
    struct mcall c;
    mcall_begin(b, COLL_CONV, &c);
    int rc = exists_by_id(&c, &coid, "member_count");
    if (rc == 0) {
        mcall_switch(b, COLL_MEMBER, &c);
        rc = count_docs(&c, filter, out, "member_count");
    }
    mcall_end(b, &c);
    bson_destroy(filter);
    return rc;
}

static int mongo_anonymous_create(struct store_backend *b, const char *cid, const char *username,
                                  const char *session_token, struct store_person *out)
{
    bson_oid_t coid, oid;
    if (!parse_oid(cid, &coid) || username == NULL || username[0] == '\0' ||
        session_token == NULL || session_token[0] == '\0')
        return STORE_ERR_INVALID;
    bson_oid_init(&oid, NULL);
    bson_t *doc = bson_new();
    BSON_APPEND_OID(doc, "_id", &oid);
    BSON_APPEND_OID(doc, "conversationId", &coid);
    BSON_APPEND_UTF8(doc, "username", username);
    BSON_APPEND_UTF8(doc, "sessionToken", session_token);
    BSON_APPEND_BOOL(doc, "isActive", true);
    BSON_APPEND_BOOL(doc, "isOnline", false);
    BSON_APPEND_NULL(doc, "lastSeen");
    BSON_APPEND_NULL(doc, "lastActiveAt");
    BSON_APPEND_DATE_TIME(doc, "joinedAt", util_now_ms());
    struct mcall c;
    mcall_begin(b, COLL_CONV, &c);
    int rc = exists_by_id(&c, &coid, "anonymous_create");
    if (rc == 0) {
        mcall_switch(b, COLL_ANON, &c);
        rc = insert_doc(&c, doc, "anonymous_create");
    }
    mcall_end(b, &c);
    if (rc == 0)
        doc_to_person(doc, true, out);
    bson_destroy(doc);
    return rc;
}

/* --- presence writes ---------------------------------------------------------------------- */

/* The update document of one write: {$set: {isOnline?, lastActiveAt?, lastSeen?}}, or NULL
 * when the write sets nothing. */
static bson_t *write_update(const struct store_write *w)
{
    if (!w->set_online && w->last_active_at_ms == 0 && w->last_seen_ms == 0)
        return NULL;
    bson_t *u = bson_new(), set;
    BSON_APPEND_DOCUMENT_BEGIN(u, "$set", &set);
    if (w->set_online)
        BSON_APPEND_BOOL(&set, "isOnline", w->is_online);
    if (w->last_active_at_ms != 0)
        BSON_APPEND_DATE_TIME(&set, "lastActiveAt", w->last_active_at_ms);
    if (w->last_seen_ms != 0)
        BSON_APPEND_DATE_TIME(&set, "lastSeen", w->last_seen_ms);
    bson_append_document_end(u, &set);
    return u;
}

/* One unordered bulk of the writes of one kind (users or anonymous) into the call's
 * collection. Adds the documents matched to *rows. */
static int apply_bulk(struct mcall *c, const struct store_write *w, size_t n, bool anonymous,
                      uint64_t *rows)
{
    bson_error_t err;
    bson_t reply;
    bson_iter_t it;
    bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
    mongoc_bulk_operation_t *bulk =
        mongoc_collection_create_bulk_operation_with_opts(c->coll, opts);
    bson_destroy(opts);
    size_t queued = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        bson_oid_t oid;
        if (w[i].is_anonymous != anonymous)
            continue;
        if (!parse_oid(w[i].id, &oid)) {
            /* Cannot match any document; retrying would not help. */
            log_warnx("store apply_batch: skipping a write with a malformed id");
            continue;
        }
        bson_t *update = write_update(&w[i]);
        if (update == NULL)
            continue;
        bson_t *filter = BCON_NEW("_id", BCON_OID(&oid));
        bool ok = mongoc_bulk_operation_update_one_with_opts(bulk, filter, update, NULL, &err);
        bson_destroy(filter);
        bson_destroy(update);
        if (!ok) {
            rc = mongo_error(&err, "apply_batch");
            goto out;
        }
        queued++;
    }
    if (queued == 0)
        goto out;
    if (mongoc_bulk_operation_execute(bulk, &reply, &err) == 0)
        rc = mongo_error(&err, "apply_batch");
    else if (bson_iter_init_find(&it, &reply, "nMatched"))
        *rows += (uint64_t)bson_iter_as_int64(&it);
    bson_destroy(&reply);
out:
    mongoc_bulk_operation_destroy(bulk);
    return rc;
}

static int mongo_apply_batch(struct store_backend *b, const struct store_write *w, size_t n,
                             uint64_t *rows)
{
    uint64_t r = 0;
    bool any_user = false, any_anon = false;
    for (size_t i = 0; i < n; i++) {
        if (w[i].is_anonymous)
            any_anon = true;
        else
            any_user = true;
    }
    struct mcall c;
    int rc = 0;
    mcall_begin_bulk(b, COLL_USER, &c);
    if (any_user)
        rc = apply_bulk(&c, w, n, false, &r);
    if (rc == 0 && any_anon) {
        mcall_switch(b, COLL_ANON, &c);
        rc = apply_bulk(&c, w, n, true, &r);
    }
    mcall_end(b, &c);
    if (rc != 0)
        return rc;
    *rows = r;
    return 0;
}

/* --- maintenance -------------------------------------------------------------------------- */

static int mongo_zombies_find(struct store_backend *b, int64_t cutoff_ms,
                              struct store_person_list *out)
{
    /* {isOnline: true, $or: [{lastActiveAt: {$lt: cutoff}}, {lastActiveAt: null}]}; null
     * matches a missing field too. */
    bson_t *filter =
        BCON_NEW("isOnline", BCON_BOOL(true), "$or", "[", "{", "lastActiveAt", "{", "$lt",
                 BCON_DATE_TIME(cutoff_ms), "}", "}", "{", "lastActiveAt", BCON_NULL, "}", "]");
    bson_t *opts =
        BCON_NEW("hint", "{", "isOnline", BCON_INT32(1), "lastActiveAt", BCON_INT32(1), "}");
    struct person_collect users = {.anonymous = false}, anons = {.anonymous = true};
    struct mcall c;
    mcall_begin_bulk(b, COLL_USER, &c);
    int rc = find_each(&c, filter, opts, collect_person, &users, "zombies_find");
    if (rc == 0) {
        mcall_switch(b, COLL_ANON, &c);
        rc = find_each(&c, filter, opts, collect_person, &anons, "zombies_find");
    }
    mcall_end(b, &c);
    bson_destroy(filter);
    bson_destroy(opts);
    if (rc != 0) {
        store_person_list_free(&users.list);
        store_person_list_free(&anons.list);
        return rc;
    }
    list_concat(&users.list, &anons.list); /* the users, then the anonymous participants */
    *out = users.list;
    return 0;
}

static int mongo_reconcile_startup(struct store_backend *b, int64_t now_ms, uint64_t *count)
{
    bson_error_t err;
    bson_t reply;
    bson_iter_t it;
    uint64_t n = 0;
    bson_t *filter = BCON_NEW("isOnline", BCON_BOOL(true));
    /* An aggregation-pipeline update, so lastSeen can take each document's own lastActiveAt. */
    bson_t *pipeline =
        BCON_NEW("0", "{", "$set", "{", "lastSeen", "{", "$ifNull", "[", BCON_UTF8("$lastActiveAt"),
                 BCON_DATE_TIME(now_ms), "]", "}", "isOnline", BCON_BOOL(false), "}", "}");
    static const char *const colls[] = {COLL_USER, COLL_ANON};
    struct mcall c;
    int rc = 0;
    mcall_begin_bulk(b, COLL_USER, &c);
    for (size_t i = 0; i < 2 && rc == 0; i++) {
        if (i > 0)
            mcall_switch(b, colls[i], &c);
        if (mongoc_collection_update_many(c.coll, filter, pipeline, NULL, &reply, &err)) {
            if (bson_iter_init_find(&it, &reply, "matchedCount"))
                n += (uint64_t)bson_iter_as_int64(&it);
        } else {
            rc = mongo_error(&err, "reconcile_startup");
        }
        bson_destroy(&reply);
    }
    mcall_end(b, &c);
    bson_destroy(filter);
    bson_destroy(pipeline);
    if (rc != 0)
        return rc;
    *count = n;
    return 0;
}

const struct store_backend_ops store__mongo_ops = {
    .name = "mongodb",
    .open = mongo_open,
    .close = mongo_close,
    .ping = mongo_ping,
    .person_get = mongo_person_get,
    .person_by_session_token = mongo_person_by_session_token,
    .person_conversations = mongo_person_conversations,
    .is_member = mongo_is_member,
    .conversation_get = mongo_conversation_get,
    .conversation_participants = mongo_conversation_participants,
    .conversation_member_ids = mongo_conversation_member_ids,
    .count_online = mongo_count_online,
    .user_create = mongo_user_create,
    .conversation_create = mongo_conversation_create,
    .member_add = mongo_member_add,
    .member_count = mongo_member_count,
    .anonymous_create = mongo_anonymous_create,
    .apply_batch = mongo_apply_batch,
    .zombies_find = mongo_zombies_find,
    .reconcile_startup = mongo_reconcile_startup,
};
