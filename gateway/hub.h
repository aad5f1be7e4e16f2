/*
 * The hub: a subscription tree that matches each message against every
 * client's topic filters, with MQTT wildcard rules (see topic.h).
 *
 * The cost of a match grows with the depth of the topic and the number of
 * matching subscriptions, not with the number of clients. A subscriber that
 * holds several overlapping filters is reported once per message.
 *
 * Not thread-safe: the gateway's event loop thread owns the hub.
 */
#ifndef TIDEGATE_HUB_H
#define TIDEGATE_HUB_H

#include <stddef.h>
#include <stdint.h>

struct hub;
struct hub_sub;

/* Embedded in whatever subscribes (a WebSocket session, an SSE stream). */
struct hub_subscriber {
    uint64_t last_seq; /* seq of the last message reported, for de-duplication */
};

typedef void (*hub_deliver_fn)(struct hub_subscriber *subscriber, void *arg);

struct hub *hub_create(void);
void hub_destroy(struct hub *hub);

/*
 * Adds one subscription of @subscriber to the valid filter @filter. Returns
 * the subscription handle (owned by the hub, released by hub_unsubscribe)
 * or NULL when out of memory. The caller keeps @filter; the hub copies it.
 */
struct hub_sub *hub_subscribe(struct hub *hub, struct hub_subscriber *subscriber,
                              const char *filter);

/* Removes one subscription and frees its handle. Accepts NULL. */
void hub_unsubscribe(struct hub *hub, struct hub_sub *sub);

/*
 * Calls @deliver once for each subscriber with at least one filter that
 * matches @topic. @seq must differ from the seq of every earlier call: it
 * is how a subscriber with overlapping filters is reported once. Returns
 * the number of subscribers reported. @deliver must not change the hub.
 */
size_t hub_match(struct hub *hub, const char *topic, uint64_t seq, hub_deliver_fn deliver,
                 void *arg);

/* Number of subscriptions in the hub, for metrics. */
size_t hub_subscription_count(const struct hub *hub);

#endif
