/* libFuzzer target: raw bytes from a client through the real wslay session
 * of a WebSocket connection, over a socket pair. */
#include "ws.h"

#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_text(struct ws_conn *conn, const uint8_t *text, size_t len, void *user)
{
    (*(size_t *)user) += len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct ws_config cfg = {
        .max_message_bytes = 4096,
        .send_queue_bytes = 65536,
        .ping_interval_ms = 1000,
        .idle_timeout_ms = 5000,
    };
    static const struct ws_callbacks callbacks = {.on_text = on_text};
    struct ws_conn *conn;
    size_t received = 0;
    int fds[2];

    if (size > 60000 || socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        return 0;

    /* Half the input arrives as bytes read with the handshake. */
    conn = ws_conn_create(fds[0], NULL, (const char *)data, size / 2, &cfg, &callbacks,
                          &received);
    if (conn == NULL) {
        close(fds[0]);
        close(fds[1]);
        return 0;
    }
    if (write(fds[1], data + size / 2, size - size / 2) < 0)
        abort();
    shutdown(fds[1], SHUT_WR);

    for (int i = 0; i < 4 && !ws_conn_is_done(conn); i++)
        ws_conn_handle_events(conn, EPOLLIN);

    ws_conn_destroy(conn);
    close(fds[1]);
    return 0;
}
