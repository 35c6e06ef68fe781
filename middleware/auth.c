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
 * A full verification costs ≈ 10–14 us (base64, two JSON parses, HMAC, many small allocations),
 * most of a REST request's budget (SPEC §5: the middleware must cost little), and clients
 * present the same token for its whole life. So tokens that verified are remembered in a
 * bounded cache keyed by the exact token string: a hit only re-checks exp and nbf against
 * now. Presenting a byte-identical string that this secret already verified proves nothing
 * less than verifying it again. Failures are not cached (garbage must not evict good
 * entries).
 *
 * The cache must hold every person who connects in a burst (a reconnect storm of tens of
 * thousands), yet cost little per idle connection (SPEC §5: ≤ 1 KiB): an entry is 48 bytes in
 * a preallocated table, not the token. It is keyed by the first 16 bytes of the token's
 * SHA-256 (finding another token with the same key is a second preimage of 128 bits), and
 * keeps the claims compactly: the person id as 12 bytes (only lowercase ObjectId ids are
 * cached), the role as a code (only the roles listed in roles[]), exp and nbf. Other tokens
 * are verified in full each time. The table has AUTH_CACHE_SHARDS shards (a mutex each) of
 * AUTH_CACHE_SETS sets of AUTH_CACHE_WAYS entries; a full set replaces the way its digest
 * names, a random choice that degrades gently when more tokens cycle than it holds (LRU would
 * miss every time).
 *
 * The store lookups of auth_authenticate() live in auth_person.c, so this file links
 * without the store.
 */
#include "middleware/auth.h"

#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/xmalloc.h"
#include "middleware/auth_private.h"

/* Far above any token of ours (≈ 250 B); refuses memory-hungry garbage early. */
#define AUTH_MAX_TOKEN_LEN 8192

#define AUTH_CACHE_SHARDS 16
#define AUTH_CACHE_SETS 256
#define AUTH_CACHE_WAYS 8 /* 32 768 tokens in 1.5 MB, touched as it fills */
#define AUTH_CACHE_KEY 16

/* One verified token. role 0 marks a free slot. */
struct auth_cache_entry {
    uint8_t key[AUTH_CACHE_KEY]; /* SHA-256(token), first 16 bytes */
    uint8_t oid[12];             /* the person id */
    uint8_t role;                /* 1 + index in roles[] */
    int64_t exp;                 /* 0 when absent */
    int64_t nbf;                 /* INT64_MIN when absent */
};

struct auth_cache_shard {
    pthread_mutex_t lock;
    struct auth_cache_entry slots[AUTH_CACHE_SETS][AUTH_CACHE_WAYS];
};

/* The roles a cached token may carry ("" is no role claim). */
static const char *const roles[] = {"",      "USER",    "ADMIN",   "BIGBOSS", "MODERATOR", "MODO",
                                    "AUDIT", "ANALYST", "CREATOR", "MEMBER",  "ANONYMOUS", "GUEST"};

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
    /* calloc: pages of the table cost memory only once an entry lands in them */
    a->_cache = xcalloc(AUTH_CACHE_SHARDS, sizeof(*a->_cache));
    for (int i = 0; i < AUTH_CACHE_SHARDS; i++)
        pthread_mutex_init(&a->_cache[i].lock, NULL);
    return a;
}

void auth_free(struct auth_ctx *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < AUTH_CACHE_SHARDS; i++)
        pthread_mutex_destroy(&a->_cache[i].lock);
    explicit_bzero(a->_cache, AUTH_CACHE_SHARDS * sizeof(*a->_cache));
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

/* The cache key of a token. Returns false when it cannot be computed (then no caching). */
static bool cache_key(const char *token, size_t len, uint8_t key[AUTH_CACHE_KEY])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const EVP_MD *sha256 = util_sha256();
    if (sha256 == NULL || EVP_Digest(token, len, md, &mdlen, sha256, NULL) != 1 ||
        mdlen < AUTH_CACHE_KEY)
        return false;
    memcpy(key, md, AUTH_CACHE_KEY);
    return true;
}

