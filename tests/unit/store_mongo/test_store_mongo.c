/*
 * test_store_mongo.c - the parts of the MongoDB backend that need no server: the URI defaults
 * (fail-fast timeouts, appname, database), the mapping of libmongoc errors to STORE_ERR_*
 * codes, documents to persons, and the $set of each kind of presence write. store_mongo.c is
 * included to reach its static functions. What goes on the wire is asserted by the mockupdb
 * scenarios (tests/mongo/), the semantics by the contract tests against minimongo.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "store/store_mongo.c"

/* The list helpers live in store.c, which this test does not link. */
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
    memset(l, 0, sizeof *l);
}

void store_id_list_free(struct store_id_list *l)
{
    free(l->ids);
    memset(l, 0, sizeof *l);
}

static int setup(void **state)
{
    pthread_once(&mongo_init_once, mongo_init);
    return 0;
}

static void test_uri_defaults(void **state)
{
    mongoc_uri_t *uri = mongo_uri_prepare("mongodb://127.0.0.1:27017", MONGO_TIMEOUT_MS);
    assert_non_null(uri);
    assert_int_equal(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 0),
                     MONGO_TIMEOUT_MS);
    assert_int_equal(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 0),
                     MONGO_TIMEOUT_MS);
    assert_int_equal(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 0),
                     MONGO_TIMEOUT_MS);
    assert_string_equal(mongoc_uri_get_appname(uri), "presence-gateway");
    assert_string_equal(mongo_db_name(uri), "meeshy");
    mongoc_uri_destroy(uri);
    /* The bulk pool's URI: a longer socket timeout, the same fail-fast selection. */
    uri = mongo_uri_prepare("mongodb://127.0.0.1:27017", MONGO_BULK_SOCKET_MS);
    assert_int_equal(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 0),
                     MONGO_BULK_SOCKET_MS);
    assert_int_equal(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 0),
                     MONGO_TIMEOUT_MS);
    mongoc_uri_destroy(uri);
}

static void test_uri_keeps_its_options(void **state)
{
    mongoc_uri_t *uri =
        mongo_uri_prepare("mongodb://u:p@127.0.0.1:27017,127.0.0.2:27018/chat?socketTimeoutMS=9000"
                          "&serverSelectionTimeoutMS=500&appname=mine&replicaSet=rs0",
                          MONGO_BULK_SOCKET_MS);
    assert_non_null(uri);
    assert_int_equal(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 0), 9000);
    assert_int_equal(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 0),
                     500);
    assert_int_equal(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 0),
                     MONGO_TIMEOUT_MS);
    assert_string_equal(mongoc_uri_get_appname(uri), "mine");
    assert_string_equal(mongo_db_name(uri), "chat");
    mongoc_uri_destroy(uri);
}

static void test_uri_srv(void **state)
{
    /* Parsed without a DNS look-up; the SRV records are resolved when the pool connects. */
    mongoc_uri_t *uri =
        mongo_uri_prepare("mongodb+srv://u:p@cluster0.example.net/meeshy_prod", MONGO_TIMEOUT_MS);
    assert_non_null(uri);
    assert_string_equal(mongo_db_name(uri), "meeshy_prod");
    assert_true(mongoc_uri_get_tls(uri)); /* implied by +srv */
    mongoc_uri_destroy(uri);
}

static void test_open_refuses_bad_urls(void **state)
{
    struct store_backend *b = (struct store_backend *)0x1;
    assert_int_equal(mongo_open("sqlite:x.db", &b), STORE_ERR_INVALID);
    assert_int_equal(mongo_open("mongodb://", &b), STORE_ERR_INVALID);
    assert_int_equal(mongo_open("mongodb://host:notaport/db", &b), STORE_ERR_INVALID);
    assert_int_equal(mongo_open(NULL, &b), STORE_ERR_INVALID);
    /* Out-parameter untouched on error. */
    assert_ptr_equal(b, (struct store_backend *)0x1);
}

static bson_error_t err_of(uint32_t domain, uint32_t code)
{
    bson_error_t e;
    memset(&e, 0, sizeof e);
    e.domain = domain;
    e.code = code;
    snprintf(e.message, sizeof e.message, "test error %u.%u", domain, code);
    return e;
}

