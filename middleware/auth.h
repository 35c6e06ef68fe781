/*
 * auth.h - token verification and the authentication rules of SPEC §3/§4, shared by the REST
 * middleware and the Socket.IO handshake.
 *
 * JWTs are HS256 only (libjwt 1.10: alg checked by hand, never a NULL key, exp/nbf checked by
 * hand; STACK-NOTES §4). The person id is the "userId" claim, else "sub"; "role" ADMIN or
 * BIGBOSS grants admin. Anonymous participants present their session token instead.
 *
 * Threads: every function may be called from any thread; the context is immutable after
 * auth_new(). auth_authenticate reads the store and so blocks on it: not on a loop thread
 * (auth_authenticate_cached never blocks).
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "store/store.h"

#define AUTH_ERR_INVALID_TOKEN                                                                     \
    (-1) /* malformed, bad signature, wrong alg, expired, not yet valid */
#define AUTH_ERR_UNKNOWN_PERSON (-2) /* id not in the store, or user inactive */
#define AUTH_ERR_FORBIDDEN (-3)      /* admin required and not granted */
#define AUTH_ERR_STORE (-4)          /* the store failed: 503 */
#define AUTH_ERR_MISSING (-5)        /* no credentials at all */
#define AUTH_ERR_WOULD_BLOCK (-6)    /* auth_authenticate_cached: needs a worker */

/* The claims of a verified JWT. */
struct auth_claims {
    char person_id[OID_HEX_LEN + 1 + 40]; /* as given; may not be an ObjectId */
    char role[16];                        /* "" when absent */
    bool is_admin;                        /* role ADMIN or BIGBOSS */
    int64_t exp;                          /* 0 when absent */
};

struct auth_ctx;

/* Keeps a copy of the secret (wiped with explicit_bzero by auth_free). Returns NULL when the
 * secret is NULL or empty (libjwt would then skip the signature check). store may be NULL in
 * programs that only verify or mint tokens; auth_authenticate then answers AUTH_ERR_STORE. */
struct auth_ctx *auth_new(const char *secret, size_t secret_len, struct store *store);
void auth_free(struct auth_ctx *a);

/* Verifies a JWT string. Returns 0 and fills *out, or AUTH_ERR_INVALID_TOKEN. */
int auth_verify_jwt(const struct auth_ctx *a, const char *token, int64_t now_s,
                    struct auth_claims *out);

/* Mints an HS256 JWT {userId, sub, role?, iat, exp} valid ttl_s seconds (ttl_s 0: no exp).
 * Returns a malloc'ed string (free()), or NULL on failure. role may be NULL. */
char *auth_mint_jwt(const char *secret, size_t secret_len, const char *person_id, const char *role,
                    int64_t ttl_s, int64_t now_s);

/* The outcome of authenticating one request or handshake. */
struct auth_result {
    struct store_person person; /* filled when the person is in the store */
    bool has_person;            /* false only for an admin service token not in the store */
    bool is_admin;
    bool has_claims;           /* claims are a verified JWT's (also on AUTH_ERR_WOULD_BLOCK) */
    struct auth_claims claims; /* zeroed for session tokens */
};
void auth_result_clear(struct auth_result *r);

/* Authenticates a person with a JWT (bearer) or an anonymous session token; exactly one of
 * them may be non-NULL, else AUTH_ERR_MISSING. With require_admin, a valid ADMIN/BIGBOSS
 * token is enough even when its id is not in the store; when the id is in the store the user
 * must be active and still hold an admin role (else UNKNOWN_PERSON for inactive,
 * FORBIDDEN for demoted). Without require_admin the person must exist and be active.
 * Returns 0 and fills *out, or an AUTH_ERR_* code. */
int auth_authenticate(const struct auth_ctx *a, const char *bearer_jwt, const char *session_token,
                      bool require_admin, int64_t now_s, struct auth_result *out);

/* auth_authenticate for a thread that must not block (a Socket.IO loop): the same answer,
 * from the verified-token cache and the store's cache only, or AUTH_ERR_WOULD_BLOCK when it
 * needs a full JWT verification or a store read (then call auth_authenticate on a worker,
 * which fills both caches). On AUTH_ERR_WOULD_BLOCK for a store read, out holds the token's
 * verified claims only (has_claims), for auth_authenticate_ticket; clear it either way. */
int auth_authenticate_cached(const struct auth_ctx *a, const char *bearer_jwt,
                             const char *session_token, bool require_admin, int64_t now_s,
                             struct auth_result *out);

/* For a Socket.IO handshake that auth_authenticate_cached could not answer for want of a
 * store read: r is what it left (a token already verified: has_claims). A user back within
 * seconds of its last disconnect whose reconnect ticket is still good (store_ticket_take; it is
 * used up) gets 0 with r->person (a ticket's fields only) and *convs filled; anything else
 * AUTH_ERR_WOULD_BLOCK, r unchanged. The token is not verified again (one SHA-256 less). */
int auth_authenticate_ticket(const struct auth_ctx *a, struct auth_result *r,
                             struct store_id_list *convs);

/* Extracts the token from an "Authorization" header value ("Bearer xxx", scheme
 * case-insensitive). Returns a pointer into value, or NULL. */
const char *auth_bearer_from_header(const char *value);

#endif