/* The set of a key (shard lock to take) and the way a new entry replaces in a full set. */
static struct auth_cache_entry *cache_set(const struct auth_ctx *a, const uint8_t *key,
                                          struct auth_cache_shard **shard, unsigned *victim)
{
    struct auth_cache_shard *sh = &a->_cache[key[0] % AUTH_CACHE_SHARDS];
    *shard = sh;
    *victim = key[2] % AUTH_CACHE_WAYS;
    return sh->slots[key[1] % AUTH_CACHE_SETS];
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The compact form of claims: false when they cannot be cached (an id that is not a lowercase
 * ObjectId, a role not in roles[]). */
static bool claims_pack(const struct auth_claims *c, int64_t nbf, struct auth_cache_entry *e)
{
    if (strlen(c->person_id) != 24)
        return false;
    for (int i = 0; i < 12; i++) {
        int hi = hexval(c->person_id[2 * i]), lo = hexval(c->person_id[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        e->oid[i] = (uint8_t)(hi << 4 | lo);
    }
    e->role = 0;
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(c->role, roles[i]) == 0)
            e->role = (uint8_t)(i + 1);
    if (e->role == 0)
        return false;
    e->exp = c->exp;
    e->nbf = nbf;
    return true;
}

static void claims_unpack(const struct auth_cache_entry *e, struct auth_claims *out)
{
    static const char hex[] = "0123456789abcdef";
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < 12; i++) {
        out->person_id[2 * i] = hex[e->oid[i] >> 4];
        out->person_id[2 * i + 1] = hex[e->oid[i] & 15];
    }
    snprintf(out->role, sizeof(out->role), "%s", roles[e->role - 1]);
    out->is_admin = strcmp(out->role, "ADMIN") == 0 || strcmp(out->role, "BIGBOSS") == 0;
    out->exp = e->exp;
}

/* Returns 1 (verified before: *out filled), 0 (not cached) or AUTH_ERR_INVALID_TOKEN (cached
 * but now expired or not yet valid). */
static int cache_lookup(const struct auth_ctx *a, const uint8_t *key, int64_t now_s,
                        struct auth_claims *out)
{
    struct auth_cache_shard *sh;
    unsigned victim;
    struct auth_cache_entry *set = cache_set(a, key, &sh, &victim);
    int rc = 0;
    pthread_mutex_lock(&sh->lock);
    for (int w = 0; w < AUTH_CACHE_WAYS; w++) {
        struct auth_cache_entry *e = &set[w];
        if (e->role == 0 || memcmp(e->key, key, AUTH_CACHE_KEY) != 0)
            continue;
        if (e->exp != 0 && e->exp <= now_s) {
            memset(e, 0, sizeof(*e)); /* expired for good: forget it */
            rc = AUTH_ERR_INVALID_TOKEN;
        } else if (e->nbf > now_s) {
            rc = AUTH_ERR_INVALID_TOKEN;
        } else {
            claims_unpack(e, out);
            rc = 1;
        }
        break;
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

static void cache_insert(const struct auth_ctx *a, const uint8_t *key, const struct auth_claims *c,
                         int64_t nbf)
{
    struct auth_cache_entry n;
    memset(&n, 0, sizeof(n));
    if (!claims_pack(c, nbf, &n))
        return;
    memcpy(n.key, key, AUTH_CACHE_KEY);
    struct auth_cache_shard *sh;
    unsigned victim;
    struct auth_cache_entry *set = cache_set(a, key, &sh, &victim);
    pthread_mutex_lock(&sh->lock);
    int slot = -1;
    for (int w = 0; w < AUTH_CACHE_WAYS; w++) {
        if (set[w].role != 0 && memcmp(set[w].key, key, AUTH_CACHE_KEY) == 0) {
            slot = w; /* another thread verified the same token meanwhile */
            break;
        }
        if (slot < 0 && set[w].role == 0)
            slot = w;
    }
    set[slot >= 0 ? slot : (int)victim] = n;
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

/* auth_verify_jwt, or with cached_only its cache-only form (AUTH_ERR_WOULD_BLOCK on a miss). */
static int verify(const struct auth_ctx *a, const char *token, int64_t now_s,
                  struct auth_claims *out, bool cached_only)
{
    if (a == NULL || token == NULL)
        return AUTH_ERR_INVALID_TOKEN;
    size_t len = strnlen(token, AUTH_MAX_TOKEN_LEN + 1);
    if (len == 0 || len > AUTH_MAX_TOKEN_LEN)
        return AUTH_ERR_INVALID_TOKEN;
    /* The cache first: only strings that passed jwt_shape_ok are in it, and a token with
     * the same key is the same string, so a hit skips the per-byte scan. */
    struct auth_claims c;
    uint8_t key[AUTH_CACHE_KEY];
    bool keyed = cache_key(token, len, key);
    int rc = keyed ? cache_lookup(a, key, now_s, &c) : 0;
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (cached_only)
            return AUTH_ERR_WOULD_BLOCK;
        int64_t nbf = INT64_MIN;
        if (!jwt_shape_ok(token))
            return AUTH_ERR_INVALID_TOKEN;
        rc = verify_full(a, token, now_s, &c, &nbf);
        if (rc != 0)
            return rc;
        if (keyed)
            cache_insert(a, key, &c, nbf);
    }
    *out = c;
    return 0;
}

int auth_verify_jwt(const struct auth_ctx *a, const char *token, int64_t now_s,
                    struct auth_claims *out)
{
    return verify(a, token, now_s, out, false);
}

int auth__verify_jwt_cached(const struct auth_ctx *a, const char *token, int64_t now_s,
                            struct auth_claims *out)
{
    return verify(a, token, now_s, out, true);
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
