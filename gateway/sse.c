#include "sse.h"
#include "buf.h"
#include "clock.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct sse_conn {
    atomic_uint refs;
    pthread_mutex_t lock; /* guards everything below */
    struct MHD_Connection *conn;
    struct buf out;       /* bytes not yet taken by libmicrohttpd */
    size_t out_off;
    size_t exempt_bytes;  /* of out, bytes that do not count against the limit */
    size_t queue_limit;
    bool suspended;       /* the reader parked the connection */
    bool closing;         /* end the stream once out is sent */
    bool client_gone;     /* libmicrohttpd freed the response */
    bool ended;           /* the end of the stream was returned */
    int64_t last_send_ms;
    const char *end_reason;
};

static void sse_unref(struct sse_conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    buf_cleanup(&c->out);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Called by libmicrohttpd on its thread whenever the socket can take more. */
static ssize_t sse_read(void *cls, uint64_t pos, char *dest, size_t max)
{
    struct sse_conn *c = cls;
    ssize_t n = 0;

    pthread_mutex_lock(&c->lock);
    if (c->out_off < c->out.len) {
        size_t avail = c->out.len - c->out_off;
        size_t take = avail < max ? avail : max;
        memcpy(dest, c->out.data + c->out_off, take);
        c->out_off += take;
        c->exempt_bytes = c->exempt_bytes > take ? c->exempt_bytes - take : 0;
        if (c->out_off == c->out.len) {
            c->out.len = 0;
            c->out_off = 0;
        }
        n = (ssize_t)take;
    } else if (c->closing) {
        c->ended = true;
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing to send: park the connection until the loop resumes it. */
        c->suspended = true;
        MHD_suspend_connection(c->conn);
    }
    pthread_mutex_unlock(&c->lock);
    return n;
}

static void sse_free(void *cls)
{
    struct sse_conn *c = cls;

    pthread_mutex_lock(&c->lock);
    c->client_gone = true;
    if (c->end_reason == NULL)
        c->end_reason = c->ended ? "stream ended" : "client went away";
    pthread_mutex_unlock(&c->lock);
    sse_unref(c);
}

struct sse_conn *sse_conn_create(struct MHD_Connection *conn, size_t queue_limit,
                                 struct MHD_Response **response)
{
    static const char preamble[] = "retry: 2000\n\n";
    struct sse_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    atomic_init(&c->refs, 2);
    pthread_mutex_init(&c->lock, NULL);
    buf_init(&c->out);
    buf_append(&c->out, preamble, sizeof(preamble) - 1);
    c->exempt_bytes = c->out.len;
    c->conn = conn;
    c->queue_limit = queue_limit;
    c->last_send_ms = clock_monotonic_ms();

    *response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, c, sse_free);
    if (*response == NULL) {
        buf_cleanup(&c->out);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
    }
    MHD_add_response_header(*response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(*response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    /* Tells nginx not to buffer the stream. */
    MHD_add_response_header(*response, "X-Accel-Buffering", "no");
    return c;
}

void sse_conn_destroy(struct sse_conn *c)
{
    if (c != NULL)
        sse_unref(c);
}

/* Appends "data:" lines for @json; a payload embedded verbatim may hold
 * line breaks, and each line needs its own "data:" field. */
static void append_data_lines(struct buf *out, const uint8_t *json, size_t len)
{
    size_t start = 0;

    for (size_t i = 0; i <= len; i++) {
        if (i < len && json[i] != '\n' && json[i] != '\r')
            continue;
        buf_append_str(out, "data: ");
        buf_append(out, json + start, i - start);
        buf_append(out, "\n", 1);
        if (i + 1 < len && json[i] == '\r' && json[i + 1] == '\n')
            i++;
        start = i + 1;
    }
}

bool sse_conn_send(struct sse_conn *c, const uint8_t *json, size_t len, const char *id,
                   bool exempt)
{
    size_t before;
    bool ok = true;

    pthread_mutex_lock(&c->lock);
    if (c->closing || c->client_gone) {
        pthread_mutex_unlock(&c->lock);
        return true;
    }
    if (!exempt && (c->out.len - c->out_off) - c->exempt_bytes + len > c->queue_limit) {
        c->closing = true;
        c->end_reason = "client too slow: stream buffer full";
        ok = false;
    } else {
        before = c->out.len;
        if (id != NULL) {
            buf_append_str(&c->out, "id: ");
            buf_append_str(&c->out, id);
            buf_append(&c->out, "\n", 1);
        }
        append_data_lines(&c->out, json, len);
        buf_append(&c->out, "\n", 1);
        if (exempt)
            c->exempt_bytes += c->out.len - before;
        c->last_send_ms = clock_monotonic_ms();
        if (c->out.failed) {
            c->closing = true;
            c->end_reason = "out of memory";
            ok = false;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return ok;
}

void sse_conn_flush(struct sse_conn *c)
{
    pthread_mutex_lock(&c->lock);
    if (c->suspended && !c->client_gone && (c->out.len > c->out_off || c->closing)) {
        c->suspended = false;
        MHD_resume_connection(c->conn);
    }
    pthread_mutex_unlock(&c->lock);
}

void sse_conn_close(struct sse_conn *c, const char *reason)
{
    pthread_mutex_lock(&c->lock);
    if (!c->closing) {
        c->closing = true;
        if (c->end_reason == NULL)
            c->end_reason = reason;
    }
    pthread_mutex_unlock(&c->lock);
    sse_conn_flush(c);
}

void sse_conn_tick(struct sse_conn *c, int64_t now_ms)
{
    bool idle;

    pthread_mutex_lock(&c->lock);
    idle = !c->closing && !c->client_gone && now_ms - c->last_send_ms >= SSE_HEARTBEAT_MS;
    if (idle) {
        buf_append_str(&c->out, ": heartbeat\n\n");
        c->exempt_bytes += 13;
        c->last_send_ms = now_ms;
    }
    pthread_mutex_unlock(&c->lock);
    if (idle)
        sse_conn_flush(c);
}

bool sse_conn_is_closing(const struct sse_conn *c)
{
    struct sse_conn *m = (struct sse_conn *)c;
    bool closing;

    pthread_mutex_lock(&m->lock);
    closing = m->closing || m->client_gone;
    pthread_mutex_unlock(&m->lock);
    return closing;
}

bool sse_conn_is_done(const struct sse_conn *c)
{
    struct sse_conn *m = (struct sse_conn *)c;
    bool done;

    pthread_mutex_lock(&m->lock);
    done = m->client_gone || m->ended;
    pthread_mutex_unlock(&m->lock);
    return done;
}

size_t sse_conn_queued_bytes(const struct sse_conn *c)
{
    struct sse_conn *m = (struct sse_conn *)c;
    size_t n;

    pthread_mutex_lock(&m->lock);
    n = m->out.len - m->out_off;
    pthread_mutex_unlock(&m->lock);
    return n;
}

const char *sse_conn_end_reason(const struct sse_conn *c)
{
    return c->end_reason ? c->end_reason : "closed";
}

bool sse_parse_event_id(const char *text, char *epoch, size_t epoch_size, uint64_t *seq)
{
    const char *colon = strrchr(text, ':');
    size_t epoch_len;
    char *end;

    if (colon == NULL || colon == text)
        return false;
    epoch_len = (size_t)(colon - text);
    if (epoch_len >= epoch_size)
        return false;
    for (size_t i = 0; i < epoch_len; i++) {
        char ch = text[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return false;
    }
    if (colon[1] < '0' || colon[1] > '9')
        return false;
    errno = 0;
    *seq = strtoull(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    memcpy(epoch, text, epoch_len);
    epoch[epoch_len] = '\0';
    return true;
}
