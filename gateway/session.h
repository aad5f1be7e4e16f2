/*
 * A WebSocket client's session: its protocol requests, its subscriptions in
 * the hub and the delivery of matching messages. Runs on the loop thread.
 */
#ifndef TIDEGATE_SESSION_H
#define TIDEGATE_SESSION_H

#include "hub.h"
#include "msg.h"

#include <stdbool.h>
#include <stdint.h>

struct gateway;
struct ws_conn;
struct MHD_UpgradeResponseHandle;

struct session_filter {
    char *filter;
    struct hub_sub *sub;
};

struct session {
    struct hub_subscriber subscriber; /* first, so the hub's pointer converts back */
    uint64_t id;
    struct gateway *gw;
    struct ws_conn *ws;
    char peer[64];

    struct session_filter *filters;
    size_t filter_count;
    size_t filter_cap;

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
 * Returns NULL when out of memory; the socket is then closed.
 */
struct session *session_create(struct gateway *gw, int fd, struct MHD_UpgradeResponseHandle *urh,
                               const char *extra, size_t extra_len, const char *peer);

/* Removes the session's subscriptions and frees it with its connection. */
void session_destroy(struct session *s);

/* The hub's delivery callback: queues @arg (a struct msg *) to the session. */
void session_deliver(struct hub_subscriber *subscriber, void *arg);

/* Sends the result of a publish request back to the client. */
void session_publish_done(struct session *s, const char *request_id_json, bool ok,
                          const char *error);

/* Marks the session for a flush or for reaping at the end of the loop turn. */
void session_mark_dirty(struct session *s);
void session_check_done(struct session *s);

#endif
