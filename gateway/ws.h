/*
 * WebSocket connections (RFC 6455) on sockets that libmicrohttpd upgraded.
 *
 * wslay parses what clients send and handles ping, pong and close. Data
 * frames to clients are pre-encoded once per message and shared by every
 * connection (struct frame), so they are written here directly, at frame
 * boundaries: wslay would copy each queued message per connection. wslay's
 * own output (pong and close frames) is copied into the same queue, so all
 * bytes leave through one ordered queue and one sendmsg call.
 *
 * Threading: everything here runs on the event loop thread, except that the
 * flusher's thread also calls ws_conn_flush, on connections the loop does not
 * touch until that flush returns (flusher.h).
 *
 * Lifetime: ws_conn_create adopts the socket. When ws_conn_is_done returns
 * true the owner calls ws_conn_destroy, which closes the socket, through
 * libmicrohttpd while the connection is still open there (as over TLS).
 * Callbacks never free the connection.
 *
 * Memory: an idle connection has no wslay context. The context (about
 * 8 KiB of buffers) is created when bytes arrive or a control frame must go
 * out, and freed again once wslay has parsed every byte read into whole
 * messages and has nothing left to send.
 */
#ifndef TIDEGATE_WS_H
#define TIDEGATE_WS_H

#include "buf.h"
#include "msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_UpgradeResponseHandle;
struct ws_conn;

#define WS_OPCODE_TEXT 0x1
#define WS_OPCODE_CLOSE 0x8
#define WS_OPCODE_PING 0x9

/* Close codes (RFC 6455, section 7.4.1). */
#define WS_CLOSE_NORMAL 1000
#define WS_CLOSE_GOING_AWAY 1001
#define WS_CLOSE_UNSUPPORTED_DATA 1003
#define WS_CLOSE_INVALID_PAYLOAD 1007
#define WS_CLOSE_POLICY_VIOLATION 1008
#define WS_CLOSE_MESSAGE_TOO_BIG 1009
#define WS_CLOSE_INTERNAL_ERROR 1011
#define WS_CLOSE_TRY_AGAIN_LATER 1013

/* Bytes reserved at the start of a frame buffer for the largest header. */
#define WS_FRAME_HEADROOM 10

/* Length of a Sec-WebSocket-Accept value, without the NUL. */
#define WS_ACCEPT_KEY_LEN 28

struct ws_config {
    size_t max_message_bytes;  /* larger client messages are closed with 1009 */
    size_t send_queue_bytes;   /* a client with more queued is closed with 1008 */
    int64_t ping_interval_ms;  /* server ping after this much silence */
    int64_t idle_timeout_ms;   /* close after this much silence */
};

struct ws_callbacks {
    /* A complete text message that is valid UTF-8. */
    void (*on_text)(struct ws_conn *conn, const uint8_t *data, size_t len, void *user);
};

/*
 * Returns true when @key is a valid Sec-WebSocket-Key (base64 of 16 bytes)
 * and writes the Sec-WebSocket-Accept value for it into @out.
 */
bool ws_accept_key(const char *key, char out[WS_ACCEPT_KEY_LEN + 1]);

/* Starts a frame in an empty buffer by reserving WS_FRAME_HEADROOM bytes;
 * append the payload after it. */
void ws_frame_begin(struct buf *b);

/*
 * Writes the header for the payload appended since ws_frame_begin and turns
 * the buffer into a frame with one reference. Takes the buffer's memory and
 * leaves @b empty. Returns NULL when the buffer had failed to grow.
 */
struct frame *ws_frame_finish(struct buf *b, uint8_t opcode);

/* Returns the payload of a frame made by ws_frame_finish and its length. */
const uint8_t *ws_frame_payload(const struct frame *f, size_t *len);

/*
 * Creates a connection on the upgraded socket @fd. @extra contains the bytes
 * libmicrohttpd read past the HTTP request; they are parsed before anything
 * read from the socket. With @urh NULL the connection owns @fd and closes it
 * itself, and otherwise it closes it through @urh. Returns NULL when out of
 * memory, and the caller then closes the socket with ws_socket_close.
 */
struct ws_conn *ws_conn_create(int fd, struct MHD_UpgradeResponseHandle *urh,
                               const char *extra, size_t extra_len, const struct ws_config *cfg,
                               const struct ws_callbacks *callbacks, void *user);

/* Closes the socket and frees the connection. */
void ws_conn_destroy(struct ws_conn *conn);

/* Closes an upgraded socket that has no connection: through libmicrohttpd
 * when @urh is set, else with close(). */
void ws_socket_close(int fd, struct MHD_UpgradeResponseHandle *urh);

int ws_conn_fd(const struct ws_conn *conn);

/* Reads and writes what the socket allows after an epoll event. */
void ws_conn_handle_events(struct ws_conn *conn, uint32_t events);

/*
 * Queues a shared frame, taking a reference. Returns false, and starts
 * closing with 1008, when the queue would pass its byte limit; the frame is
 * then not queued. Frames queued after a close started are dropped.
 */
bool ws_conn_send(struct ws_conn *conn, struct frame *f);

/*
 * Queues a frame, taking a reference, without counting it against the
 * send queue limit: for replies and history, whose size the gateway bounds
 * itself. Live frames queued after it still see only live bytes counted.
 */
void ws_conn_send_exempt(struct ws_conn *conn, struct frame *f);

/* Writes as much of the queue as the socket takes now. */
void ws_conn_flush(struct ws_conn *conn);

/*
 * Starts the closing handshake with @code and @reason (at most 123 bytes).
 * Frames queued but not yet started are dropped when @drop_queued is true,
 * so the close frame goes out at once. Does nothing if closing already.
 */
void ws_conn_close(struct ws_conn *conn, uint16_t code, const char *reason, bool drop_queued);

/* Sends pings, enforces the idle timeout and the closing deadline. */
void ws_conn_tick(struct ws_conn *conn, int64_t now_ms);

bool ws_conn_is_closing(const struct ws_conn *conn);
bool ws_conn_is_done(const struct ws_conn *conn);
bool ws_conn_has_output(const struct ws_conn *conn);
size_t ws_conn_queued_bytes(const struct ws_conn *conn);

/* The close code this side sent, or 0 when none was sent. */
uint16_t ws_conn_close_code(const struct ws_conn *conn);

/* The reason the connection ended, for the disconnect log line. */
const char *ws_conn_end_reason(const struct ws_conn *conn);

#endif
