#include "ws.h"
#include "clock.h"
#include "metrics.h"
#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

/* How long a closing connection waits for its close frame to leave and for
 * the client's close frame to arrive. */
#define WS_CLOSE_GRACE_MS 2000

/* Frames per sendmsg call. */
#define WS_SEND_IOV_MAX 64

struct out_item {
    struct frame *frame;
    bool exempt;
};

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

struct ws_conn {
    int fd;
    struct MHD_UpgradeResponseHandle *urh;
    wslay_event_context_ptr ctx;
    const struct ws_config *cfg;
    struct ws_callbacks callbacks;
    void *user;

    /* Bytes libmicrohttpd read past the request, consumed before the socket. */
    uint8_t *extra;
    size_t extra_len;
    size_t extra_off;

    /* The output queue: a ring of frames; the head may be partly written.
     * Exempt frames (replies, history) do not count against the limit. */
    struct out_item *queue;
    size_t queue_cap;
    size_t queue_head;
    size_t queue_count;
    size_t head_offset;
    size_t queued_bytes;
    size_t exempt_bytes;

    /* Bytes passed to wslay, and the on-wire size of the frames it has
     * parsed. When they are equal, wslay has no partial frame. */
    uint64_t bytes_in;
    uint64_t bytes_parsed;
    uint64_t frame_bytes;  /* on-wire size of the frame being parsed */
    bool fragmented;       /* a data message continues in a later frame */

    int64_t last_recv_ms;
    int64_t last_ping_ms;
    int64_t close_deadline_ms;
    bool closing;
    bool write_shut;
    bool done;
    uint16_t close_code;
    const char *end_reason;
};

bool ws_accept_key(const char *key, char out[WS_ACCEPT_KEY_LEN + 1])
{
    unsigned char decoded[24];
    unsigned char digest[SHA_DIGEST_LENGTH];
    char joined[24 + sizeof(ws_guid)];
    size_t len = strlen(key);

    /* A valid key is base64 of 16 bytes: 24 characters ending in "==". */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    if (EVP_DecodeBlock(decoded, (const unsigned char *)key, 24) != 18)
        return false;

    memcpy(joined, key, 24);
    memcpy(joined + 24, ws_guid, sizeof(ws_guid) - 1);
    SHA1((const unsigned char *)joined, 24 + sizeof(ws_guid) - 1, digest);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
    out[WS_ACCEPT_KEY_LEN] = '\0';
    return true;
}

void ws_frame_begin(struct buf *b)
{
    static const uint8_t zeros[WS_FRAME_HEADROOM];

    buf_append(b, zeros, sizeof(zeros));
}

struct frame *ws_frame_finish(struct buf *b, uint8_t opcode)
{
    size_t payload_len;
    size_t header_len;
    uint8_t *header;
    struct frame *f;

    if (b->failed || b->len < WS_FRAME_HEADROOM) {
        buf_cleanup(b);
        return NULL;
    }
    payload_len = b->len - WS_FRAME_HEADROOM;
    /* 7-bit length, 16-bit extended length, or 64-bit (RFC 6455, 5.2). */
    if (payload_len < 126)
        header_len = 2;
    else if (payload_len <= 0xFFFF)
        header_len = 4;
    else
        header_len = 10;
    header = b->data + WS_FRAME_HEADROOM - header_len;

    /* FIN set, no mask: servers never mask (RFC 6455, section 5.1). */
    header[0] = 0x80 | (opcode & 0x0F);
    if (header_len == 2) {
        header[1] = (uint8_t)payload_len;
    } else if (header_len == 4) {
        header[1] = 126;
        header[2] = (uint8_t)(payload_len >> 8);
        header[3] = (uint8_t)payload_len;
    } else {
        header[1] = 127;
        for (int i = 0; i < 8; i++)
            header[2 + i] = (uint8_t)((uint64_t)payload_len >> (56 - 8 * i));
    }

    f = malloc(sizeof(*f));
    if (f == NULL) {
        buf_cleanup(b);
        return NULL;
    }
    atomic_init(&f->refs, 1);
    f->storage = b->data;
    f->data = header;
    f->len = header_len + payload_len;
    b->data = NULL;
    buf_cleanup(b);
    return f;
}

const uint8_t *ws_frame_payload(const struct frame *f, size_t *len)
{
    uint8_t len7 = f->data[1] & 0x7f;
    size_t header = 10;

    if (len7 < 126)
        header = 2;
    else if (len7 == 126)
        header = 4;

    *len = f->len - header;
    return f->data + header;
}

