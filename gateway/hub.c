#include "hub.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct hub_node {
    struct hub_node *parent;
    struct hub_node *next; /* next in the parent's hash bucket */
    char *level;           /* NULL for the root */
    size_t level_len;

    struct hub_node **buckets; /* children that are plain levels */
    size_t bucket_count;
    size_t child_count;
    struct hub_node *plus;  /* the "+" child */
    struct hub_node *hash;  /* the "#" child */

    struct hub_sub **subs;  /* subscriptions whose filter ends here */
    size_t sub_count;
    size_t sub_cap;
};

struct hub_sub {
    struct hub_node *node;
    struct hub_subscriber *subscriber;
    size_t index; /* position in node->subs, for O(1) removal */
};

struct hub {
    struct hub_node root;
    size_t subscription_count;
};

static uint64_t hash_level(const char *s, size_t len)
{
    /* FNV-1a, 64-bit. */
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static struct hub_node *node_find_child(const struct hub_node *node, const char *level,
                                        size_t len)
{
    struct hub_node *child;

    if (node->bucket_count == 0)
        return NULL;
    child = node->buckets[hash_level(level, len) & (node->bucket_count - 1)];
    for (; child != NULL; child = child->next) {
        if (child->level_len == len && memcmp(child->level, level, len) == 0)
            return child;
    }
    return NULL;
}

static bool node_grow_buckets(struct hub_node *node)
{
    size_t count = node->bucket_count ? node->bucket_count * 2 : 4;
    struct hub_node **buckets = calloc(count, sizeof(*buckets));

    if (buckets == NULL)
        return false;

    for (size_t i = 0; i < node->bucket_count; i++) {
        struct hub_node *child = node->buckets[i];
        while (child != NULL) {
            struct hub_node *next = child->next;
            size_t slot = hash_level(child->level, child->level_len) & (count - 1);
            child->next = buckets[slot];
            buckets[slot] = child;
            child = next;
        }
    }
    free(node->buckets);
    node->buckets = buckets;
    node->bucket_count = count;
    return true;
}

static struct hub_node *node_new(struct hub_node *parent, const char *level, size_t len)
{
    struct hub_node *node = calloc(1, sizeof(*node));

    if (node == NULL)
        return NULL;
    node->level = malloc(len + 1);
    if (node->level == NULL) {
        free(node);
        return NULL;
    }
    memcpy(node->level, level, len);
    node->level[len] = '\0';
    node->level_len = len;
    node->parent = parent;
    return node;
}

/* Returns the child for one filter level, creating it when missing. */
static struct hub_node *node_get_child(struct hub_node *node, const char *level, size_t len)
{
    struct hub_node *child;
    size_t slot;

    if (len == 1 && level[0] == '+') {
        if (node->plus == NULL)
            node->plus = node_new(node, level, len);
        return node->plus;
    }
    if (len == 1 && level[0] == '#') {
        if (node->hash == NULL)
            node->hash = node_new(node, level, len);
        return node->hash;
    }

    child = node_find_child(node, level, len);
    if (child != NULL)
        return child;

    if (node->child_count >= node->bucket_count && !node_grow_buckets(node))
        return NULL;
    child = node_new(node, level, len);
    if (child == NULL)
        return NULL;
    slot = hash_level(level, len) & (node->bucket_count - 1);
    child->next = node->buckets[slot];
    node->buckets[slot] = child;
    node->child_count++;
    return child;
}

static bool node_is_unused(const struct hub_node *node)
{
    return node->sub_count == 0 && node->child_count == 0 && node->plus == NULL &&
           node->hash == NULL;
}

static void node_free(struct hub_node *node)
{
    free(node->buckets);
    free(node->subs);
    free(node->level);
    free(node);
}

static void node_unlink(struct hub_node *parent, struct hub_node *node)
{
    struct hub_node **link;

    if (parent->plus == node) {
        parent->plus = NULL;
        return;
    }
    if (parent->hash == node) {
        parent->hash = NULL;
        return;
    }
    link = &parent->buckets[hash_level(node->level, node->level_len) & (parent->bucket_count - 1)];
    while (*link != node)
        link = &(*link)->next;
    *link = node->next;
    parent->child_count--;
}

/* Frees @node and its ancestors while they hold nothing; keeps the root. */
static void node_prune(struct hub_node *node)
{
    while (node->parent != NULL && node_is_unused(node)) {
        struct hub_node *parent = node->parent;
        node_unlink(parent, node);
        node_free(node);
        node = parent;
    }
}

static void node_destroy_tree(struct hub_node *node)
{
    for (size_t i = 0; i < node->bucket_count; i++) {
        struct hub_node *child = node->buckets[i];
        while (child != NULL) {
            struct hub_node *next = child->next;
            node_destroy_tree(child);
            child = next;
        }
    }
    if (node->plus != NULL)
        node_destroy_tree(node->plus);
    if (node->hash != NULL)
        node_destroy_tree(node->hash);
    for (size_t i = 0; i < node->sub_count; i++)
        free(node->subs[i]);
    if (node->parent != NULL)
        node_free(node);
}

struct hub *hub_create(void)
{
    return calloc(1, sizeof(struct hub));
}

void hub_destroy(struct hub *hub)
{
    if (hub == NULL)
        return;
    node_destroy_tree(&hub->root);
    free(hub->root.buckets);
    free(hub->root.subs);
    free(hub);
}

static bool node_add_sub(struct hub_node *node, struct hub_sub *sub)
{
    if (node->sub_count == node->sub_cap) {
        size_t cap = node->sub_cap ? node->sub_cap * 2 : 4;
        struct hub_sub **subs = realloc(node->subs, cap * sizeof(*subs));
        if (subs == NULL)
            return false;
        node->subs = subs;
        node->sub_cap = cap;
    }
    sub->node = node;
    sub->index = node->sub_count;
    node->subs[node->sub_count++] = sub;
    return true;
}

struct hub_sub *hub_subscribe(struct hub *hub, struct hub_subscriber *subscriber,
                              const char *filter)
{
    struct hub_node *node = &hub->root;
    const char *level = filter;
    struct hub_sub *sub;

    for (;;) {
        const char *end = strchrnul(level, '/');
        struct hub_node *child = node_get_child(node, level, (size_t)(end - level));
        if (child == NULL)
            goto fail;
        node = child;
        if (*end == '\0')
            break;
        level = end + 1;
    }

    sub = calloc(1, sizeof(*sub));
    if (sub == NULL)
        goto fail;
    sub->subscriber = subscriber;
    if (!node_add_sub(node, sub)) {
        free(sub);
        goto fail;
    }
    hub->subscription_count++;
    return sub;

fail:
    node_prune(node);
    return NULL;
}

void hub_unsubscribe(struct hub *hub, struct hub_sub *sub)
{
    struct hub_node *node;
    struct hub_sub *last;

    if (sub == NULL)
        return;
    node = sub->node;

    last = node->subs[node->sub_count - 1];
    node->subs[sub->index] = last;
    last->index = sub->index;
    node->sub_count--;
    hub->subscription_count--;
    free(sub);

    node_prune(node);
}

struct match_ctx {
    uint64_t seq;
    hub_deliver_fn deliver;
    void *arg;
    size_t delivered;
};

static void deliver_node(const struct hub_node *node, struct match_ctx *ctx)
{
    for (size_t i = 0; i < node->sub_count; i++) {
        struct hub_subscriber *s = node->subs[i]->subscriber;
        if (s->last_seq == ctx->seq)
            continue;
        s->last_seq = ctx->seq;
        ctx->delivered++;
        ctx->deliver(s, ctx->arg);
    }
}

/*
 * @node stands for the levels matched so far. @rest is the start of the next
 * topic level, or NULL when the topic has no more levels. @first is true at
 * the root, where wildcards must not match a level that begins with '$'.
 */
static void match_node(const struct hub_node *node, const char *rest, bool first,
                       struct match_ctx *ctx)
{
    bool wild_ok = !(first && rest != NULL && rest[0] == '$');
    const char *end;
    const char *next;
    const struct hub_node *child;

    if (rest == NULL) {
        deliver_node(node, ctx);
        /* "a/#" matches "a" itself. */
        if (node->hash != NULL && !first)
            deliver_node(node->hash, ctx);
        return;
    }

    if (node->hash != NULL && wild_ok)
        deliver_node(node->hash, ctx);

    end = strchrnul(rest, '/');
    next = *end == '\0' ? NULL : end + 1;

    child = node_find_child(node, rest, (size_t)(end - rest));
    if (child != NULL)
        match_node(child, next, false, ctx);
    if (node->plus != NULL && wild_ok)
        match_node(node->plus, next, false, ctx);
}

size_t hub_match(struct hub *hub, const char *topic, uint64_t seq, hub_deliver_fn deliver,
                 void *arg)
{
    struct match_ctx ctx = {seq, deliver, arg, 0};

    match_node(&hub->root, topic, true, &ctx);
    return ctx.delivered;
}

size_t hub_subscription_count(const struct hub *hub)
{
    return hub->subscription_count;
}
