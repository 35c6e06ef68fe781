/*
 * util.c - clocks, ISO-8601, ObjectIds, randomness and the status computation.
 */
#include "common/util.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static char *digits_put(char *w, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        w[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return w + n;
}

/* Without gmtime_r and snprintf (thousands of instructions each, and gmtime_r takes glibc's
 * global time-zone lock): the civil date of a day count, H. Hinnant's days_from_civil
 * inverted. Twice per user:status broadcast and per REST person. Years outside 0..9999 (which
 * do not fit the fixed width) take the libc path and are clamped. */
void util_iso_time(int64_t ms, char out[ISO_TIME_LEN + 1])
{
    int64_t days = ms / 86400000;
    int64_t rem = ms % 86400000;
    if (rem < 0) {
        rem += 86400000;
        days--;
    }
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    if (y < 0 || y > 9999) {
        time_t secs = (time_t)(days * 86400 + rem / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        char tmp[64];
        snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(rem % 1000));
        memcpy(out, tmp, ISO_TIME_LEN);
        out[ISO_TIME_LEN] = '\0';
        return;
    }
    unsigned r = (unsigned)rem;
    char *w = out;
    w = digits_put(w, (unsigned)y, 4);
    *w++ = '-';
    w = digits_put(w, m, 2);
    *w++ = '-';
    w = digits_put(w, d, 2);
    *w++ = 'T';
    w = digits_put(w, r / 3600000, 2);
    *w++ = ':';
    w = digits_put(w, r / 60000 % 60, 2);
    *w++ = ':';
    w = digits_put(w, r / 1000 % 60, 2);
    *w++ = '.';
    w = digits_put(w, r % 1000, 3);
    *w++ = 'Z';
    *w = '\0';
}

int util_parse_iso_time(const char *s, int64_t *out_ms)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL)
        return -1;
    int millis = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3)
                millis = millis * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            millis *= 10;
    }
    if (*p == 'Z')
        p++;
    if (*p != '\0')
        return -1;
    *out_ms = (int64_t)timegm(&tm) * 1000 + millis;
    return 0;
}

static unsigned char oid_process_random[5];
static atomic_uint oid_counter;
static atomic_int oid_ready;

void util_oid_new(char out[OID_HEX_LEN + 1])
{
    if (!atomic_load(&oid_ready)) {
        /* A benign race: two threads may both seed; either seed is valid. */
        unsigned char seed[8];
        util_random_bytes(seed, sizeof(seed));
        memcpy(oid_process_random, seed, 5);
        atomic_store(&oid_counter, (unsigned)seed[5] << 16 | (unsigned)seed[6] << 8 | seed[7]);
        atomic_store(&oid_ready, 1);
    }
    uint32_t secs = (uint32_t)time(NULL);
    uint32_t count = atomic_fetch_add(&oid_counter, 1) & 0xffffff;
    unsigned char b[12] = {
        (unsigned char)(secs >> 24),  (unsigned char)(secs >> 16), (unsigned char)(secs >> 8),
        (unsigned char)secs,          oid_process_random[0],       oid_process_random[1],
        oid_process_random[2],        oid_process_random[3],       oid_process_random[4],
        (unsigned char)(count >> 16), (unsigned char)(count >> 8), (unsigned char)count};
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 12; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[OID_HEX_LEN] = '\0';
}

bool util_oid_valid(const char *s)
{
    if (s == NULL)
        return false;
    for (int i = 0; i < OID_HEX_LEN; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return s[OID_HEX_LEN] == '\0';
}

bool util_header_has_token(const char *value, const char *token)
{
    if (value == NULL)
        return false;
    size_t tl = strlen(token);
    const char *p = value;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0)
            return true;
    }
    return false;
}

/* Small draws (session ids, one per connect) come from a per-thread pool of OpenSSL's
 * output, refilled 512 bytes at a time: one DRBG call (with its locks and fork check, a
 * getpid) per 64 ids instead of one each. Bytes leave the pool once and are wiped. */
#define RANDOM_POOL 512
#define RANDOM_POOL_DRAW 32

int util_random_bytes(void *buf, size_t n)
{
    static _Thread_local unsigned char pool[RANDOM_POOL];
    static _Thread_local size_t left;

    if (n > RANDOM_POOL_DRAW)
        return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
    if (left < n) {
        if (RAND_bytes(pool, RANDOM_POOL) != 1)
            return -1;
        left = RANDOM_POOL;
    }
    unsigned char *from = pool + RANDOM_POOL - left;
    memcpy(buf, from, n);
    OPENSSL_cleanse(from, n);
    left -= n;
    return 0;
}

int util_random_hex(char *out, size_t n)
{
    unsigned char tmp[64];
    static const char hex[] = "0123456789abcdef";
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done < sizeof(tmp) ? n - done : sizeof(tmp);
        if (util_random_bytes(tmp, chunk) != 0)
            return -1;
        for (size_t i = 0; i < chunk; i++) {
            out[2 * (done + i)] = hex[tmp[i] >> 4];
            out[2 * (done + i) + 1] = hex[tmp[i] & 15];
        }
        done += chunk;
    }
    out[2 * n] = '\0';
    return 0;
}

enum presence_status presence_compute(bool is_online, int64_t last_active_ms, int64_t now_ms,
                                      int64_t away_after_ms, int64_t offline_after_ms)
{
    if (last_active_ms == 0)
        return PRESENCE_OFFLINE;
    int64_t idle = now_ms - last_active_ms;
    if (is_online) {
        if (idle < away_after_ms)
            return PRESENCE_ONLINE;
        if (idle < offline_after_ms)
            return PRESENCE_AWAY;
        return PRESENCE_OFFLINE;
    }
    return idle < offline_after_ms ? PRESENCE_AWAY : PRESENCE_OFFLINE;
}

const char *presence_status_name(enum presence_status s)
{
    static const char *const names[] = {"online", "away", "offline"};
    return names[s];
}

const char *presence_status_color(enum presence_status s)
{
    static const char *const colors[] = {"#10b981", "#f59e0b", "#6b7280"};
    return colors[s];
}

bool util_cors_origin_allowed(const char *allowlist, const char *origin)
{
    const char *p = allowlist;
    size_t olen;

    if (allowlist == NULL || origin == NULL || *origin == '\0')
        return false;
    olen = strlen(origin);
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        const char *e = p + len;
        const char *b = p;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        const char *t = e;
        while (t > b && (t[-1] == ' ' || t[-1] == '\t' || t[-1] == '/'))
            t--;
        size_t ilen = (size_t)(t - b);
        if (ilen == 1 && *b == '*')
            return true;
        /* Origins compare exactly, except that scheme and host are case-insensitive and an
         * allowlist entry may carry a trailing slash. */
        if (ilen > 0 && ilen == olen && strncasecmp(b, origin, ilen) == 0)
            return true;
        p = *e == ',' ? e + 1 : e;
    }
    return false;
}

void util_thread_name(const char *name)
{
    char buf[16];
    snprintf(buf, sizeof(buf), "pg-%s", name);
    pthread_setname_np(pthread_self(), buf);
}

static const EVP_MD *md_sha1, *md_sha256;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

static void md_fetch(void)
{
    md_sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *util_sha1(void)
{
    pthread_once(&md_once, md_fetch);
    return md_sha1;
}

const EVP_MD *util_sha256(void)
{
    pthread_once(&md_once, md_fetch);
    return md_sha256;
}

void util_hex64(uint64_t v, char out[17])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[v & 15];
        v >>= 4;
    }
    out[16] = '\0';
}
