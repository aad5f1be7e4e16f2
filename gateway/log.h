/*
 * Logging to stderr: one line per event with a UTC timestamp, the level, the
 * component in brackets and the message. Thread-safe: every line is written
 * with a single write(2).
 *
 * Each call checks the level before formatting. Tokens and secrets must never
 * be passed to these functions.
 */
#ifndef TIDEGATE_LOG_H
#define TIDEGATE_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level {
    LOG_ERROR = 0,
    LOG_WARN = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
};

/* Suppresses repeats of one error site: at most one line per interval, with
 * the count of lines suppressed since the last one. Zero-initialise it. */
struct log_ratelimit {
    int64_t window_start_ms;
    uint32_t suppressed;
};

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
bool log_enabled(enum log_level level);

/* Parses "error", "warn", "info" or "debug". Returns false for anything else. */
bool log_parse_level(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);

void log_write(enum log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like log_write, but writes at most one line per 10 seconds for @rl and
 * appends how many lines were suppressed before it. */
void log_limited(struct log_ratelimit *rl, enum log_level level, const char *component,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define log_error(comp, ...) log_write(LOG_ERROR, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_write(LOG_WARN, comp, __VA_ARGS__)
#define log_info(comp, ...) log_write(LOG_INFO, comp, __VA_ARGS__)
#define log_debug(comp, ...)                                                                       \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG))                                                                \
            log_write(LOG_DEBUG, comp, __VA_ARGS__);                                               \
    } while (0)

#endif
