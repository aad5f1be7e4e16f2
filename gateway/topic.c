#include "topic.h"
#include "utf8.h"

#include <string.h>

/* Checks what names and filters share: length, UTF-8 and no NUL. */
static const char *topic_check_common(const char *s, size_t len)
{
    if (len == 0)
        return "must not be empty";
    if (len > TOPIC_MAX_BYTES)
        return "is longer than 65535 bytes";
    if (memchr(s, '\0', len) != NULL)
        return "must not contain a NUL character";
    if (!utf8_valid((const unsigned char *)s, len))
        return "is not valid UTF-8";
    return NULL;
}

const char *topic_check_name(const char *name, size_t len)
{
    const char *reason = topic_check_common(name, len);

    if (reason != NULL)
        return reason;
    if (memchr(name, '+', len) != NULL || memchr(name, '#', len) != NULL)
        return "must not contain the wildcards '+' or '#'";
    return NULL;
}

const char *topic_check_filter(const char *filter, size_t len)
{
    const char *reason = topic_check_common(filter, len);

    if (reason != NULL)
        return reason;

    for (size_t i = 0; i < len; i++) {
        bool level_start = (i == 0 || filter[i - 1] == '/');
        bool level_end = (i + 1 == len || filter[i + 1] == '/');

        if (filter[i] == '+' && !(level_start && level_end))
            return "'+' must fill a whole level, as in 'a/+/c'";
        if (filter[i] == '#') {
            if (!(level_start && level_end))
                return "'#' must fill a whole level, as in 'a/#'";
            if (i + 1 != len)
                return "'#' must be the last level";
        }
    }
    return NULL;
}

bool topic_matches(const char *filter, const char *topic)
{
    const char *f = filter;
    const char *t = topic;

    if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
        return false;

    for (;;) {
        const char *f_end = strchrnul(f, '/');
        const char *t_end = strchrnul(t, '/');

        if (f[0] == '#' && f_end == f + 1)
            return true;

        if (!(f[0] == '+' && f_end == f + 1)) {
            if (f_end - f != t_end - t || memcmp(f, t, (size_t)(f_end - f)) != 0)
                return false;
        }

        if (*f_end == '\0' && *t_end == '\0')
            return true;
        if (*f_end == '\0')
            return false;
        if (*t_end == '\0') {
            /* "a/#" also matches "a": the filter may end in "/#" here. */
            return strcmp(f_end, "/#") == 0;
        }
        f = f_end + 1;
        t = t_end + 1;
    }
}
