#include "topic_template.h"

#include <stdlib.h>
#include <string.h>

#define TOPIC_PLACEHOLDER "{topic}"
#define TOPIC_PLACEHOLDER_LEN (sizeof(TOPIC_PLACEHOLDER) - 1)

const char *topic_template_check(const char *pattern)
{
    if (strpbrk(pattern, "+#") != NULL)
        return "expected a topic name without the wildcards '+' or '#'";
    return NULL;
}

char *topic_template_expand(const char *pattern, const char *topic, size_t topic_len)
{
    size_t count = 0;
    size_t len;
    const char *at;
    char *out;
    char *end;

    for (at = strstr(pattern, TOPIC_PLACEHOLDER); at != NULL;
         at = strstr(at + TOPIC_PLACEHOLDER_LEN, TOPIC_PLACEHOLDER))
        count++;

    len = strlen(pattern) - count * TOPIC_PLACEHOLDER_LEN + count * topic_len;
    out = malloc(len + 1);
    if (out == NULL)
        return NULL;

    end = out;
    while ((at = strstr(pattern, TOPIC_PLACEHOLDER)) != NULL) {
        memcpy(end, pattern, (size_t)(at - pattern));
        end += at - pattern;
        memcpy(end, topic, topic_len);
        end += topic_len;
        pattern = at + TOPIC_PLACEHOLDER_LEN;
    }
    strcpy(end, pattern);
    return out;
}
