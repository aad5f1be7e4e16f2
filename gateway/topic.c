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

bool topic_filter_covers(const char *allowed, const char *requested)
{
    const char *a = allowed;
    const char *r = requested;

    /* A filter that starts with a wildcard matches no "$" topic, so it
     * cannot cover a request for "$" topics. */
    if ((a[0] == '+' || a[0] == '#') && r[0] == '$')
        return false;

    for (;;) {
        const char *a_end = strchrnul(a, '/');
        const char *r_end = strchrnul(r, '/');
        bool a_plus = a[0] == '+' && a_end == a + 1;
        bool a_hash = a[0] == '#' && a_end == a + 1;
        bool r_plus = r[0] == '+' && r_end == r + 1;
        bool r_hash = r[0] == '#' && r_end == r + 1;

        if (a_hash)
            return true;
        if (r_hash)
            return false; /* only '#' covers '#' */
        if (r_plus && !a_plus)
            return false;
        if (!a_plus && !r_plus &&
            (a_end - a != r_end - r || memcmp(a, r, (size_t)(a_end - a)) != 0))
            return false;

        if (*a_end == '\0' && *r_end == '\0')
            return true;
        if (*r_end == '\0')
            /* The request ends here: "a/#" also covers "a". */
            return strcmp(a_end, "/#") == 0;
        if (*a_end == '\0')
            return false;
        a = a_end + 1;
        r = r_end + 1;
    }
}
