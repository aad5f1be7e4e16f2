/*
 * Topic templates for emitted messages: each "{topic}" in the pattern is
 * replaced by the topic of the message being transformed, as in
 * "alerts/{topic}".
 */
#ifndef TIDEGATE_TOPIC_TEMPLATE_H
#define TIDEGATE_TOPIC_TEMPLATE_H

#include <stddef.h>

/* Returns NULL when @pattern can form valid topic names, or a message
 * saying what is expected (it contains the wildcards '+' or '#'). */
const char *topic_template_check(const char *pattern);

/* Returns a new string, freed with free(), with every "{topic}" in
 * @pattern replaced by @topic; or NULL when out of memory. */
char *topic_template_expand(const char *pattern, const char *topic, size_t topic_len);

#endif