/* Creates a private frame holding a copy of bytes wslay produced. */
static struct frame *frame_copy(const uint8_t *data, size_t len)
{
    struct frame *f = malloc(sizeof(*f));

    if (f == NULL)
        return NULL;
    f->storage = malloc(len ? len : 1);
    if (f->storage == NULL) {
        free(f);
        return NULL;
    }
    memcpy(f->storage, data, len);
    f->data = f->storage;
    f->len = len;
    atomic_init(&f->refs, 1);
    return f;
}

static void conn_finish(struct ws_conn *conn, const char *reason)
{
    if (conn->done)
        return;
    conn->done = true;
    if (conn->end_reason == NULL)
        conn->end_reason = reason;
}

static bool queue_push(struct ws_conn *conn, struct frame *f, bool exempt)
{
    if (conn->queue_count == conn->queue_cap) {
        size_t cap = conn->queue_cap ? conn->queue_cap * 2 : 16;
        struct out_item *q = malloc(cap * sizeof(*q));
        if (q == NULL)
            return false;
        for (size_t i = 0; i < conn->queue_count; i++)
            q[i] = conn->queue[(conn->queue_head + i) % conn->queue_cap];
        free(conn->queue);
        conn->queue = q;
        conn->queue_cap = cap;
        conn->queue_head = 0;
    }
    conn->queue[(conn->queue_head + conn->queue_count) % conn->queue_cap] =
        (struct out_item){f, exempt};
    conn->queue_count++;
    conn->queued_bytes += f->len;
    if (exempt)
        conn->exempt_bytes += f->len;
    return true;
}

static void queue_pop(struct ws_conn *conn)
{
    struct out_item item = conn->queue[conn->queue_head];
    struct frame *f = item.frame;

    conn->queued_bytes -= f->len - conn->head_offset;
    if (item.exempt)
        conn->exempt_bytes -= f->len - conn->head_offset;
    conn->head_offset = 0;
    conn->queue_head = (conn->queue_head + 1) % conn->queue_cap;
    conn->queue_count--;
    frame_unref(f);
}

/* Drops every queued frame that has not started to leave. */
static void queue_drop_unstarted(struct ws_conn *conn)
{
    size_t keep = conn->head_offset > 0 ? 1 : 0;

    while (conn->queue_count > keep) {
        size_t last = (conn->queue_head + conn->queue_count - 1) % conn->queue_cap;
        struct frame *f = conn->queue[last].frame;
        conn->queued_bytes -= f->len;
        if (conn->queue[last].exempt)
            conn->exempt_bytes -= f->len;
        conn->queue_count--;
        frame_unref(f);
    }
}

