/*
 * api.c - the REST handlers of SPEC §3 and their route table.
 *
 * Each handler runs on an MHD thread after http.c has matched the route and authenticated the
 * caller at the route's level; it validates its input, calls the store (reads and
 * provisioning block on it, which store.h allows off the loop threads) or a hook of the
 * gateway, and sets the answer with route__json / route__error. Ids are checked before they
 * reach the store, so a malformed id is a 400 and never a store error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"
#include "routes/route_internal.h"

#define USERNAME_MAX 100
#define TEXT_FIELD_MAX 1000

static json_t *view_of(struct route_req *r, const struct store_person *p, bool full)
{
    const struct gw_config *cfg = route__server(r)->cfg;

    return route__person_view(p, util_now_ms(), cfg->away_after_ms, cfg->offline_after_ms,
                              route__live(r, p->id), full);
}

static bool check_id(struct route_req *r, const char *id, const char *what)
{
    char msg[96];

    if (util_oid_valid(id))
        return true;
    snprintf(msg, sizeof(msg), "%s must be a 24-hex id", what);
    route__error(r, 400, "bad_request", msg);
    return false;
}

/* Reads an optional string field: absent or null gives NULL. Returns false (400 set) when the
 * field has another type or is longer than max. */
static bool opt_string(struct route_req *r, json_t *body, const char *key, size_t max,
                       const char **out)
{
    json_t *v = json_object_get(body, key);
    char msg[128];

    *out = NULL;
    if (v == NULL || json_is_null(v))
        return true;
    if (!json_is_string(v) || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(msg, sizeof(msg), "%s must be a string of at most %zu characters", key, max);
        route__error(r, 400, "bad_request", msg);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

static bool req_string(struct route_req *r, json_t *body, const char *key, size_t max,
                       const char **out)
{
    char msg[96];

    if (!opt_string(r, body, key, max, out))
        return false;
    if (*out == NULL || **out == '\0') {
        snprintf(msg, sizeof(msg), "%s is required", key);
        route__error(r, 400, "bad_request", msg);
        return false;
    }
    return true;
}

/* --- /api/users ------------------------------------------------------------------------------ */

static void handle_me(struct route_req *r)
{
    route__json(r, 200, view_of(r, &r->auth.person, true));
}

static void handle_user(struct route_req *r)
{
    struct store_person p = {0};
    int err;

    if (!check_id(r, r->params[0], "id"))
        return;
    err = store_person_get(route__server(r)->store, r->params[0], &p);
    if (err == 0 && p.is_anonymous)
        err = STORE_ERR_NOT_FOUND;
    if (err != 0) {
        store_person_clear(&p);
        route__store_error(r, err, "user");
        return;
    }
    route__json(r, 200, view_of(r, &p, false));
    store_person_clear(&p);
}

struct status_ctx {
    struct route_req *r;
    json_t *users, *not_found;
    json_t *seen; /* object used as a set: an id asked twice is answered once */
    int err;
};

static void status_one(void *cls, const char *s, size_t len)
{
    struct status_ctx *c = cls;
    char id[ROUTE_PARAM_LEN];
    struct store_person p = {0};
    int err;

    if (c->err != 0)
        return;
    if (len >= sizeof(id)) {
        /* Too long to be an id: report a bounded prefix. */
        json_array_append_new(c->not_found, json_stringn(s, sizeof(id) - 1));
        return;
    }
    memcpy(id, s, len);
    id[len] = '\0';
    if (json_object_get(c->seen, id) != NULL)
        return;
    json_object_set_new(c->seen, id, json_true());
    if (!util_oid_valid(id)) {
        json_array_append_new(c->not_found, json_string(id));
        return;
    }
    err = store_person_get(route__server(c->r)->store, id, &p);
    if (err == 0 && !p.is_anonymous)
        json_array_append_new(c->users, view_of(c->r, &p, false));
    else if (err == 0 || err == STORE_ERR_NOT_FOUND)
        json_array_append_new(c->not_found, json_string(id));
    else
        c->err = err;
    store_person_clear(&p);
}

static void count_one(void *cls, const char *s, size_t len)
{
    (void)cls;
    (void)s;
    (void)len;
}

static void handle_status(struct route_req *r)
{
    const char *ids = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "ids");
    struct status_ctx c = {0};
    char msg[96];

    if (ids == NULL) {
        route__error(r, 400, "bad_request", "the ids query parameter is required");
        return;
    }
    if (route__split_ids(ids, ROUTE_MAX_STATUS_IDS, count_one, NULL) < 0) {
        snprintf(msg, sizeof(msg), "at most %d ids per call", ROUTE_MAX_STATUS_IDS);
        route__error(r, 400, "bad_request", msg);
        return;
    }
    c.r = r;
    c.users = json_array();
    c.not_found = json_array();
    c.seen = json_object();
    route__split_ids(ids, ROUTE_MAX_STATUS_IDS, status_one, &c);
    json_decref(c.seen);
    if (c.err != 0) {
        json_decref(c.users);
        json_decref(c.not_found);
        route__store_error(r, c.err, "user");
        return;
    }
    route__json(r, 200, json_pack("{s:o, s:o}", "users", c.users, "notFound", c.not_found));
}

/* --- /api/conversations ---------------------------------------------------------------------- */

static void handle_participants(struct route_req *r)
{
    const struct http_server_view *v = route__server(r);
    const char *cid = r->params[0];
    struct store_person_list list = {0};
    bool *live;
    json_t *arr;
    int err;

    if (!check_id(r, cid, "conversation id"))
        return;
    if (!r->is_admin) {
        bool member = false;
        /* A service admin token has no person: it got here only through is_admin. */
        err = store_is_member(v->store, cid, &r->auth.person, &member);
        if (err != 0) {
            route__store_error(r, err, "conversation");
            return;
        }
        if (!member) {
            struct store_conversation conv = {0};
            err = store_conversation_get(v->store, cid, &conv);
            store_conversation_clear(&conv);
            if (err != 0)
                route__store_error(r, err, "conversation");
            else
                route__error(r, 403, "forbidden", "not a member of this conversation");
            return;
        }
    }
    err = store_conversation_participants(v->store, cid, &list);
    if (err != 0) {
        route__store_error(r, err, "conversation");
        return;
    }
    live = xcalloc(list.count ? list.count : 1, sizeof(*live));
    for (size_t i = 0; i < list.count; i++)
        live[i] = route__live(r, list.items[i].id);
    int64_t now = util_now_ms();
    route__sort_participants(list.items, live, list.count, now, v->cfg->away_after_ms,
                             v->cfg->offline_after_ms);
    arr = json_array();
    for (size_t i = 0; i < list.count; i++)
        json_array_append_new(arr, route__person_view(&list.items[i], now, v->cfg->away_after_ms,
                                                      v->cfg->offline_after_ms, live[i], false));
    free(live);
    store_person_list_free(&list);
    route__json(r, 200, json_pack("{s:s, s:o}", "conversationId", cid, "participants", arr));
}

/* --- /api/admin: provisioning ---------------------------------------------------------------- */

static void handle_admin_user(struct route_req *r)
{
    json_t *body = route__body_object(r);
    struct store_user_new u = {0};
    struct store_person p = {0};
    json_t *active;
    int err;

    if (body == NULL)
        return;
    if (!req_string(r, body, "username", USERNAME_MAX, &u.username) ||
        !opt_string(r, body, "id", OID_HEX_LEN, &u.id) ||
        !opt_string(r, body, "displayName", TEXT_FIELD_MAX, &u.display_name) ||
        !opt_string(r, body, "firstName", TEXT_FIELD_MAX, &u.first_name) ||
        !opt_string(r, body, "lastName", TEXT_FIELD_MAX, &u.last_name) ||
        !opt_string(r, body, "email", TEXT_FIELD_MAX, &u.email) ||
        !opt_string(r, body, "avatar", TEXT_FIELD_MAX, &u.avatar) ||
        !opt_string(r, body, "role", STORE_ROLE_LEN - 1, &u.role))
        goto out;
    if (u.id != NULL && !check_id(r, u.id, "id"))
        goto out;
    if (u.role != NULL && strcmp(u.role, "USER") != 0 && strcmp(u.role, "ADMIN") != 0 &&
        strcmp(u.role, "BIGBOSS") != 0) {
        route__error(r, 400, "bad_request", "role must be USER, ADMIN or BIGBOSS");
        goto out;
    }
    active = json_object_get(body, "isActive");
    if (active != NULL && !json_is_null(active) && !json_is_boolean(active)) {
        route__error(r, 400, "bad_request", "isActive must be a boolean");
        goto out;
    }
    u.is_active = active == NULL || json_is_null(active) || json_is_true(active);
    err = store_user_create(route__server(r)->store, &u, &p);
    if (err != 0) {
        route__store_error(r, err, "a user with this id or username");
        goto out;
    }
    route__json(r, 201, view_of(r, &p, true));
    store_person_clear(&p);
out:
    json_decref(body);
}

static void handle_admin_conversation(struct route_req *r)
{
    json_t *body;
    const char *id = NULL, *title = NULL, *type = NULL;
    struct store_conversation c = {0};
    int err;

    /* Every field is optional: an empty body creates a group. */
    if (r->body_len == 0)
        body = json_object();
    else if ((body = route__body_object(r)) == NULL)
        return;
    if (!opt_string(r, body, "id", OID_HEX_LEN, &id) ||
        !opt_string(r, body, "title", TEXT_FIELD_MAX, &title) ||
        !opt_string(r, body, "type", 32, &type))
        goto out;
    if (id != NULL && !check_id(r, id, "id"))
        goto out;
    if (type != NULL && *type == '\0') {
        route__error(r, 400, "bad_request", "type must not be empty");
        goto out;
    }
    err = store_conversation_create(route__server(r)->store, id, title, type, &c);
    if (err != 0) {
        route__store_error(r, err, "a conversation with this id");
        goto out;
    }
    route__json(r, 201,
                json_pack("{s:s, s:o, s:s, s:i}", "id", c.id, "title",
                          c.title ? json_string(c.title) : json_null(), "type",
                          c.type ? c.type : "group", "members", 0));
    store_conversation_clear(&c);
out:
    json_decref(body);
}

static void handle_admin_member(struct route_req *r)
{
    const struct http_server_view *v = route__server(r);
    const char *cid = r->params[0];
    const char *uid;
    json_t *body;
    uint64_t members = 0;
    int added = 0, err;

    if (!check_id(r, cid, "conversation id"))
        return;
    if ((body = route__body_object(r)) == NULL)
        return;
    if (!req_string(r, body, "userId", OID_HEX_LEN + 8, &uid) || !check_id(r, uid, "userId"))
        goto out;
    err = store_member_add(v->store, cid, uid, &added);
    if (err == 0)
        err = store_member_count(v->store, cid, &members);
    if (err != 0) {
        route__store_error(r, err, "conversation or user");
        goto out;
    }
    if (added && v->hooks != NULL && v->hooks->member_added != NULL)
        v->hooks->member_added(v->hooks->cls, cid, uid);
    route__json(r, 201,
                json_pack("{s:s, s:i, s:I}", "conversationId", cid, "added", added, "members",
                          (json_int_t)members));
out:
    json_decref(body);
}

static void handle_admin_anonymous(struct route_req *r)
{
    json_t *body = route__body_object(r);
    const char *cid, *username;
    struct store_person p = {0};
    char token[65];
    json_t *view;
    int err;

    if (body == NULL)
        return;
    if (!req_string(r, body, "conversationId", OID_HEX_LEN + 8, &cid) ||
        !check_id(r, cid, "conversationId") ||
        !req_string(r, body, "username", USERNAME_MAX, &username))
        goto out;
    err = store_anonymous_create(route__server(r)->store, cid, username, &p, token);
    if (err != 0) {
        route__store_error(r, err, "conversation");
        goto out;
    }
    view = view_of(r, &p, false);
    json_object_set_new(view, "sessionToken", json_string(token));
    explicit_bzero(token, sizeof(token));
    route__json(r, 201, view);
    store_person_clear(&p);
out:
    json_decref(body);
}

/* --- /api/admin: hooks into the Socket.IO engine and maintenance ----------------------------- */

static void unavailable(struct route_req *r, const char *what)
{
    route__error(r, 503, "unavailable", what);
}

static void handle_maint_stats(struct route_req *r)
{
    const struct http_hooks *h = route__server(r)->hooks;
    json_t *j;

    if (h == NULL || h->maintenance_stats == NULL) {
        unavailable(r, "maintenance is not running");
        return;
    }
    if ((j = h->maintenance_stats(h->cls)) == NULL) {
        unavailable(r, "maintenance stats are unavailable");
        return;
    }
    route__json(r, 200, j);
}

static void handle_maint_cleanup(struct route_req *r)
{
    const struct http_hooks *h = route__server(r)->hooks;
    json_t *j;

    if (h == NULL || h->maintenance_cleanup == NULL) {
        unavailable(r, "maintenance is not running");
        return;
    }
    if ((j = h->maintenance_cleanup(h->cls)) == NULL) {
        unavailable(r, "the cleanup could not run (store unavailable)");
        return;
    }
    route__json(r, 200, j);
}

static void handle_disconnect(struct route_req *r)
{
    const struct http_server_view *v = route__server(r);
    const struct http_hooks *h = v->hooks;
    const char *uid = r->params[0];
    struct store_person p = {0};
    int err, n;

    if (!check_id(r, uid, "userId"))
        return;
    if (h == NULL || h->disconnect_user == NULL) {
        unavailable(r, "the Socket.IO engine is not running");
        return;
    }
    /* Live connections can be closed without the store: only a definite "unknown" is 404. */
    err = store_person_get(v->store, uid, &p);
    store_person_clear(&p);
    if (err == STORE_ERR_NOT_FOUND) {
        route__store_error(r, err, "user");
        return;
    }
    n = h->disconnect_user(h->cls, uid);
    route__json(r, 200, json_pack("{s:s, s:i}", "userId", uid, "disconnected", n < 0 ? 0 : n));
}

/* Order matters where patterns overlap: fixed segments come before ":id". */
const struct route_def route__table[] = {
    {ROUTE_GET, "/api/users/me", handle_me, ROUTE_PERSON},
    {ROUTE_GET, "/api/users/status", handle_status, ROUTE_PERSON},
    {ROUTE_GET, "/api/users/:id", handle_user, ROUTE_PERSON},
    {ROUTE_GET, "/api/conversations/:id/participants", handle_participants, ROUTE_MEMBER},
    {ROUTE_POST, "/api/admin/users", handle_admin_user, ROUTE_ADMIN},
    {ROUTE_POST, "/api/admin/conversations", handle_admin_conversation, ROUTE_ADMIN},
    {ROUTE_POST, "/api/admin/conversations/:id/members", handle_admin_member, ROUTE_ADMIN},
    {ROUTE_POST, "/api/admin/anonymous", handle_admin_anonymous, ROUTE_ADMIN},
    {ROUTE_GET, "/api/admin/maintenance/stats", handle_maint_stats, ROUTE_ADMIN},
    {ROUTE_POST, "/api/admin/maintenance/cleanup-zombies", handle_maint_cleanup, ROUTE_ADMIN},
    {ROUTE_POST, "/api/admin/users/:userId/disconnect", handle_disconnect, ROUTE_ADMIN},
};
const size_t route__table_len = sizeof(route__table) / sizeof(route__table[0]);
