/*
 * The HTTP server, on libmicrohttpd with its own polling thread: the
 * dashboard and its assets, health and readiness, metrics, and the
 * WebSocket upgrade on GET /ws. Upgraded sockets are handed to the event
 * loop through the mailbox.
 */
#ifndef TIDEGATE_HTTP_H
#define TIDEGATE_HTTP_H

#include "config.h"
#include "mailbox.h"

#include <jansson.h>
#include <stdbool.h>

struct http;

/* Binds the listening socket and starts serving. Returns NULL with the
 * reason logged. Borrows @cfg, @mb, @dashboards (the checked array from
 * the dashboards file, or NULL) and @auth. */
struct auth;
struct http *http_create(const struct config *cfg, struct mailbox *mb, json_t *dashboards,
                         const struct auth *auth);

/* Stops accepting connections; requests in progress finish. */
void http_quiesce(struct http *http);

void http_destroy(struct http *http);

#endif