static ssize_t on_wslay_recv(wslay_event_context_ptr ctx, uint8_t *data, size_t len, int flags,
                             void *user)
{
    struct ws_conn *conn = user;
    ssize_t n;

    if (conn->extra_off < conn->extra_len) {
        size_t avail = conn->extra_len - conn->extra_off;
        size_t take = avail < len ? avail : len;
        memcpy(data, conn->extra + conn->extra_off, take);
        conn->extra_off += take;
        conn->bytes_in += take;
        return (ssize_t)take;
    }

    do {
        n = recv(conn->fd, data, len, 0);
    } while (n < 0 && errno == EINTR);

    if (n > 0) {
        conn->last_recv_ms = clock_monotonic_ms();
        conn->bytes_in += (uint64_t)n;
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    conn_finish(conn, n == 0 ? "client closed the TCP connection" : "socket read error");
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

/* wslay's own frames (pong, close) join the ordered output queue. */
static ssize_t on_wslay_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                             int flags, void *user)
{
    struct ws_conn *conn = user;
    struct frame *f = frame_copy(data, len);

    if (f == NULL || !queue_push(conn, f, true)) {
        frame_unref(f);
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* Records the on-wire size of each client frame: a 2-byte header, the
 * extended length, the 4-byte mask and the payload.
 * A client that encodes a length in more bytes than needed makes this
 * figure too small, which only keeps the context alive. */
static void on_wslay_frame_start(wslay_event_context_ptr ctx,
                                 const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    struct ws_conn *conn = user;
    uint64_t header = 2 + 4;

    (void)ctx;
    if (arg->payload_length >= 126)
        header += arg->payload_length <= 0xFFFF ? 2 : 8;
    conn->frame_bytes = header + arg->payload_length;
    if (arg->opcode < WS_OPCODE_CLOSE)
        conn->fragmented = !arg->fin;
}

static void on_wslay_frame_end(wslay_event_context_ptr ctx, void *user)
{
    struct ws_conn *conn = user;

    (void)ctx;
    conn->bytes_parsed += conn->frame_bytes;
    conn->frame_bytes = 0;
}

static void on_wslay_msg(wslay_event_context_ptr ctx,
                         const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
    struct ws_conn *conn = user;

    if (conn->closing)
        return;

    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        if (!utf8_valid(arg->msg, arg->msg_length)) {
            ws_conn_close(conn, WS_CLOSE_INVALID_PAYLOAD, "text message is not valid UTF-8",
                          false);
            return;
        }
        conn->callbacks.on_text(conn, arg->msg, arg->msg_length, conn->user);
        break;
    case WSLAY_BINARY_FRAME:
        ws_conn_close(conn, WS_CLOSE_UNSUPPORTED_DATA,
                      "binary messages are not accepted: send JSON text", false);
        break;
    case WSLAY_CONNECTION_CLOSE:
        /* wslay has queued the reply close frame; it leaves on the next send. */
        conn->closing = true;
        conn->close_code = wslay_event_get_status_code_received(ctx);
        conn->close_deadline_ms = clock_monotonic_ms() + WS_CLOSE_GRACE_MS;
        conn->end_reason = "client sent close";
        break;
    default:
        break;
    }
}

static void set_socket_options(int fd)
{
    int one = 1;
    int flags = fcntl(fd, F_GETFL, 0);

    if (flags >= 0)
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    /* Frames are small and latency matters more than packet count. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Creates the wslay context if the connection has none. Returns false when
 * out of memory. */
static bool ctx_ensure(struct ws_conn *conn)
{
    static const struct wslay_event_callbacks wslay_callbacks = {
        .recv_callback = on_wslay_recv,
        .send_callback = on_wslay_send,
        .on_frame_recv_start_callback = on_wslay_frame_start,
        .on_frame_recv_end_callback = on_wslay_frame_end,
        .on_msg_recv_callback = on_wslay_msg,
    };

    if (conn->ctx != NULL)
        return true;
    if (wslay_event_context_server_init(&conn->ctx, &wslay_callbacks, conn) != 0) {
        conn->ctx = NULL;
        return false;
    }
    wslay_event_config_set_max_recv_msg_length(conn->ctx, conn->cfg->max_message_bytes);
    metrics_gauge_add(&metrics.ws_parsers, 1);
    return true;
}

/*
 * Frees the wslay context and the empty queue of a connection at rest, where
 * every byte read belongs to a whole message already handled and wslay has
 * nothing to send. Idle clients then cost little memory.
 */
static void ctx_release_if_idle(struct ws_conn *conn)
{
    if (conn->ctx == NULL || conn->closing || conn->done)
        return;
    if (conn->bytes_in != conn->bytes_parsed || conn->fragmented ||
        conn->extra_off < conn->extra_len || wslay_event_want_write(conn->ctx))
        return;

    wslay_event_context_free(conn->ctx);
    conn->ctx = NULL;
    metrics_gauge_add(&metrics.ws_parsers, -1);
    free(conn->extra);
    conn->extra = NULL;
    conn->extra_len = conn->extra_off = 0;
    if (conn->queue_count == 0) {
        free(conn->queue);
        conn->queue = NULL;
        conn->queue_cap = 0;
        conn->queue_head = 0;
    }
}

struct ws_conn *ws_conn_create(int fd, struct MHD_UpgradeResponseHandle *urh,
                               const char *extra, size_t extra_len, const struct ws_config *cfg,
                               const struct ws_callbacks *callbacks, void *user)
{
    struct ws_conn *conn = calloc(1, sizeof(*conn));

    if (conn == NULL)
        return NULL;

    if (extra_len > 0) {
        conn->extra = malloc(extra_len);
        if (conn->extra == NULL)
            goto fail_conn;
        memcpy(conn->extra, extra, extra_len);
        conn->extra_len = extra_len;
    }

    conn->fd = fd;
    conn->urh = urh;
    conn->cfg = cfg;
    conn->callbacks = *callbacks;
    conn->user = user;
    conn->last_recv_ms = clock_monotonic_ms();
    conn->last_ping_ms = conn->last_recv_ms;
    set_socket_options(fd);
    return conn;

fail_conn:
    free(conn);
    return NULL;
}

void ws_conn_destroy(struct ws_conn *conn)
{
    if (conn == NULL)
        return;
    while (conn->queue_count > 0)
        queue_pop(conn);
    free(conn->queue);
    if (conn->ctx != NULL) {
        wslay_event_context_free(conn->ctx);
        metrics_gauge_add(&metrics.ws_parsers, -1);
    }
    free(conn->extra);
    ws_socket_close(conn->fd, conn->urh);
    free(conn);
}

void ws_socket_close(int fd, struct MHD_UpgradeResponseHandle *urh)
{
    /* Only libmicrohttpd may close a socket while its connection is open. */
    if (urh != NULL)
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    else if (fd >= 0)
        close(fd);
}

int ws_conn_fd(const struct ws_conn *conn)
{
    return conn->fd;
}

/* Moves what wslay has queued (pong, close) into the output queue. */
static void pump_wslay_output(struct ws_conn *conn)
{
    if (conn->done || conn->ctx == NULL)
        return;
    if (wslay_event_want_write(conn->ctx) && wslay_event_send(conn->ctx) != 0)
        conn_finish(conn, "out of memory queueing a control frame");
}

void ws_conn_flush(struct ws_conn *conn)
{
    pump_wslay_output(conn);

    while (!conn->done && conn->queue_count > 0) {
        struct iovec iov[WS_SEND_IOV_MAX];
        size_t n = 0;
        ssize_t written;

        for (size_t i = 0; i < conn->queue_count && n < WS_SEND_IOV_MAX; i++) {
            struct frame *f = conn->queue[(conn->queue_head + i) % conn->queue_cap].frame;
            size_t off = i == 0 ? conn->head_offset : 0;
            iov[n].iov_base = f->data + off;
            iov[n].iov_len = f->len - off;
            n++;
        }

        /* sendmsg enters the socket layer directly, not through writev's VFS
         * path, and MSG_NOSIGNAL keeps a closed peer from raising SIGPIPE. */
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = n};
        do {
            written = sendmsg(conn->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (written < 0 && errno == EINTR);
        if (written < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_finish(conn, "socket write error");
            return;
        }

        size_t left = (size_t)written;
        while (left > 0) {
            struct frame *head = conn->queue[conn->queue_head].frame;
            size_t rest = head->len - conn->head_offset;
            if (left < rest) {
                conn->head_offset += left;
                conn->queued_bytes -= left;
                if (conn->queue[conn->queue_head].exempt)
                    conn->exempt_bytes -= left;
                break;
            }
            left -= rest;
            queue_pop(conn);
        }
    }

    if (conn->ctx == NULL)
        return;

    /* wslay closes by itself on some protocol errors (1002, 1009). */
    if (!conn->closing && wslay_event_get_close_sent(conn->ctx)) {
        conn->closing = true;
        conn->close_code = wslay_event_get_status_code_sent(conn->ctx);
        conn->close_deadline_ms = clock_monotonic_ms() + WS_CLOSE_GRACE_MS;
        if (conn->end_reason == NULL)
            conn->end_reason = conn->close_code == WS_CLOSE_MESSAGE_TOO_BIG
                                   ? "message over max_message_bytes"
                                   : "protocol error";
    }

    /* The close frame has left: half-close and wait for the client's close. */
    if (!conn->done && conn->queue_count == 0 && wslay_event_get_close_sent(conn->ctx)) {
        if (wslay_event_get_close_received(conn->ctx)) {
            conn_finish(conn, "closed");
        } else if (!conn->write_shut) {
            shutdown(conn->fd, SHUT_WR);
            conn->write_shut = true;
        }
    }
}

void ws_conn_handle_events(struct ws_conn *conn, uint32_t events)
{
    bool readable = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0 ||
                    conn->extra_off < conn->extra_len;

    if (!conn->done && readable && !ctx_ensure(conn))
        conn_finish(conn, "out of memory creating a WebSocket parser");

    /* Edge-triggered epoll: wslay_event_recv reads until the socket has
     * nothing more (or reading was shut down). */
    if (!conn->done && conn->ctx != NULL && wslay_event_want_read(conn->ctx) &&
        wslay_event_recv(conn->ctx) != 0)
        conn_finish(conn, "protocol error or read failure");

    /* After the close handshake, read and discard until the client closes. */
    if (!conn->done && conn->ctx != NULL && !wslay_event_get_read_enabled(conn->ctx) &&
        conn->write_shut) {
        uint8_t scratch[4096];
        ssize_t n;
        while ((n = recv(conn->fd, scratch, sizeof(scratch), 0)) > 0)
            ;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            conn_finish(conn, conn->end_reason ? conn->end_reason : "closed");
    }

    ws_conn_flush(conn);
    ctx_release_if_idle(conn);
}

bool ws_conn_send(struct ws_conn *conn, struct frame *f)
{
    if (conn->closing || conn->done)
        return true;
    if (conn->queued_bytes - conn->exempt_bytes + f->len > conn->cfg->send_queue_bytes) {
        char reason[96];
        snprintf(reason, sizeof(reason), "client too slow: send queue over %zu bytes",
                 conn->cfg->send_queue_bytes);
        ws_conn_close(conn, WS_CLOSE_POLICY_VIOLATION, reason, true);
        conn->end_reason = "client too slow: send queue full";
        return false;
    }
    if (!queue_push(conn, frame_ref(f), false)) {
        frame_unref(f);
        ws_conn_close(conn, WS_CLOSE_INTERNAL_ERROR, "out of memory", true);
        return false;
    }
    return true;
}

void ws_conn_send_exempt(struct ws_conn *conn, struct frame *f)
{
    if (conn->closing || conn->done)
        return;
    if (!queue_push(conn, frame_ref(f), true)) {
        frame_unref(f);
        ws_conn_close(conn, WS_CLOSE_INTERNAL_ERROR, "out of memory", true);
    }
}

void ws_conn_close(struct ws_conn *conn, uint16_t code, const char *reason, bool drop_queued)
{
    size_t reason_len = strlen(reason);

    if (conn->closing || conn->done)
        return;
    conn->closing = true;
    conn->close_code = code;
    conn->close_deadline_ms = clock_monotonic_ms() + WS_CLOSE_GRACE_MS;
    if (conn->end_reason == NULL)
        conn->end_reason = reason;

    if (drop_queued)
        queue_drop_unstarted(conn);
    if (!ctx_ensure(conn)) {
        conn_finish(conn, "out of memory closing");
        return;
    }
    if (reason_len > 123)
        reason_len = 123;
    wslay_event_queue_close(conn->ctx, code, (const uint8_t *)reason, reason_len);
    wslay_event_shutdown_read(conn->ctx);
    pump_wslay_output(conn);
}

void ws_conn_tick(struct ws_conn *conn, int64_t now_ms)
{
    if (conn->done)
        return;

    if (conn->closing) {
        if (now_ms >= conn->close_deadline_ms)
            conn_finish(conn, conn->end_reason ? conn->end_reason : "close timed out");
        return;
    }

    if (now_ms - conn->last_recv_ms >= conn->cfg->idle_timeout_ms) {
        ws_conn_close(conn, WS_CLOSE_NORMAL, "idle timeout: nothing received", true);
        conn->end_reason = "idle timeout";
        ws_conn_flush(conn);
        return;
    }

    if (now_ms - conn->last_recv_ms >= conn->cfg->ping_interval_ms &&
        now_ms - conn->last_ping_ms >= conn->cfg->ping_interval_ms) {
        struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"tidegate", 8};
        conn->last_ping_ms = now_ms;
        if (!ctx_ensure(conn)) {
            conn_finish(conn, "out of memory sending a ping");
            return;
        }
        wslay_event_queue_msg(conn->ctx, &ping);
        ws_conn_flush(conn);
        ctx_release_if_idle(conn);
    }
}

bool ws_conn_is_closing(const struct ws_conn *conn)
{
    return conn->closing;
}

bool ws_conn_is_done(const struct ws_conn *conn)
{
    return conn->done;
}

bool ws_conn_has_output(const struct ws_conn *conn)
{
    return conn->queue_count > 0 || (conn->ctx != NULL && wslay_event_want_write(conn->ctx));
}

size_t ws_conn_queued_bytes(const struct ws_conn *conn)
{
    return conn->queued_bytes;
}

uint16_t ws_conn_close_code(const struct ws_conn *conn)
{
    return conn->close_code;
}

const char *ws_conn_end_reason(const struct ws_conn *conn)
{
    return conn->end_reason ? conn->end_reason : "closed";
}
