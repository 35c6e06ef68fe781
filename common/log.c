/*
 * log.c - the logging sink. One snprintf into a stack buffer and one write(2) per line, so
 * lines from different threads never interleave.
 */
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log__level = LOG_LEVEL_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_set_level(enum log_level level)
{
    log__level = level;
}

int log_level_parse(const char *name, enum log_level *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = LOG_LEVEL_WARN;
        return 0;
    }
    return -1;
}

static void log__vwrite(enum log_level level, int with_errno, const char *fmt, va_list ap)
{
    char buf[2048];
    int saved_errno = errno;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000,
                          level_names[level]);
    int w = vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
    if (w > 0)
        n = n + (size_t)w >= sizeof(buf) - 64 ? sizeof(buf) - 64 : n + (size_t)w;
    if (with_errno)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ": %s", strerror(saved_errno));
    buf[n++] = '\n';
    ssize_t unused = write(STDERR_FILENO, buf, n);
    (void)unused;
    errno = saved_errno;
}

void log__write(enum log_level level, int with_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log__vwrite(level, with_errno, fmt, ap);
    va_end(ap);
}

void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log__vwrite(LOG_LEVEL_ERROR, 0, fmt, ap);
    va_end(ap);
    exit(1);
}
