/*
 * auth.c - JSON Web Tokens: verification of the HS256 tokens clients present, minting of the
 * tokens the `token` subcommand prints, and the Bearer header parser (SPEC §3 "Tokens").
 *
 * libjwt 1.10 checks the signature only; everything else is ours (STACK-NOTES §4). It accepts
 * any token, alg "none" included, when the key is NULL or empty, so auth_new() refuses an
 * empty secret and jwt_decode() always gets the real key. It also accepts HS384/HS512 tokens
 * signed with the right key, so the algorithm is checked twice: the enum libjwt reports and
 * the header's own "alg" string. It has no claim validation, and jwt_get_grant_int() turns a
 * string "exp" into 0 without an error, so the claims are re-read with jansson and typed
 * strictly: exp and nbf must be JSON integers, the person id a non-empty string.
 *
 * Before libjwt sees a token, its shape is checked: bounded length, exactly three non-empty
 * base64url segments. libjwt splits on the first two dots only and would otherwise pass
 * surprising input to its base64 decoder.
 *
 * The store lookups of auth_authenticate() live in auth_person.c, so this file links
 * without the store.
 */
#include "middleware/auth.h"

#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/xmalloc.h"
#include "middleware/auth_private.h"

/* Far above any token of ours (≈ 250 B); refuses memory-hungry garbage early. */
#define AUTH_MAX_TOKEN_LEN 8192

struct auth_ctx {
    unsigned char *_secret;
    size_t _secret_len;
    struct store *_store;
};

struct auth_ctx *auth_new(const char *secret, size_t secret_len, struct store *store)
{
    /* An empty key makes libjwt skip the signature check entirely. */
    if (secret == NULL || secret_len == 0 || secret_len > INT_MAX) {
        log_warnx("%s: refusing an empty or oversized secret", __func__);
        return NULL;
    }
    struct auth_ctx *a = xcalloc(1, sizeof(*a));
    a->_secret = xmalloc(secret_len);
    memcpy(a->_secret, secret, secret_len);
    a->_secret_len = secret_len;
    a->_store = store;
    return a;
}

void auth_free(struct auth_ctx *a)
{
    if (a == NULL)
        return;
    explicit_bzero(a->_secret, a->_secret_len);
    free(a->_secret);
    explicit_bzero(a, sizeof(*a));
    free(a);
}

struct store *auth__store(const struct auth_ctx *a)
{
    return a->_store;
}

static bool is_b64url(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* True when token is three non-empty base64url segments separated by two dots. */
static bool jwt_shape_ok(const char *token)
{
    size_t len = strnlen(token, AUTH_MAX_TOKEN_LEN + 1);
    if (len == 0 || len > AUTH_MAX_TOKEN_LEN)
        return false;
    int dots = 0;
    size_t seg = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        if (c == '.') {
            if (seg == 0 || ++dots > 2)
                return false;
            seg = 0;
        } else if (is_b64url(c)) {
            seg++;
        } else {
            return false;
        }
    }
    return dots == 2 && seg > 0;
}

/* Reads an optional integer claim. Returns 0 (absent: *present false), or -1 when the claim
 * is there but not an integer ("exp": "123" is invalid, not "no expiry"). */
