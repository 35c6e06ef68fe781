/*
 * util.h - small helpers every module uses: clocks, ISO-8601 times, ObjectId strings and the
 * computed presence status of SPEC §1.
 *
 * Times are int64 milliseconds since the Unix epoch; 0 means "null" (never) everywhere in the
 * project, since no presence event of ours predates 1970.
 * Threads: every function is thread-safe (no shared state besides the ObjectId counter, which
 * is atomic).
 */
#ifndef GW_UTIL_H
#define GW_UTIL_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OID_HEX_LEN 24
#define ISO_TIME_LEN 24 /* "2026-11-28T08:48:19.123Z" */

/* Wall clock, milliseconds since the epoch. */
int64_t util_now_ms(void);
/* Monotonic clock in milliseconds and in nanoseconds (for durations and deadlines). */
int64_t util_mono_ms(void);
int64_t util_mono_ns(void);

/* Writes ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" plus NUL into out (ISO_TIME_LEN + 1 bytes). */
void util_iso_time(int64_t ms, char out[ISO_TIME_LEN + 1]);
/* Parses the format above (the 'Z' and the milliseconds optional). Returns 0 or -1. */
int util_parse_iso_time(const char *s, int64_t *out_ms);

/* Writes a new ObjectId (4 B seconds, 5 B random per process, 3 B counter) as 24 lowercase hex
 * characters plus NUL. */
void util_oid_new(char out[OID_HEX_LEN + 1]);
/* True when s is exactly 24 hex characters (either case). */
bool util_oid_valid(const char *s);

/* True when the comma-separated HTTP header value (e.g. "Connection: keep-alive, Upgrade")
 * holds token, compared case-insensitively; false for a NULL value. */
bool util_header_has_token(const char *value, const char *token);

/* Fills buf with n cryptographically random bytes (OpenSSL RAND_bytes). Returns 0 or -1. */
int util_random_bytes(void *buf, size_t n);
/* Writes n random bytes as 2n lowercase hex characters plus NUL. Returns 0 or -1. */
int util_random_hex(char *out, size_t n);

/* SHA-1 and SHA-256, fetched from OpenSSL once: EVP_sha1()/EVP_sha256() make OpenSSL 3 look
 * the implementation up again on every EVP_Digest, more than half the cost of digesting a
 * WebSocket key or a token. NULL only if OpenSSL lacks them. */
const EVP_MD *util_sha1(void);
const EVP_MD *util_sha256(void);

/* Writes sid as 16 lowercase hex digits plus NUL. */
void util_hex64(uint64_t v, char out[17]);

/* Names the calling thread "pg-<name>" (at most 15 characters shown by top -H, perf and
 * /proc/<pid>/task/<tid>/comm). */
void util_thread_name(const char *name);

/* The computed status of SPEC §1. */
enum presence_status { PRESENCE_ONLINE = 0, PRESENCE_AWAY, PRESENCE_OFFLINE };

/* Computes the status at now_ms from isOnline and lastActiveAt (0 = never active: offline). */
enum presence_status presence_compute(bool is_online, int64_t last_active_ms, int64_t now_ms,
                                      int64_t away_after_ms, int64_t offline_after_ms);
/* "online" / "away" / "offline". */
const char *presence_status_name(enum presence_status s);
/* "#10b981" / "#f59e0b" / "#6b7280". */
const char *presence_status_color(enum presence_status s);

/* CORS: true when origin is in the comma-separated allowlist (CORS_ORIGINS), or the list holds
 * "*". Scheme and host compare case-insensitively; an entry may end with '/'. A NULL or empty
 * allowlist or origin never matches. Used by routes/ and by the Socket.IO polling transport. */
bool util_cors_origin_allowed(const char *allowlist, const char *origin);

#endif
