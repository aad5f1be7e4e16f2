#include "conflate.h"

#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *next;   /* in the hash bucket */
    char *topic;
    int64_t last_sent_ms;
    int64_t due_ms;
    struct msg *pending;  /* one reference, or NULL */
};

struct conflate {
    struct entry **buckets;
    size_t bucket_count;
    size_t count;
    size_t pending_count;
};

static uint64_t hash_topic(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
    return h;
}

struct conflate *conflate_create(void)
{
    struct conflate *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->bucket_count = 64;
    c->buckets = calloc(c->bucket_count, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void conflate_destroy(struct conflate *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->bucket_count; i++) {
        struct entry *e = c->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            msg_unref(e->pending);
            free(e->topic);
            free(e);
            e = next;
        }
    }
    free(c->buckets);
    free(c);
}

static void grow(struct conflate *c)
{
    size_t count = c->bucket_count * 2;
    struct entry **buckets = calloc(count, sizeof(*buckets));

    if (buckets == NULL)
        return;
    for (size_t i = 0; i < c->bucket_count; i++) {
        struct entry *e = c->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            size_t slot = hash_topic(e->topic) & (count - 1);
            e->next = buckets[slot];
            buckets[slot] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = buckets;
    c->bucket_count = count;
}

static struct entry *find_or_add(struct conflate *c, const char *topic)
{
    size_t slot = hash_topic(topic) & (c->bucket_count - 1);
    struct entry *e;

    for (e = c->buckets[slot]; e != NULL; e = e->next) {
        if (strcmp(e->topic, topic) == 0)
            return e;
    }
    if (c->count >= CONFLATE_MAX_TOPICS)
        return NULL;
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->topic = strdup(topic)) == NULL) {
        free(e);
        return NULL;
    }
    e->last_sent_ms = INT64_MIN / 2;
    e->next = c->buckets[slot];
    c->buckets[slot] = e;
    if (++c->count > c->bucket_count)
        grow(c);
    return e;
}

bool conflate_offer(struct conflate *c, struct msg *m, double rate, int64_t now_ms)
{
    struct entry *e = find_or_add(c, m->topic);
    int64_t interval_ms = (int64_t)(1000.0 / rate);

    if (e == NULL)
        return true;
    if (e->pending == NULL && now_ms - e->last_sent_ms >= interval_ms) {
        e->last_sent_ms = now_ms;
        return true;
    }
    if (e->pending == NULL)
        c->pending_count++;
    msg_unref(e->pending);
    e->pending = msg_ref(m);
    e->due_ms = e->last_sent_ms + interval_ms;
    return false;
}

bool conflate_flush(struct conflate *c, int64_t now_ms, void (*send)(void *arg, struct msg *m),
                    void *arg)
{
    for (size_t i = 0; c->pending_count > 0 && i < c->bucket_count; i++) {
        for (struct entry *e = c->buckets[i]; e != NULL; e = e->next) {
            struct msg *m = e->pending;
            if (m == NULL || now_ms < e->due_ms)
                continue;
            e->pending = NULL;
            e->last_sent_ms = now_ms;
            c->pending_count--;
            send(arg, m);
            msg_unref(m);
        }
    }
    return c->pending_count > 0;
}
