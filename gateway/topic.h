/*
 * MQTT topic names and topic filters (MQTT 3.1.1 and 5.0, section 4.7).
 *
 * A topic name has no wildcards. A filter may contain "+" as a whole level
 * (matches exactly one level) and "#" as the whole last level (matches the
 * parent and any number of levels below it). Empty levels are real levels,
 * so "/a" and "a" differ. Filters that begin with a wildcard never match
 * topic names that begin with "$".
 */
#ifndef TIDEGATE_TOPIC_H
#define TIDEGATE_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

/* Maximum length of a topic name or filter, in bytes (the MQTT limit). */
#define TOPIC_MAX_BYTES 65535

/*
 * Validates a topic name of @len bytes (no NUL terminator needed). Returns
 * NULL when valid, otherwise a static English sentence saying why not.
 */
const char *topic_check_name(const char *name, size_t len);

/* Validates a topic filter. Returns NULL or a static reason, as above. */
const char *topic_check_filter(const char *filter, size_t len);

/*
 * Returns true when the NUL-terminated @filter matches the NUL-terminated
 * topic name @topic. Both must already be valid.
 */
bool topic_matches(const char *filter, const char *topic);

/*
 * Returns true when every topic name that @requested can match is also
 * matched by @allowed, so a client allowed @allowed may subscribe to
 * @requested: "site/a/+/temp" lies within "site/a/#", "site/#" does not.
 * Both must be valid filters.
 */
bool topic_filter_covers(const char *allowed, const char *requested);

#endif
