/*
 * throttle.h - the activity throttle: at most one lastActiveAt write per person per window
 * (ACTIVITY_THROTTLE_MS), decided in memory (SPEC §2.3).
 *
 * A hash map person id → time of the last write, striped into shards each with its own mutex
 * so MHD threads and loop threads rarely contend. Memory is bounded: entries older than the
 * window are useless and are evicted; when a shard is full, its oldest entries go first (an
 * evicted person at worst gets one extra write).
 *
 * Threads: every function may be called from any thread.
 */
#ifndef GW_THROTTLE_H
#define GW_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct throttle;

/* window_ms: ACTIVITY_THROTTLE_MS; max_entries: the bound on remembered persons.
 * Returns NULL when window_ms < 0 or max_entries == 0. Ids longer than 128 bytes are not
 * remembered: every call for them is a write. throttle_free(NULL) is a no-op. */
struct throttle *throttle_new(int64_t window_ms, size_t max_entries);
void throttle_free(struct throttle *t);

/* Decides for one activity of person id at now_ms (wall clock, ms): returns
 * true when a write is due (and records now_ms as the last write), false when throttled.
 * Every caller passes wall time (util_now_ms), the clock of lastActiveAt itself.
 * Counts the decision in the stats. A time a whole window or more before the last write
 * (the clock stepped back) is a write that restarts the window. */
bool throttle_should_write(struct throttle *t, const char *id, int64_t now_ms);
/* Records a write made elsewhere (the connect write opens a new window). It counts as a
 * "written" decision in the stats (SPEC §3: the connect write counts as activity). */
void throttle_record(struct throttle *t, const char *id, int64_t now_ms);

struct throttle_stats {
    uint64_t written;   /* decisions "write" (meeshy_activity_updates_total{result="written"}) */
    uint64_t throttled; /* decisions "skip" */
    uint64_t entries;   /* persons remembered now */
};
void throttle_get_stats(struct throttle *t, struct throttle_stats *out);

#endif
