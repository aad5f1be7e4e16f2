#include "topic_map.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct topic_entry {
    struct topic_entry *bucket_next; /* chain of the entry's hash bucket */
    struct topic_entry *newer;       /* recency list, most recent at the head */
    struct topic_entry *older;
    uint64_t hash;
    size_t topic_len;
    char *topic; /* points into this allocation, after value */
    alignas(max_align_t) unsigned char value[];
};

struct topic_map {
    struct topic_entry **buckets;
    size_t bucket_mask;
    size_t value_size;
    size_t count;
    size_t max_topics;
    struct topic_entry *newest;
    struct topic_entry *oldest;
};

/* FNV-1a, 64 bits. */
static uint64_t topic_hash(const char *topic, size_t len)
{
    uint64_t hash = 14695981039346656037ULL;

    for (size_t i = 0; i < len; i++) {
        hash ^= (unsigned char)topic[i];
        hash *= 1099511628211ULL;
    }
    return hash;
}

struct topic_map *topic_map_create(size_t value_size, size_t max_topics)
{
    struct topic_map *map;
    size_t buckets = 16;

    if (max_topics == 0 || max_topics > TOPIC_MAP_LIMIT)
        return NULL;
    map = calloc(1, sizeof(*map));
    if (map == NULL)
        return NULL;

    /* At most one entry per bucket on average when full. */
    while (buckets < max_topics)
        buckets *= 2;
    map->buckets = calloc(buckets, sizeof(*map->buckets));
    if (map->buckets == NULL) {
        free(map);
        return NULL;
    }
    map->bucket_mask = buckets - 1;
    map->value_size = value_size;
    map->max_topics = max_topics;
    return map;
}

void topic_map_destroy(struct topic_map *map)
{
    struct topic_entry *entry;

    if (map == NULL)
        return;
    entry = map->newest;
    while (entry != NULL) {
        struct topic_entry *older = entry->older;

        free(entry);
        entry = older;
    }
    free(map->buckets);
    free(map);
}

static void recency_unlink(struct topic_map *map, struct topic_entry *entry)
{
    if (entry->newer != NULL)
        entry->newer->older = entry->older;
    else
        map->newest = entry->older;
    if (entry->older != NULL)
        entry->older->newer = entry->newer;
    else
        map->oldest = entry->newer;
    entry->newer = NULL;
    entry->older = NULL;
}

static void recency_push(struct topic_map *map, struct topic_entry *entry)
{
    entry->older = map->newest;
    entry->newer = NULL;
    if (map->newest != NULL)
        map->newest->newer = entry;
    map->newest = entry;
    if (map->oldest == NULL)
        map->oldest = entry;
}

/* Removes and frees the least recently used entry. */
static void topic_map_evict(struct topic_map *map)
{
    struct topic_entry *victim = map->oldest;
    struct topic_entry **link = &map->buckets[victim->hash & map->bucket_mask];

    while (*link != victim)
        link = &(*link)->bucket_next;
    *link = victim->bucket_next;
    recency_unlink(map, victim);
    map->count--;
    free(victim);
}

void *topic_map_get(struct topic_map *map, const char *topic, size_t topic_len)
{
    uint64_t hash = topic_hash(topic, topic_len);
    struct topic_entry **bucket = &map->buckets[hash & map->bucket_mask];
    struct topic_entry *entry;

    for (entry = *bucket; entry != NULL; entry = entry->bucket_next) {
        if (entry->hash == hash && entry->topic_len == topic_len &&
            memcmp(entry->topic, topic, topic_len) == 0) {
            recency_unlink(map, entry);
            recency_push(map, entry);
            return entry->value;
        }
    }

    /* A new topic: allocate first, so failure leaves the map unchanged. */
    entry = calloc(1, sizeof(*entry) + map->value_size + topic_len + 1);
    if (entry == NULL)
        return NULL;
    entry->hash = hash;
    entry->topic_len = topic_len;
    entry->topic = (char *)entry->value + map->value_size;
    memcpy(entry->topic, topic, topic_len);

    if (map->count == map->max_topics)
        topic_map_evict(map);
    entry->bucket_next = *bucket;
    *bucket = entry;
    recency_push(map, entry);
    map->count++;
    return entry->value;
}

size_t topic_map_count(const struct topic_map *map)
{
    return map->count;
}
