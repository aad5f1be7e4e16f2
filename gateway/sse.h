/*
 * Server-Sent Events streams (GET /api/v1/stream) on libmicrohttpd.
 *
 * libmicrohttpd pulls the body through a content reader on its own thread;
 * the event loop pushes events into the stream's buffer. When the buffer is
 * empty the reader suspends the connection, and a push resumes it, so an
 * idle stream costs no polling.
 *
 * Each event is "data:" lines holding one JSON object of the WebSocket
 * protocol (its "type" tells what it is); message events also carry
 * "id: <epoch>:<seq>", which a reconnecting EventSource sends back as
 * Last-Event-ID.
 *
 * Lifetime: a stream has two references, one for libmicrohttpd (dropped in
 * its free callback) and one for the loop (dropped by sse_conn_destroy).
 */
#ifndef TIDEGATE_SSE_H
#define TIDEGATE_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_Connection;
struct MHD_Response;
struct sse_conn;

/* How often an idle stream gets a comment line, so proxies keep it open
 * and a client that went away is noticed. */
#define SSE_HEARTBEAT_MS 15000

/* Creates a stream for @conn and the response that serves it (to queue
 * with status 200). Returns NULL when out of memory. */
struct sse_conn *sse_conn_create(struct MHD_Connection *conn, size_t queue_limit,
                                 struct MHD_Response **response);

/* Drops the loop's reference. */
void sse_conn_destroy(struct sse_conn *c);

/*
 * Queues one event holding @json (@len bytes, one JSON object). @id, when
 * not NULL, becomes the event id. Exempt events do not count against the
 * queue limit. Returns false, and ends the stream, when the limit is passed.
 */
bool sse_conn_send(struct sse_conn *c, const uint8_t *json, size_t len, const char *id,
                   bool exempt);

/* Wakes libmicrohttpd when there is something to send. */
void sse_conn_flush(struct sse_conn *c);

/* Ends the stream once what is queued has been sent. */
void sse_conn_close(struct sse_conn *c, const char *reason);

/* Sends a heartbeat when the stream was idle for SSE_HEARTBEAT_MS. */
void sse_conn_tick(struct sse_conn *c, int64_t now_ms);

bool sse_conn_is_closing(const struct sse_conn *c);

/* True when the client went away or the ended stream was sent. */
bool sse_conn_is_done(const struct sse_conn *c);

size_t sse_conn_queued_bytes(const struct sse_conn *c);
const char *sse_conn_end_reason(const struct sse_conn *c);

/* Parses "<epoch>:<seq>" (a Last-Event-ID). Returns false when malformed. */
bool sse_parse_event_id(const char *text, char *epoch, size_t epoch_size, uint64_t *seq);

#endif
