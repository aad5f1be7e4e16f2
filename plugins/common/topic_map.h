/*
 * Per-topic state for the example plugins: a hash map from topic name to a
 * fixed-size block of plugin state, bounded in size. When the map is full,
 * a new topic evicts the least recently used one, whose state is lost: it
 * starts again as if never seen.
 */
#ifndef TIDEGATE_TOPIC_MAP_H
#define TIDEGATE_TOPIC_MAP_H

#include <stddef.h>

/* The default bound on topics per instance, and the largest accepted. */
#define TOPIC_MAP_DEFAULT_MAX 10000
#define TOPIC_MAP_LIMIT 1000000

struct topic_map;

/* Creates a map holding up to @max_topics (1 to TOPIC_MAP_LIMIT) blocks of
 * @value_size bytes. Returns NULL when out of memory. */
struct topic_map *topic_map_create(size_t value_size, size_t max_topics);

/* Frees the map and every block. Accepts NULL. */
void topic_map_destroy(struct topic_map *map);

/*
 * Returns the state block of @topic, creating a zero-filled one when the
 * topic is new, and marks the topic as the most recently used. Returns
 * NULL when out of memory, with the map unchanged. The block stays valid
 * until the next topic_map_get or topic_map_destroy.
 */
void *topic_map_get(struct topic_map *map, const char *topic, size_t topic_len);

/* Returns the number of topics held. */
size_t topic_map_count(const struct topic_map *map);

#endif
