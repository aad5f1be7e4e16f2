/*
 * A WebSocket client's session: its protocol requests, its subscriptions in
 * the hub and the delivery of matching messages. Runs on the loop thread.
 */
#ifndef TIDEGATE_SESSION_H
#define TIDEGATE_SESSION_H

#include "auth.h"
#include "hub.h"
#include "msg.h"

#include <stdbool.h>
#include <stdint.h>

struct gateway;
struct mail;
struct ws_conn;
struct sse_conn;
struct history_request;
struct MHD_UpgradeResponseHandle;

struct session_filter {
    char *filter;
    struct hub_sub *sub;
    double max_rate; /* messages per second per topic; 0 for every message */
};

struct session {
    struct hub_subscriber subscriber; /* first, so the hub's pointer converts back */
    uint64_t id;
    struct gateway *gw;
    struct principal principal; /* who the client is; name[0] == 0 until authenticated */
    bool authenticated;
    int64_t auth_deadline_ms;   /* close when still unauthenticated by then; 0 for none */
    double publish_tokens;      /* token bucket for publish_rate */
    int64_t publish_refill_ms;
    struct ws_conn *ws;   /* exactly one of ws and sse is set */
    struct sse_conn *sse;
    char peer[64];              /* "address:port" of the client */
    unsigned char address_len;  /* peer[0..address_len) is its IP address, for limits */

    struct session_filter *filters;
    size_t filter_count;
    size_t filter_cap;
    size_t rate_limited_filters;
    struct conflate *conflate;  /* created with the first max_rate filter */
    bool conflate_pending;      /* messages wait in conflate */

    /* While history requests are in flight, live messages wait here so
     * they follow the history in seq order. */
    unsigned pending_history;
    struct msg **held;
    size_t held_count;
    size_t held_cap;
    size_t held_bytes;

    struct session *prev;
    struct session *next;
    struct session *id_next;
    struct session *dirty_next;
    struct session *reap_next;
    bool dirty;
    bool reaping;
};

/*
 * Creates a session on an upgraded socket and sends the welcome message.
 * Adopts @principal (NULL: the client must send an auth message first).
 * Returns NULL when out of memory; the socket is then closed.
 */
struct session *session_create(struct gateway *gw, int fd, struct MHD_UpgradeResponseHandle *urh,
                               const char *extra, size_t extra_len, const char *peer,
                               struct principal *principal);

/*
 * Creates a session on a Server-Sent Events stream, subscribed to @filter
 * with @history (HISTORY_NONE for live only). Adopts the loop's reference
 * to @sse. Returns NULL when out of memory.
 */
struct session *session_create_sse(struct gateway *gw, struct sse_conn *sse, const char *peer,
                                   const char *filter, const struct history_request *history,
                                   struct principal *principal);

/* Seconds a WebSocket client has to authenticate when it connected
 * without a credential and anonymous clients are not allowed. */
#define SESSION_AUTH_TIMEOUT_MS 10000

/* Close code when the token expires: 4000-4999 is for applications
 * (RFC 6455, section 7.4.2); the reason tells the client to fetch a new token. */
#define SESSION_CLOSE_TOKEN_EXPIRED 4001

/*
 * Closes a client whose token expired or that did not authenticate in
 * time. Returns false when it started closing. @now_ms is wall-clock time,
 * @monotonic_ms the monotonic clock.
 */
bool session_check_token(struct session *s, int64_t now_ms, int64_t monotonic_ms);

/* Transport-neutral operations for the loop. */
void session_flush(struct session *s);
void session_tick(struct session *s, int64_t now_ms);
void session_close(struct session *s, uint16_t code, const char *reason);
bool session_is_done(const struct session *s);
const char *session_end_reason(const struct session *s);

/* Removes the session's subscriptions and frees it with its connection. */
void session_destroy(struct session *s);

/* The hub's delivery callback: queues @arg (a struct msg *) to the session. */
void session_deliver(struct hub_subscriber *subscriber, void *arg);

/* Sends the result of a publish request back to the client. */
void session_publish_done(struct session *s, const char *request_id_json, bool ok,
                          const char *error);

/* Sends the history that was read for a subscription, then the live
 * messages held meanwhile. @mail is a MAIL_HISTORY; its result is used up. */
void session_history_done(struct session *s, struct mail *mail);

/* Sends the conflated messages that are due. Returns true while some are
 * still waiting. */
bool session_flush_conflated(struct session *s, int64_t now_ms);

/* Marks the session for a flush or for reaping at the end of the loop turn. */
void session_mark_dirty(struct session *s);
void session_check_done(struct session *s);

#endif
