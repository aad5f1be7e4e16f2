#include "log.h"
#include "clock.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048
#define LOG_RATELIMIT_INTERVAL_MS 10000

static _Atomic int current_level = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level)
{
    atomic_store(&current_level, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&current_level);
}

bool log_enabled(enum log_level level)
{
    return (int)level <= atomic_load(&current_level);
}

bool log_parse_level(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    return false;
}

const char *log_level_name(enum log_level level)
{
    if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "unknown";
    return level_names[level];
}

static void log_vwrite(enum log_level level, const char *component, const char *suffix,
                       const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

static void log_vwrite(enum log_level level, const char *component, const char *suffix,
                       const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    int64_t now_ms = clock_realtime_ms();
    time_t secs = (time_t)(now_ms / 1000);
    struct tm tm;
    size_t len;
    int n;

    gmtime_r(&secs, &tm);
    len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line + len, sizeof(line) - len, ".%03dZ %s [%s] ", (int)(now_ms % 1000),
                 log_level_name(level), component);
    if (n > 0)
        len += (size_t)n;

    n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
    if (n > 0)
        len += (size_t)n;
    if (len > sizeof(line) - 64)
        len = sizeof(line) - 64;

    if (suffix != NULL) {
        n = snprintf(line + len, sizeof(line) - len, "%s", suffix);
        if (n > 0)
            len += (size_t)n;
        if (len > sizeof(line) - 2)
            len = sizeof(line) - 2;
    }
    line[len++] = '\n';

    /* One write per line keeps lines from different threads whole. */
    ssize_t written = write(STDERR_FILENO, line, len);
    (void)written;
}

void log_write(enum log_level level, const char *component, const char *fmt, ...)
{
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    log_vwrite(level, component, NULL, fmt, ap);
    va_end(ap);
}

void log_limited(struct log_ratelimit *rl, enum log_level level, const char *component,
                 const char *fmt, ...)
{
    char suffix[64] = "";
    int64_t now = clock_monotonic_ms();
    va_list ap;

    if (!log_enabled(level))
        return;

    if (rl->window_start_ms != 0 && now - rl->window_start_ms < LOG_RATELIMIT_INTERVAL_MS) {
        rl->suppressed++;
        return;
    }
    if (rl->suppressed > 0)
        snprintf(suffix, sizeof(suffix), " (%u similar lines suppressed)", rl->suppressed);
    rl->window_start_ms = now;
    rl->suppressed = 0;

    va_start(ap, fmt);
    log_vwrite(level, component, suffix, fmt, ap);
    va_end(ap);
}
