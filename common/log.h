/*
 * log.h - leveled, one-line-per-event logging shared by every module.
 *
 * Lines go to stderr as "2026-11-28T08:48:19.123Z LEVEL message". The macros check the level
 * before they evaluate their arguments, so a debug line costs one load and one branch when
 * debug is off (Redis serverLog). Never pass a token or a secret to these functions.
 *
 * Threads: every function may be called from any thread; a line is written with one write(2).
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stdarg.h>

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

extern int log__level;

/* Sets the threshold. Not thread-safe against concurrent logging; call it at start. */
void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 when the name is unknown. */
int log_level_parse(const char *name, enum log_level *out);

void log__write(enum log_level level, int with_errno, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log__level <= LOG_LEVEL_DEBUG)                                                         \
            log__write(LOG_LEVEL_DEBUG, 0, __VA_ARGS__);                                           \
    } while (0)
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (log__level <= LOG_LEVEL_INFO)                                                          \
            log__write(LOG_LEVEL_INFO, 0, __VA_ARGS__);                                            \
    } while (0)
/* log_warn appends ": strerror(errno)"; log_warnx does not. */
#define log_warn(...)                                                                              \
    do {                                                                                           \
        if (log__level <= LOG_LEVEL_WARN)                                                          \
            log__write(LOG_LEVEL_WARN, 1, __VA_ARGS__);                                            \
    } while (0)
#define log_warnx(...)                                                                             \
    do {                                                                                           \
        if (log__level <= LOG_LEVEL_WARN)                                                          \
            log__write(LOG_LEVEL_WARN, 0, __VA_ARGS__);                                            \
    } while (0)
#define log_error(...) log__write(LOG_LEVEL_ERROR, 0, __VA_ARGS__)

/* Logs at error level and exits with status 1. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
