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
 * A full verification costs ≈ 9 us (base64, two JSON parses, HMAC, many small allocations),
 * most of a REST request's budget (SPEC §5: the middleware must cost little), and clients
 * present the same token for its whole life. So tokens that verified are remembered in a
 * bounded cache keyed by the exact token string: a hit only re-checks exp and nbf against
 * now. Presenting a byte-identical string that this secret already verified proves nothing
 * less than verifying it again. Failures are not cached (garbage must not evict good
 * entries). The cache is sharded with one mutex per shard and evicts the least recently
 * used entry of a full shard.
 *
 * The store lookups of auth_authenticate() live in auth_person.c, so this file links
 * without the store.
 */
#include "middleware/auth.h"

#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uthash.h>
#include <utlist.h>

#include "common/log.h"
#include "common/xmalloc.h"
#include "middleware/auth_private.h"

/* Far above any token of ours (≈ 250 B); refuses memory-hungry garbage early. */
#define AUTH_MAX_TOKEN_LEN 8192

#define AUTH_CACHE_SHARDS 16
#define AUTH_CACHE_PER_SHARD 256 /* 4096 tokens: about 1.5 MB when full */

struct auth_cache_entry {
    UT_hash_handle hh;
    struct auth_cache_entry *prev, *next; /* least recently used first */
    struct auth_claims claims;
    int64_t nbf;  /* INT64_MIN when absent */
    char token[]; /* the key */
};

struct auth_cache_shard {
    pthread_mutex_t lock;
    struct auth_cache_entry *map;
    struct auth_cache_entry *lru;
    size_t count;
};

struct auth_ctx {
    unsigned char *_secret;
    size_t _secret_len;
    struct store *_store;
    /* Mutable behind the const API: the verified-token cache. */
    struct auth_cache_shard *_cache;
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
    a->_cache = xcalloc(AUTH_CACHE_SHARDS, sizeof(*a->_cache));
    for (int i = 0; i < AUTH_CACHE_SHARDS; i++)
        pthread_mutex_init(&a->_cache[i].lock, NULL);
    return a;
}

void auth_free(struct auth_ctx *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < AUTH_CACHE_SHARDS; i++) {
        struct auth_cache_shard *sh = &a->_cache[i];
        struct auth_cache_entry *e, *tmp;
        HASH_ITER(hh, sh->map, e, tmp)
        {
            HASH_DELETE(hh, sh->map, e);
            free(e);
        }
        pthread_mutex_destroy(&sh->lock);
    }
    free(a->_cache);
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
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
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
static int claims_check(json_t *grants, int64_t now_s, struct auth_claims *out, int64_t *nbf_out)
{
    if (!json_is_object(grants))
        return AUTH_ERR_INVALID_TOKEN;

    bool has_exp, has_nbf;
    int64_t exp = 0, nbf = 0;
    if (claim_int(grants, "exp", &has_exp, &exp) < 0 ||
        claim_int(grants, "nbf", &has_nbf, &nbf) < 0)
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
    if (id_len == 0 || id_len >= sizeof(out->person_id) ||
        memchr(json_string_value(id), '\0', id_len))
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
    *nbf_out = has_nbf ? nbf : INT64_MIN;
    return 0;
}

/* The shard of a token: its last characters are signature bytes, as good as random. */
static struct auth_cache_shard *cache_shard(const struct auth_ctx *a, const char *token, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = len > 16 ? len - 16 : 0; i < len; i++) {
        h ^= (unsigned char)token[i];
        h *= 16777619u;
    }
    return &a->_cache[h % AUTH_CACHE_SHARDS];
}

/* Returns 1 (verified before: *out filled), 0 (not cached) or AUTH_ERR_INVALID_TOKEN (cached
 * but now expired or not yet valid). */
static int cache_lookup(const struct auth_ctx *a, const char *token, size_t len, int64_t now_s,
                        struct auth_claims *out)
{
    struct auth_cache_shard *sh = cache_shard(a, token, len);
    struct auth_cache_entry *e = NULL;
    int rc = 0;
    pthread_mutex_lock(&sh->lock);
    HASH_FIND(hh, sh->map, token, len, e);
    if (e != NULL) {
        if (e->claims.exp != 0 && e->claims.exp <= now_s) {
            /* expired for good: forget it */
            HASH_DELETE(hh, sh->map, e);
            DL_DELETE(sh->lru, e);
            sh->count--;
            free(e);
            rc = AUTH_ERR_INVALID_TOKEN;
        } else if (e->nbf > now_s) {
            rc = AUTH_ERR_INVALID_TOKEN;
        } else {
            *out = e->claims;
            DL_DELETE(sh->lru, e);
            DL_APPEND(sh->lru, e);
            rc = 1;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

static void cache_insert(const struct auth_ctx *a, const char *token, size_t len,
                         const struct auth_claims *c, int64_t nbf)
{
    struct auth_cache_shard *sh = cache_shard(a, token, len);
    struct auth_cache_entry *e = xmalloc(sizeof(*e) + len + 1);
    memset(e, 0, sizeof(*e));
    e->claims = *c;
    e->nbf = nbf;
    memcpy(e->token, token, len + 1);
    struct auth_cache_entry *old = NULL;
    pthread_mutex_lock(&sh->lock);
    HASH_FIND(hh, sh->map, token, len, old);
    if (old != NULL) {
        /* another thread verified the same token meanwhile */
        pthread_mutex_unlock(&sh->lock);
        free(e);
        return;
    }
    if (sh->count >= AUTH_CACHE_PER_SHARD) {
        old = sh->lru;
        HASH_DELETE(hh, sh->map, old);
        DL_DELETE(sh->lru, old);
        sh->count--;
        free(old);
    }
    HASH_ADD_KEYPTR(hh, sh->map, e->token, len, e);
    DL_APPEND(sh->lru, e);
    sh->count++;
    pthread_mutex_unlock(&sh->lock);
}

/* The full verification through libjwt. */
static int verify_full(const struct auth_ctx *a, const char *token, int64_t now_s,
                       struct auth_claims *out, int64_t *nbf)
{
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
    rc = claims_check(grants, now_s, out, nbf);

out:
    json_decref(grants);
    free(grants_str);
    if (jwt != NULL)
        jwt_free(jwt);
    return rc;
}

int auth_verify_jwt(const struct auth_ctx *a, const char *token, int64_t now_s,
                    struct auth_claims *out)
{
    if (a == NULL || token == NULL)
        return AUTH_ERR_INVALID_TOKEN;
    size_t len = strnlen(token, AUTH_MAX_TOKEN_LEN + 1);
    if (len == 0 || len > AUTH_MAX_TOKEN_LEN)
        return AUTH_ERR_INVALID_TOKEN;
    /* The cache first: only strings that passed jwt_shape_ok are in it, and an exact match
     * has the same shape, so a hit skips the per-byte scan (most of a hit's cost). */
    struct auth_claims c;
    int rc = cache_lookup(a, token, len, now_s, &c);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        int64_t nbf;
        if (!jwt_shape_ok(token))
            return AUTH_ERR_INVALID_TOKEN;
        rc = verify_full(a, token, now_s, &c, &nbf);
        if (rc != 0)
            return rc;
        cache_insert(a, token, len, &c, nbf);
    }
    *out = c;
    return 0;
}

char *auth_mint_jwt(const char *secret, size_t secret_len, const char *person_id, const char *role,
                    int64_t ttl_s, int64_t now_s)
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
