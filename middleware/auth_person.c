/*
 * auth_person.c - from a credential to a person: the rules of SPEC §3 "Tokens" and "Admin"
 * that need the store.
 *
 * A JWT names a person by id; the person must exist and be active. On admin routes a valid
 * ADMIN/BIGBOSS token is enough when its id is not stored (a service token), but a stored
 * user must be active and still hold an admin role, so demoting an admin revokes their old
 * tokens. An anonymous participant presents its session token and is never an admin.
 *
 * Store failures (backend down) are AUTH_ERR_STORE so callers answer 503, never 401: a
 * client must not drop a good token because the database blinked.
 */
#include <string.h>

#include "middleware/auth.h"
#include "middleware/auth_private.h"

/* Session tokens we issue are 64 hex characters; refuse anything far off before a lookup. */
#define AUTH_MAX_SESSION_TOKEN_LEN 256

static bool role_is_admin(const char *role)
{
    return strcmp(role, "ADMIN") == 0 || strcmp(role, "BIGBOSS") == 0;
}

static int map_store_err(int rc)
{
    switch (rc) {
    case STORE_ERR_NOT_FOUND:
    case STORE_ERR_INVALID:
        return AUTH_ERR_UNKNOWN_PERSON;
    default:
        return AUTH_ERR_STORE;
    }
}

static bool session_token_ok(const char *t)
{
    size_t len = strnlen(t, AUTH_MAX_SESSION_TOKEN_LEN + 1);
    if (len == 0 || len > AUTH_MAX_SESSION_TOKEN_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)t[i] <= ' ' || (unsigned char)t[i] >= 0x7f)
            return false;
    return true;
}

static int by_session(struct store *s, const char *token, bool require_admin, bool cached,
                      struct auth_result *r)
{
    if (!session_token_ok(token))
        return AUTH_ERR_UNKNOWN_PERSON;
    int rc = cached ? store_person_by_session_token_cached(s, token, &r->person)
                    : store_person_by_session_token(s, token, &r->person);
    if (rc == STORE_ERR_WOULD_BLOCK)
        return AUTH_ERR_WOULD_BLOCK;
    if (rc != 0)
        return map_store_err(rc);
    r->has_person = true;
    if (!r->person.is_active)
        return AUTH_ERR_UNKNOWN_PERSON;
    if (require_admin)
        return AUTH_ERR_FORBIDDEN;
    return 0;
}

static int by_jwt(const struct auth_ctx *a, struct store *s, const char *jwt, bool require_admin,
                  bool cached, int64_t now_s, struct auth_result *r)
{
    int rc = cached ? auth__verify_jwt_cached(a, jwt, now_s, &r->claims)
                    : auth_verify_jwt(a, jwt, now_s, &r->claims);
    if (rc != 0)
        return rc;
    r->has_claims = true;

    /* Ids are ObjectIds in both backends: anything else cannot be stored, skip the lookup. */
    if (!util_oid_valid(r->claims.person_id))
        rc = STORE_ERR_NOT_FOUND;
    else if (cached)
        rc = store_person_get_cached(s, r->claims.person_id, &r->person);
    else
        rc = store_person_get(s, r->claims.person_id, &r->person);
    if (rc == STORE_ERR_WOULD_BLOCK)
        return AUTH_ERR_WOULD_BLOCK;
    if (rc == STORE_ERR_NOT_FOUND || rc == STORE_ERR_INVALID) {
        if (require_admin && r->claims.is_admin) {
            r->is_admin = true; /* a service token of an operator */
            return 0;
        }
        return AUTH_ERR_UNKNOWN_PERSON;
    }
    if (rc != 0)
        return AUTH_ERR_STORE;
    r->has_person = true;
    if (!r->person.is_active)
        return AUTH_ERR_UNKNOWN_PERSON;
    r->is_admin = r->claims.is_admin && !r->person.is_anonymous && role_is_admin(r->person.role);
    if (require_admin && !r->is_admin)
        return AUTH_ERR_FORBIDDEN;
    return 0;
}

static int authenticate(const struct auth_ctx *a, const char *bearer_jwt, const char *session_token,
                        bool require_admin, bool cached, int64_t now_s, struct auth_result *out)
{
    if (a == NULL || (bearer_jwt == NULL) == (session_token == NULL))
        return AUTH_ERR_MISSING;
    struct store *s = auth__store(a);
    if (s == NULL)
        return AUTH_ERR_STORE;

    struct auth_result r;
    memset(&r, 0, sizeof(r));
    int rc = bearer_jwt != NULL ? by_jwt(a, s, bearer_jwt, require_admin, cached, now_s, &r)
                                : by_session(s, session_token, require_admin, cached, &r);
    if (rc == AUTH_ERR_WOULD_BLOCK && r.has_claims) {
        /* only the store read is missing: the verified claims, for a reconnect ticket */
        struct auth_claims claims = r.claims;
        auth_result_clear(&r);
        memset(out, 0, sizeof(*out));
        out->has_claims = true;
        out->claims = claims;
        return rc;
    }
    if (rc != 0) {
        auth_result_clear(&r);
        return rc;
    }
    *out = r;
    return 0;
}

int auth_authenticate(const struct auth_ctx *a, const char *bearer_jwt, const char *session_token,
                      bool require_admin, int64_t now_s, struct auth_result *out)
{
    return authenticate(a, bearer_jwt, session_token, require_admin, false, now_s, out);
}

int auth_authenticate_cached(const struct auth_ctx *a, const char *bearer_jwt,
                             const char *session_token, bool require_admin, int64_t now_s,
                             struct auth_result *out)
{
    return authenticate(a, bearer_jwt, session_token, require_admin, true, now_s, out);
}

int auth_authenticate_ticket(const struct auth_ctx *a, struct auth_result *r,
                             struct store_id_list *convs)
{
    struct store *s = a != NULL ? auth__store(a) : NULL;
    if (s == NULL || r == NULL || !r->has_claims || r->has_person ||
        !util_oid_valid(r->claims.person_id) ||
        store_ticket_take(s, r->claims.person_id, &r->person, convs) != 0)
        return AUTH_ERR_WOULD_BLOCK;
    r->has_person = true;
    return 0;
}

void auth_result_clear(struct auth_result *r)
{
    if (r == NULL)
        return;
    store_person_clear(&r->person);
    memset(r, 0, sizeof(*r));
}