static void test_error_mapping(void **state)
{
    static const struct {
        uint32_t domain, code;
        int want;
    } cases[] = {
        {MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_SOCKET, STORE_ERR_UNAVAILABLE},
        {MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_CONNECT, STORE_ERR_UNAVAILABLE},
        {MONGOC_ERROR_SERVER_SELECTION, MONGOC_ERROR_SERVER_SELECTION_FAILURE,
         STORE_ERR_UNAVAILABLE},
        {MONGOC_ERROR_SERVER, 11000, STORE_ERR_CONFLICT},
        {MONGOC_ERROR_COMMAND, 11000, STORE_ERR_CONFLICT},
        {MONGOC_ERROR_WRITE_CONCERN, 11000, STORE_ERR_CONFLICT},
        {MONGOC_ERROR_SERVER, 10107, STORE_ERR_UNAVAILABLE}, /* NotWritablePrimary */
        {MONGOC_ERROR_SERVER, 91, STORE_ERR_UNAVAILABLE},    /* ShutdownInProgress */
        {MONGOC_ERROR_SERVER, 2, STORE_ERR_INTERNAL},        /* BadValue */
        {MONGOC_ERROR_SERVER, 59, STORE_ERR_INTERNAL},       /* CommandNotFound */
        {MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_AUTHENTICATE, STORE_ERR_UNAVAILABLE},
        {MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID, STORE_ERR_INTERNAL},
        /* A client-side code equal to a server's duplicate-key code is not a conflict. */
        {MONGOC_ERROR_CLIENT, 6, STORE_ERR_INTERNAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bson_error_t e = err_of(cases[i].domain, cases[i].code);
        assert_int_equal(mongo_error(&e, "test"), cases[i].want);
    }
}

static void test_user_document(void **state)
{
    bson_oid_t id;
    bson_oid_init_from_string(&id, "65a1b2c3d4e5f60718293a4b");
    bson_t *doc = BCON_NEW("_id", BCON_OID(&id), "username", BCON_UTF8("ada"), "displayName",
                           BCON_UTF8("Ada L"), "firstName", BCON_NULL, "email",
                           BCON_UTF8("ada@example.org"), "role", BCON_UTF8("ADMIN"), "isActive",
                           BCON_BOOL(false), "isOnline", BCON_BOOL(true), "lastSeen", BCON_NULL,
                           "lastActiveAt", BCON_DATE_TIME(1700000000123));
    struct store_person p;
    doc_to_person(doc, false, &p);
    assert_string_equal(p.id, "65a1b2c3d4e5f60718293a4b");
    assert_false(p.is_anonymous);
    assert_string_equal(p.username, "ada");
    assert_string_equal(p.display_name, "Ada L");
    assert_null(p.first_name);
    assert_null(p.last_name);
    assert_null(p.avatar);
    assert_string_equal(p.email, "ada@example.org");
    assert_string_equal(p.role, "ADMIN");
    assert_false(p.is_active);
    assert_true(p.is_online);
    assert_int_equal(p.last_active_at_ms, 1700000000123);
    assert_int_equal(p.last_seen_ms, 0);
    assert_string_equal(p.conversation_id, "");
    store_person_clear(&p);
    bson_destroy(doc);

    /* A sparse document written by another tool: defaults, string dates, string ids. */
    doc = BCON_NEW("_id", BCON_UTF8("65A1B2C3D4E5F60718293A4B"), "username", BCON_UTF8("bo"),
                   "lastSeen", BCON_UTF8("2023-11-14T22:13:20.5Z"));
    doc_to_person(doc, false, &p);
    assert_string_equal(p.id, "65a1b2c3d4e5f60718293a4b");
    assert_string_equal(p.role, "USER");
    assert_true(p.is_active);
    assert_false(p.is_online);
    assert_int_equal(p.last_seen_ms, 1700000000500);
    assert_int_equal(p.last_active_at_ms, 0);
    store_person_clear(&p);
    bson_destroy(doc);
}

static void test_anonymous_document(void **state)
{
    bson_oid_t id, cid;
    bson_oid_init_from_string(&id, "65a1b2c3d4e5f60718293a4c");
    bson_oid_init_from_string(&cid, "65a1b2c3d4e5f60718293a4d");
    bson_t *doc = BCON_NEW("_id", BCON_OID(&id), "conversationId", BCON_OID(&cid), "username",
                           BCON_UTF8("guest"), "sessionToken", BCON_UTF8("tok"), "isOnline",
                           BCON_BOOL(false), "lastSeen", BCON_DATE_TIME(42));
    struct store_person p;
    doc_to_person(doc, true, &p);
    assert_true(p.is_anonymous);
    assert_string_equal(p.conversation_id, "65a1b2c3d4e5f60718293a4d");
    assert_string_equal(p.role, "");
    assert_null(p.display_name);
    assert_true(p.is_active);
    assert_int_equal(p.last_seen_ms, 42);
    store_person_clear(&p);
    bson_destroy(doc);
}

static void assert_update_json(const struct store_write *w, const char *want)
{
    bson_t *u = write_update(w);
    if (want == NULL) {
        assert_null(u);
        return;
    }
    assert_non_null(u);
    char *json = bson_as_canonical_extended_json(u, NULL);
    assert_string_equal(json, want);
    bson_free(json);
    bson_destroy(u);
}

static void test_write_updates(void **state)
{
    struct store_write w = {.set_online = true, .is_online = true, .last_active_at_ms = 1000};
    assert_update_json(&w, "{ \"$set\" : { \"isOnline\" : true, \"lastActiveAt\" : { \"$date\" : "
                           "{ \"$numberLong\" : \"1000\" } } } }");
    struct store_write off = {.set_online = true, .is_online = false, .last_seen_ms = 2000};
    assert_update_json(&off, "{ \"$set\" : { \"isOnline\" : false, \"lastSeen\" : { \"$date\" : "
                             "{ \"$numberLong\" : \"2000\" } } } }");
    struct store_write act = {.last_active_at_ms = 3000};
    assert_update_json(&act, "{ \"$set\" : { \"lastActiveAt\" : { \"$date\" : "
                             "{ \"$numberLong\" : \"3000\" } } } }");
    /* An online then an offline merged by the front end: all three fields. */
    struct store_write both = {
        .set_online = true, .is_online = false, .last_active_at_ms = 1, .last_seen_ms = 2};
    assert_update_json(&both, "{ \"$set\" : { \"isOnline\" : false, \"lastActiveAt\" : { \"$date\" "
                              ": { \"$numberLong\" : \"1\" } }, \"lastSeen\" : { \"$date\" : { "
                              "\"$numberLong\" : \"2\" } } } }");
    struct store_write none = {0};
    assert_update_json(&none, NULL);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_defaults),
        cmocka_unit_test(test_uri_keeps_its_options),
        cmocka_unit_test(test_uri_srv),
        cmocka_unit_test(test_open_refuses_bad_urls),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_user_document),
        cmocka_unit_test(test_anonymous_document),
        cmocka_unit_test(test_write_updates),
    };
    int rc = cmocka_run_group_tests(tests, setup, NULL);
    mongoc_cleanup();
    return rc;
}