static int claim_int(json_t *grants, const char *name, bool *present, int64_t *out)
{
    json_t *v = json_object_get(grants, name);
    *present = false;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return -1;
    *present = true;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* Checks the claims of a token whose signature and algorithm are good, and fills *out. */
static int claims_check(json_t *grants, int64_t now_s, struct auth_claims *out)
{
    if (!json_is_object(grants))
        return AUTH_ERR_INVALID_TOKEN;

    bool has_exp, has_nbf;
    int64_t exp = 0, nbf = 0;
    if (claim_int(grants, "exp", &has_exp, &exp) < 0 || claim_int(grants, "nbf", &has_nbf, &nbf) < 0)
        return AUTH_ERR_INVALID_TOKEN;
    if (has_exp && exp <= now_s)
        return AUTH_ERR_INVALID_TOKEN;
    if (has_nbf && nbf > now_s)
        return AUTH_ERR_INVALID_TOKEN;

    /* "userId" wins when present; a non-string userId is an error, not a reason to fall back. */
    json_t *id = json_object_get(grants, "userId");
    if (id == NULL || json_is_null(id))
        id = json_object_get(grants, "sub");
    if (!json_is_string(id))
        return AUTH_ERR_INVALID_TOKEN;
    size_t id_len = json_string_length(id);
    if (id_len == 0 || id_len >= sizeof(out->person_id) || memchr(json_string_value(id), '\0', id_len))
        return AUTH_ERR_INVALID_TOKEN;

    struct auth_claims c;
    memset(&c, 0, sizeof(c));
    memcpy(c.person_id, json_string_value(id), id_len);
    c.person_id[id_len] = '\0';

    /* A role we do not know, or too long to be one, grants nothing; it is not an error. */
    json_t *role = json_object_get(grants, "role");
    if (json_is_string(role) && json_string_length(role) < sizeof(c.role) &&
        !memchr(json_string_value(role), '\0', json_string_length(role)))
        memcpy(c.role, json_string_value(role), json_string_length(role) + 1);
    c.is_admin = strcmp(c.role, "ADMIN") == 0 || strcmp(c.role, "BIGBOSS") == 0;
    c.exp = has_exp ? exp : 0;
    *out = c;
    return 0;
}

int auth_verify_jwt(const struct auth_ctx *a, const char *token, int64_t now_s,
                    struct auth_claims *out)
{
    if (a == NULL || token == NULL || !jwt_shape_ok(token))
        return AUTH_ERR_INVALID_TOKEN;

    jwt_t *jwt = NULL;
    int rc = AUTH_ERR_INVALID_TOKEN;
    char *grants_str = NULL;
    json_t *grants = NULL;

    /* Never a NULL or empty key: libjwt would then accept an unsigned token. */
    if (jwt_decode(&jwt, token, a->_secret, (int)a->_secret_len) != 0 || jwt == NULL)
        goto out;
    if (jwt_get_alg(jwt) != JWT_ALG_HS256)
        goto out;
    const char *alg = jwt_get_header(jwt, "alg");
    if (alg == NULL || strcmp(alg, "HS256") != 0)
        goto out;

    grants_str = jwt_get_grants_json(jwt, NULL);
    if (grants_str == NULL)
        goto out;
    grants = json_loads(grants_str, 0, NULL);
    if (grants == NULL)
        goto out;
    rc = claims_check(grants, now_s, out);

out:
    json_decref(grants);
    free(grants_str);
    if (jwt != NULL)
        jwt_free(jwt);
    return rc;
}

char *auth_mint_jwt(const char *secret, size_t secret_len, const char *person_id,
                    const char *role, int64_t ttl_s, int64_t now_s)
{
    if (secret == NULL || secret_len == 0 || secret_len > INT_MAX || person_id == NULL ||
        person_id[0] == '\0' || ttl_s < 0)
        return NULL;

    jwt_t *jwt = NULL;
    char *token = NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grant(jwt, "userId", person_id) != 0 || jwt_add_grant(jwt, "sub", person_id) != 0)
        goto out;
    if (role != NULL && role[0] != '\0' && jwt_add_grant(jwt, "role", role) != 0)
        goto out;
    if (jwt_add_grant_int(jwt, "iat", (long)now_s) != 0)
        goto out;
    if (ttl_s > 0 && jwt_add_grant_int(jwt, "exp", (long)(now_s + ttl_s)) != 0)
        goto out;
    if (jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)secret_len) != 0)
        goto out;
    token = jwt_encode_str(jwt); /* malloc'ed by libjwt: the caller free()s it */
out:
    jwt_free(jwt);
    return token;
}

const char *auth_bearer_from_header(const char *value)
{
    if (value == NULL)
        return NULL;
    while (*value == ' ' || *value == '\t')
        value++;
    if (strncasecmp(value, "bearer", 6) != 0)
        return NULL;
    value += 6;
    if (*value != ' ' && *value != '\t')
        return NULL;
    while (*value == ' ' || *value == '\t')
        value++;
    return *value != '\0' ? value : NULL;
}
