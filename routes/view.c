/*
 * view.c - the JSON shape of a person (SPEC §3 "Shapes") and the order of the participants
 * list. Pure functions of a store_person and the clock, so that every route answers the same
 * fields with the same computed status, and the unit tests check the shape without a daemon.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/xmalloc.h"
#include "routes/route_internal.h"

static json_t *time_or_null(int64_t ms)
{
    char iso[ISO_TIME_LEN + 1];

    if (ms == 0)
        return json_null();
    util_iso_time(ms, iso);
    return json_string(iso);
}

static json_t *string_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

json_t *route__person_view(const struct store_person *p, int64_t now_ms, int64_t away_after_ms,
                           int64_t offline_after_ms, bool live, bool full)
{
    bool online = p->is_online || live;
    enum presence_status st =
        presence_compute(online, p->last_active_at_ms, now_ms, away_after_ms, offline_after_ms);
    json_t *v = json_object();

    json_object_set_new(v, "id", json_string(p->id));
    json_object_set_new(v, "username", string_or_null(p->username));
    json_object_set_new(v, "isAnonymous", json_boolean(p->is_anonymous));
    json_object_set_new(v, "isOnline", json_boolean(online));
    json_object_set_new(v, "status", json_string(presence_status_name(st)));
    json_object_set_new(v, "statusColor", json_string(presence_status_color(st)));
    json_object_set_new(v, "lastActiveAt", time_or_null(p->last_active_at_ms));
    json_object_set_new(v, "lastSeen", time_or_null(p->last_seen_ms));
    if (p->is_anonymous) {
        json_object_set_new(v, "conversationId", json_string(p->conversation_id));
        return v;
    }
    json_object_set_new(v, "displayName", string_or_null(p->display_name));
    json_object_set_new(v, "firstName", string_or_null(p->first_name));
    json_object_set_new(v, "lastName", string_or_null(p->last_name));
    json_object_set_new(v, "avatar", string_or_null(p->avatar));
    json_object_set_new(v, "role", json_string(p->role[0] ? p->role : "USER"));
    if (full) {
        json_object_set_new(v, "email", string_or_null(p->email));
        json_object_set_new(v, "isActive", json_boolean(p->is_active));
    }
    return v;
}

/* qsort has no context argument: sort an index array through a small key struct instead. */
struct sort_key {
    size_t index;
    bool online;
    enum presence_status status;
    const char *username;
    const char *id;
};

static int sort_key_cmp(const void *a, const void *b)
{
    const struct sort_key *x = a, *y = b;
    int c;

    if (x->online != y->online)
        return x->online ? -1 : 1;
    if (x->status != y->status)
        return x->status < y->status ? -1 : 1;
    c = strcasecmp(x->username ? x->username : "", y->username ? y->username : "");
    if (c != 0)
        return c;
    return strcmp(x->id, y->id);
}

void route__sort_participants(struct store_person *items, bool *live, size_t n, int64_t now_ms,
                              int64_t away_after_ms, int64_t offline_after_ms)
{
    struct sort_key *keys;
    struct store_person *tmp;
    bool *tmp_live;

    if (n < 2)
        return;
    keys = xcalloc(n, sizeof(*keys));
    tmp = xcalloc(n, sizeof(*tmp));
    tmp_live = xcalloc(n, sizeof(*tmp_live));
    for (size_t i = 0; i < n; i++) {
        bool online = items[i].is_online || live[i];
        keys[i].index = i;
        keys[i].online = online;
        keys[i].status = presence_compute(online, items[i].last_active_at_ms, now_ms, away_after_ms,
                                          offline_after_ms);
        keys[i].username = items[i].username;
        keys[i].id = items[i].id;
    }
    qsort(keys, n, sizeof(*keys), sort_key_cmp);
    /* Structs move by value: their strings keep a single owner. */
    for (size_t i = 0; i < n; i++) {
        tmp[i] = items[keys[i].index];
        tmp_live[i] = live[keys[i].index];
    }
    memcpy(items, tmp, n * sizeof(*items));
    memcpy(live, tmp_live, n * sizeof(*live));
    free(tmp_live);
    free(tmp);
    free(keys);
}
