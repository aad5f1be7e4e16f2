#include "http.h"
#include "auth.h"
#include "buf.h"
#include "clock.h"
#include "dashboards.h"
#include "log.h"
#include "metrics.h"
#include "protocol.h"
#include "sse.h"
#include "store.h"
#include "topic.h"
#include "utf8.h"
#include "ws.h"
#include "www.h"

#include <inttypes.h>
#include <pthread.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define COMPONENT "http"

/* Threads that serve HTTP; each may hold one store reader at a time. */
#define HTTP_THREADS 2

/* Seconds an HTTP connection may stay idle, before or between requests. */
#define HTTP_TIMEOUT_S 30

/* Largest request body read; no endpoint takes one yet. */
#define HTTP_MAX_BODY_BYTES 65536

/* Connections libmicrohttpd takes beyond max_connections. */
#define HTTP_CONNECTION_HEADROOM 64

/* Bytes of memory per connection for the request line and headers. */
#define HTTP_MEMORY_LIMIT (16 * 1024)

struct http {
    const struct config *cfg;
    struct mailbox *mb;
    json_t *dashboards;
    const struct auth *auth;
    char *tls_cert; /* PEM text, kept while the daemon runs */
    char *tls_key;
    struct MHD_Daemon *daemon;
    int listen_fd;

    pthread_mutex_t readers_lock;
    struct store_reader *readers[HTTP_THREADS];
    size_t reader_count;
    struct log_ratelimit error_rl;
};

static enum MHD_Result queue_buffer(struct MHD_Connection *conn, unsigned status,
                                    const char *content_type, const void *data, size_t len,
                                    enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)data, mode);
    enum MHD_Result ret;

    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result queue_json(struct MHD_Connection *conn, unsigned status, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    enum MHD_Result ret;

    json_decref(obj);
    if (text == NULL)
        return MHD_NO;
    ret = queue_buffer(conn, status, "application/json", text, strlen(text),
                       MHD_RESPMEM_MUST_FREE);
    return ret;
}

static enum MHD_Result queue_error(struct MHD_Connection *conn, unsigned status,
                                   const char *code, const char *message)
{
    return queue_json(conn, status, json_pack("{s:s, s:s}", "error", code, "message", message));
}

/* Ready means the broker is connected and the last store commit worked. */
static enum MHD_Result serve_readyz(struct MHD_Connection *conn)
{
    bool broker = metrics_broker_connected();
    bool store = metrics_store_healthy();
    bool ready = broker && store;

    return queue_json(conn, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                      json_pack("{s:b, s:s, s:s}", "ready", ready, "broker",
                                broker ? "connected" : "disconnected", "store",
                                store ? "ok" : "degraded"));
}

static enum MHD_Result serve_metrics(struct MHD_Connection *conn)
{
    struct buf out;

    buf_init(&out);
    metrics_render(&out);
    if (out.failed) {
        buf_cleanup(&out);
        return MHD_NO;
    }
    /* MHD frees the buffer with free() once sent. */
    return queue_buffer(conn, MHD_HTTP_OK, "text/plain; version=0.0.4", out.data, out.len,
                        MHD_RESPMEM_MUST_FREE);
}

/* ---- per-request state ---- */

/* Per-request data passed from the request handler to the upgrade callback. */
struct request_state {
    struct principal *principal; /* for /ws: adopted by the upgrade callback */
};

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode code)
{
    struct request_state *state = *req_cls;

    if (state == NULL)
        return;
    if (state->principal != NULL) {
        principal_cleanup(state->principal);
        free(state->principal);
    }
    free(state);
    *req_cls = NULL;
}

/* ---- who is asking ---- */

/* Returns the credential of the request: "Authorization: Bearer X" or the
 * access_token query parameter (browsers cannot set WebSocket headers). */
static const char *request_credential(struct MHD_Connection *conn)
{
    const char *header = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");

    if (header != NULL && strncasecmp(header, "Bearer ", 7) == 0)
        return header + 7;
    return MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "access_token");
}

static void format_peer(struct MHD_Connection *conn, char *out, size_t size);

/*
 * Works out the principal of a request. A credential that does not verify
 * gets 401; no credential gets the anonymous principal, or 401 when
 * anonymous clients are not allowed and @required. Returns false when a
 * response was queued in @ret. With !@required, *@out may stay empty
 * (out->name NULL) for a client that will authenticate later.
 */
static bool request_principal(struct http *http, struct MHD_Connection *conn, bool required,
                              struct principal *out, enum MHD_Result *ret)
{
    const char *credential = request_credential(conn);
    char err[256];
    char peer[64];

    memset(out, 0, sizeof(*out));
    if (credential != NULL) {
        if (auth_authenticate(http->auth, credential, clock_realtime_ms(), out, err,
                              sizeof(err)))
            return true;
        metrics_add(&metrics.auth_failures, 1);
        format_peer(conn, peer, sizeof(peer));
        log_limited(&http->error_rl, LOG_WARN, COMPONENT, "rejected a credential from %s: %s",
                    peer, err);
        *ret = queue_error(conn, MHD_HTTP_UNAUTHORIZED, "forbidden", err);
        return false;
    }
    if (auth_anonymous(http->auth, out) || !required)
        return true;
    metrics_add(&metrics.auth_failures, 1);
    *ret = queue_error(conn, MHD_HTTP_UNAUTHORIZED, "forbidden",
                       "authentication required: send a token as 'Authorization: Bearer "
                       "<token>' or the access_token query parameter");
    return false;
}

/* Refuses a filter the principal may not read, with 403. */
static bool check_read(struct MHD_Connection *conn, const struct principal *p, const char *filter,
                       enum MHD_Result *ret)
{
    char message[320];

    if (principal_may_subscribe(p, filter))
        return true;
    metrics_add(&metrics.forbidden, 1);
    snprintf(message, sizeof(message), "'%s' may not read '%.*s'", principal_name(p),
             utf8_prefix_len(filter, 100), filter);
    *ret = queue_error(conn, MHD_HTTP_FORBIDDEN, "forbidden", message);
    return false;
}

/* ---- the JSON API on the window store ---- */

/* Takes a reader from the pool, opening one when none is free. */
static struct store_reader *reader_take(struct http *http, char *err, size_t err_size)
{
    struct store_reader *r = NULL;

    pthread_mutex_lock(&http->readers_lock);
    if (http->reader_count > 0)
        r = http->readers[--http->reader_count];
    pthread_mutex_unlock(&http->readers_lock);
    if (r == NULL)
        r = store_reader_open(http->cfg->db, err, err_size);
    return r;
}

static void reader_give_back(struct http *http, struct store_reader *r)
{
    pthread_mutex_lock(&http->readers_lock);
    if (http->reader_count < HTTP_THREADS) {
        http->readers[http->reader_count++] = r;
        r = NULL;
    }
    pthread_mutex_unlock(&http->readers_lock);
    store_reader_close(r);
}

/* Appends each message as its WebSocket "message" object, comma-separated. */
static bool append_messages(struct buf *out, const struct store_history *h, bool history)
{
    for (size_t i = 0; i < h->count; i++) {
        struct frame *f = protocol_encode_message(h->msgs[i], history);
        const uint8_t *json;
        size_t len;

        if (f == NULL)
            return false;
        json = ws_frame_payload(f, &len);
        if (i > 0)
            buf_append(out, ",", 1);
        buf_append(out, json, len);
        frame_unref(f);
    }
    return !out->failed;
}

/* Parses a non-negative integer query argument. Returns false with an
 * error queued when it is present but not a number. */
static bool query_u64(struct MHD_Connection *conn, const char *name, bool *present,
                      uint64_t *out, enum MHD_Result *ret)
{
    const char *text = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    char message[160];
    char *end;

    *present = text != NULL;
    if (text == NULL)
        return true;
    errno = 0;
    *out = strtoull(text, &end, 10);
    if (errno == 0 && end != text && *end == '\0' && text[0] != '-')
        return true;
    snprintf(message, sizeof(message), "query parameter '%s' must be a non-negative integer, got '%.40s'",
             name, text);
    *ret = queue_error(conn, MHD_HTTP_BAD_REQUEST, "invalid", message);
    return false;
}

static bool query_filter(struct MHD_Connection *conn, const char **filter, enum MHD_Result *ret)
{
    const char *text = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "filter");
    const char *why;
    char message[200];

    *filter = text ? text : "#";
    why = topic_check_filter(*filter, strlen(*filter));
    if (why == NULL)
        return true;
    snprintf(message, sizeof(message), "invalid filter: the filter %s", why);
    *ret = queue_error(conn, MHD_HTTP_BAD_REQUEST, "invalid", message);
    return false;
}

static enum MHD_Result store_unavailable(struct http *http, struct MHD_Connection *conn,
                                         const char *why)
{
    log_limited(&http->error_rl, LOG_ERROR, COMPONENT, "window store query failed: %s", why);
    return queue_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                       "the window store cannot be read now; try again later");
}

static enum MHD_Result serve_topics(struct http *http, struct MHD_Connection *conn)
{
    struct store_history h;
    struct store_reader *r;
    const char *filter;
    uint64_t limit = 10000;
    bool has_limit;
    enum MHD_Result ret;
    char err[256];
    struct buf out;

    struct principal who;

    if (!query_filter(conn, &filter, &ret) || !query_u64(conn, "limit", &has_limit, &limit, &ret))
        return ret;
    if (!request_principal(http, conn, true, &who, &ret))
        return ret;

    r = reader_take(http, err, sizeof(err));
    if (r == NULL) {
        principal_cleanup(&who);
        return store_unavailable(http, conn, err);
    }
    if (store_reader_latest(r, filter, (size_t)limit, &h) != STORE_OK) {
        ret = store_unavailable(http, conn, store_reader_error(r));
        reader_give_back(http, r);
        principal_cleanup(&who);
        return ret;
    }
    reader_give_back(http, r);

    /* A listing shows only the topics this client may read. */
    size_t kept = 0;
    for (size_t i = 0; i < h.count; i++) {
        if (principal_may_read_topic(&who, h.msgs[i]->topic))
            h.msgs[kept++] = h.msgs[i];
        else
            msg_unref(h.msgs[i]);
    }
    h.count = kept;
    principal_cleanup(&who);

    buf_init(&out);
    buf_append_str(&out, "{\"epoch\":\"");
    buf_append_str(&out, h.epoch);
    buf_append_str(&out, "\",\"count\":");
    buf_append_u64(&out, h.count);
    buf_append_str(&out, ",\"topics\":[");
    append_messages(&out, &h, false);
    buf_append_str(&out, "]}");
    store_history_cleanup(&h);
    if (out.failed) {
        buf_cleanup(&out);
        return MHD_NO;
    }
    return queue_buffer(conn, MHD_HTTP_OK, "application/json", out.data, out.len,
                        MHD_RESPMEM_MUST_FREE);
}

/* Reads the history request from the query: limit alone means the last N;
 * since_ms, or since_seq with epoch, means everything after a point. */
static bool parse_history_query(struct http *http, struct MHD_Connection *conn,
                                struct history_request *req, size_t *limit, enum MHD_Result *ret)
{
    const char *epoch = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "epoch");
    uint64_t n = 0, since_ms = 0, since_seq = 0;
    bool has_limit, has_since_ms, has_since_seq;

    if (!query_u64(conn, "limit", &has_limit, &n, ret) ||
        !query_u64(conn, "since_ms", &has_since_ms, &since_ms, ret) ||
        !query_u64(conn, "since_seq", &has_since_seq, &since_seq, ret))
        return false;

    if (has_since_ms && has_since_seq) {
        *ret = queue_error(conn, MHD_HTTP_BAD_REQUEST, "invalid",
                           "give since_ms or since_seq, not both");
        return false;
    }
    if (has_since_seq && (epoch == NULL || strlen(epoch) >= sizeof(req->epoch))) {
        *ret = queue_error(conn, MHD_HTTP_BAD_REQUEST, "invalid",
                           "since_seq needs the epoch it belongs to: add epoch=<epoch>");
        return false;
    }

    *limit = (size_t)http->cfg->history_max_messages;
    if (has_limit && n < *limit)
        *limit = (size_t)n;

    memset(req, 0, sizeof(*req));
    if (has_since_ms) {
        req->kind = HISTORY_SINCE_MS;
        req->since_ms = since_ms > INT64_MAX ? INT64_MAX : (int64_t)since_ms;
    } else if (has_since_seq) {
        req->kind = HISTORY_SINCE_SEQ;
        req->seq = since_seq;
        snprintf(req->epoch, sizeof(req->epoch), "%s", epoch);
    } else {
        req->kind = HISTORY_LAST;
        req->last = has_limit ? n : 100;
    }
    return true;
}

static enum MHD_Result serve_history(struct http *http, struct MHD_Connection *conn)
{
    struct history_request req;
    struct store_history h;
    struct store_reader *r;
    const char *filter;
    size_t limit;
    enum MHD_Result ret;
    char err[256];
    struct buf out;

    struct principal who;
    bool allowed;

    if (!query_filter(conn, &filter, &ret) || !parse_history_query(http, conn, &req, &limit, &ret))
        return ret;
    if (!request_principal(http, conn, true, &who, &ret))
        return ret;
    allowed = check_read(conn, &who, filter, &ret);
    principal_cleanup(&who);
    if (!allowed)
        return ret;

    r = reader_take(http, err, sizeof(err));
    if (r == NULL)
        return store_unavailable(http, conn, err);
    if (store_reader_history(r, filter, &req, INT64_MAX, limit, &h) != STORE_OK) {
        ret = store_unavailable(http, conn, store_reader_error(r));
        reader_give_back(http, r);
        return ret;
    }
    reader_give_back(http, r);
    metrics_add(&metrics.history_requests, 1);
    metrics_add(&metrics.history_messages, h.count);

    buf_init(&out);
    buf_append_str(&out, "{\"epoch\":\"");
    buf_append_str(&out, h.epoch);
    buf_append_str(&out, h.recovered ? "\",\"recovered\":true" : "\",\"recovered\":false");
    buf_append_str(&out, h.truncated ? ",\"truncated\":true" : ",\"truncated\":false");
    buf_append_str(&out, ",\"oldest_seq\":");
    buf_append_u64(&out, h.oldest_seq);
    buf_append_str(&out, ",\"count\":");
    buf_append_u64(&out, h.count);
    buf_append_str(&out, ",\"messages\":[");
    append_messages(&out, &h, true);
    buf_append_str(&out, "]}");
    store_history_cleanup(&h);
    if (out.failed) {
        buf_cleanup(&out);
        return MHD_NO;
    }
    return queue_buffer(conn, MHD_HTTP_OK, "application/json", out.data, out.len,
                        MHD_RESPMEM_MUST_FREE);
}

/* ---- Server-Sent Events ---- */

static void format_peer(struct MHD_Connection *conn, char *out, size_t size);

/*
 * Opens an event stream on @filter. A resuming client names its cursor in
 * the Last-Event-ID header (EventSource sends it on reconnect) or, for a
 * first connect, in the last_event_id query parameter.
 */
static enum MHD_Result serve_stream(struct http *http, struct MHD_Connection *conn)
{
    const char *cursor = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
    struct MHD_Response *resp;
    struct sse_conn *sse;
    struct mail *mail;
    const char *filter;
    enum MHD_Result ret;
    char message[160];

    struct principal who;

    if (!query_filter(conn, &filter, &ret))
        return ret;
    if (atomic_load(&metrics.sse_streams) >= http->cfg->max_sse_streams) {
        metrics_add(&metrics.limit_rejections, 1);
        return queue_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "limit",
                           "too many event streams are open (max_sse_streams); try again later");
    }
    if (!request_principal(http, conn, true, &who, &ret))
        return ret;
    if (!check_read(conn, &who, filter, &ret)) {
        principal_cleanup(&who);
        return ret;
    }
    if (cursor == NULL)
        cursor = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "last_event_id");

    mail = calloc(1, sizeof(*mail));
    if (mail == NULL) {
        principal_cleanup(&who);
        return MHD_NO;
    }
    mail->kind = MAIL_SSE_OPEN;
    mail->u.sse_open.principal = malloc(sizeof(who));
    if (mail->u.sse_open.principal == NULL) {
        principal_cleanup(&who);
        free(mail);
        return MHD_NO;
    }
    *mail->u.sse_open.principal = who; /* the mail owns the lists now */
    if (cursor != NULL && cursor[0] != '\0') {
        struct history_request *h = &mail->u.sse_open.history;
        if (!sse_parse_event_id(cursor, h->epoch, sizeof(h->epoch), &h->seq)) {
            mail_free(mail);
            snprintf(message, sizeof(message),
                     "invalid event id '%.60s': expected <epoch>:<seq> as sent in the id field",
                     cursor);
            return queue_error(conn, MHD_HTTP_BAD_REQUEST, "invalid", message);
        }
        h->kind = HISTORY_SINCE_SEQ;
    }
    mail->u.sse_open.filter = strdup(filter);
    format_peer(conn, mail->u.sse_open.peer, sizeof(mail->u.sse_open.peer));

    sse = sse_conn_create(conn, (size_t)http->cfg->send_queue_bytes, &resp);
    if (sse == NULL || mail->u.sse_open.filter == NULL) {
        mail_free(mail);
        return MHD_NO;
    }
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    if (ret != MHD_YES) {
        sse_conn_destroy(sse);
        mail_free(mail);
        return ret;
    }
    mail->u.sse_open.sse = sse;
    mailbox_post(http->mb, mail);
    return MHD_YES;
}

/* ---- the dashboard's files ---- */

static enum MHD_Result serve_file(struct http *http, struct MHD_Connection *conn,
                                  const char *path)
{
    struct www_file file;
    enum www_result found = www_lookup(http->cfg->www, path, &file);

    if (found == WWW_BAD_PATH)
        return queue_error(conn, MHD_HTTP_BAD_REQUEST, "invalid",
                           "invalid path: it may not contain '..', hidden names, backslashes "
                           "or control characters");
    if (found == WWW_NOT_FOUND)
        return queue_error(conn, MHD_HTTP_NOT_FOUND, "not_found", "no such path");
    return queue_buffer(conn, MHD_HTTP_OK, file.content_type, file.data, file.len,
                        file.owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result serve_dashboards(struct http *http, struct MHD_Connection *conn)
{
    json_t *body = json_object();

    json_object_set_new(body, "dashboards",
                        http->dashboards ? json_incref(http->dashboards) : json_array());
    return queue_json(conn, MHD_HTTP_OK, body);
}

/* /d/NAME is the dashboard page itself; the page reads NAME from its URL. */
static enum MHD_Result serve_dashboard_page(struct http *http, struct MHD_Connection *conn,
                                            const char *name)
{
    if (!dashboards_has(http->dashboards, name))
        return queue_error(conn, MHD_HTTP_NOT_FOUND, "not_found",
                           "no dashboard of that name in the dashboards file");
    return serve_file(http, conn, "/index.html");
}

/* ---- WebSocket upgrade ---- */

static void format_peer(struct MHD_Connection *conn, char *out, size_t size)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (info != NULL && info->client_addr != NULL) {
        const struct sockaddr *sa = info->client_addr;
        if (sa->sa_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
            port = ntohs(in->sin_port);
        } else if (sa->sa_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            port = ntohs(in6->sin6_port);
        }
    }
    snprintf(out, size, "%s:%u", host, port);
}

/*
 * Over plain TCP, returns a duplicate of the upgraded socket, lets
 * libmicrohttpd free its connection and memory pool at once, and sets *urh
 * to NULL. The daemon runs with MHD_USE_TURBO, so closing its
 * descriptor does not shut the socket down. Over TLS libmicrohttpd must stay
 * in the path, and @sock and *urh are returned as they are. Returns -1 when
 * the descriptor table is full; the caller then closes through *urh.
 */
static int take_upgraded_socket(struct http *http, MHD_socket sock,
                                struct MHD_UpgradeResponseHandle **urh)
{
    int own;

    if (http->tls_cert != NULL)
        return sock;
    own = fcntl(sock, F_DUPFD_CLOEXEC, 0);
    if (own < 0) {
        log_error(COMPONENT, "cannot take over an upgraded socket (%s), so the client is "
                  "disconnected: raise the open-file limit if this repeats", strerror(errno));
        return -1;
    }
    MHD_upgrade_action(*urh, MHD_UPGRADE_ACTION_CLOSE);
    *urh = NULL;
    return own;
}

/* Called by libmicrohttpd on its thread once the 101 response is sent. */
static void on_upgraded(void *cls, struct MHD_Connection *conn, void *req_cls,
                        const char *extra_in, size_t extra_in_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh)
{
    struct http *http = cls;
    struct request_state *state = req_cls;
    struct mail *mail = calloc(1, sizeof(*mail));
    int fd = -1;

    if (mail == NULL)
        goto fail;
    mail->kind = MAIL_UPGRADE;
    if (state != NULL) {
        mail->u.upgrade.principal = state->principal;
        state->principal = NULL;
    }
    if (extra_in_size > 0) {
        mail->u.upgrade.extra = malloc(extra_in_size);
        if (mail->u.upgrade.extra == NULL)
            goto fail;
        memcpy(mail->u.upgrade.extra, extra_in, extra_in_size);
        mail->u.upgrade.extra_len = extra_in_size;
    }
    format_peer(conn, mail->u.upgrade.peer, sizeof(mail->u.upgrade.peer));
    snprintf(mail->u.upgrade.address, sizeof(mail->u.upgrade.address), "%s",
             mail->u.upgrade.peer);
    /* The address is the peer without its port. */
    char *colon = strrchr(mail->u.upgrade.address, ':');
    if (colon != NULL)
        *colon = '\0';

    /* The connection is gone from libmicrohttpd after this. */
    fd = take_upgraded_socket(http, sock, &urh);
    if (fd < 0)
        goto fail;
    mail->u.upgrade.fd = fd;
    mail->u.upgrade.urh = urh;
    mailbox_post(http->mb, mail);
    return;

fail:
    log_error(COMPONENT, "cannot accept the WebSocket connection from %s: out of memory or "
              "descriptors", mail != NULL ? mail->u.upgrade.peer : "?");
    mail_free(mail);
    if (urh != NULL)
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
}

/* Returns true when the comma-separated header @value contains @token. */
static bool header_has_token(const char *value, const char *token)
{
    size_t token_len = strlen(token);
    const char *p = value;

    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == token_len && strncasecmp(p, token, len) == 0)
            return true;
        p = end;
    }
    return false;
}

/*
 * Checks the Origin header a browser sends, so a page on another site
 * cannot open a socket with a user's cookies. Clients that send no Origin
 * (devices, scripts) are not browsers and pass.
 */
static bool origin_allowed(struct http *http, struct MHD_Connection *conn)
{
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
    const struct string_list *allowed = &http->cfg->allowed_origins;
    const char *origin_host;

    if (origin == NULL)
        return true;
    if (allowed->count > 0) {
        for (size_t i = 0; i < allowed->count; i++) {
            if (strcasecmp(origin, allowed->items[i]) == 0)
                return true;
        }
        return false;
    }
    /* Same origin: the page came from this gateway's own host and port. */
    origin_host = strstr(origin, "://");
    return origin_host != NULL && host != NULL && strcasecmp(origin_host + 3, host) == 0;
}

static enum MHD_Result serve_websocket(struct http *http, struct MHD_Connection *conn,
                                       struct request_state *state)
{
    const char *upgrade = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade");
    const char *connection = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Connection");
    const char *version =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    char accept[WS_ACCEPT_KEY_LEN + 1];
    struct MHD_Response *resp;
    enum MHD_Result ret;

    if (upgrade == NULL || !header_has_token(upgrade, "websocket") || connection == NULL ||
        !header_has_token(connection, "upgrade"))
        return queue_error(conn, MHD_HTTP_BAD_REQUEST, "invalid",
                           "GET /ws expects a WebSocket upgrade request (Upgrade: websocket)");
    if (version == NULL || strcmp(version, "13") != 0) {
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Sec-WebSocket-Version", "13");
        ret = MHD_queue_response(conn, 426, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    if (key == NULL || !ws_accept_key(key, accept))
        return queue_error(conn, MHD_HTTP_BAD_REQUEST, "invalid",
                           "Sec-WebSocket-Key is missing or is not base64 of 16 bytes");
    if (!origin_allowed(http, conn)) {
        metrics_add(&metrics.forbidden, 1);
        return queue_error(conn, MHD_HTTP_FORBIDDEN, "forbidden",
                           "this page's Origin may not open WebSockets here: add it to "
                           "allowed_origins");
    }

    /* Without a credential the client may still send an auth message. */
    state->principal = calloc(1, sizeof(*state->principal));
    if (state->principal == NULL)
        return MHD_NO;
    if (!request_principal(http, conn, false, state->principal, &ret))
        return ret;
    if (state->principal->name == NULL) {
        free(state->principal);
        state->principal = NULL;
    }

    resp = MHD_create_response_for_upgrade(on_upgraded, http);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, "websocket");
    MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept);
    ret = MHD_queue_response(conn, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
    MHD_destroy_response(resp);
    metrics_add(&metrics.ws_connections_total, 1);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    struct http *http = cls;
    bool is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool is_head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

    /* The first call only announces the request, and the response is
     * queued on the second, except for a body too large to read at all. */
    if (*req_cls == NULL) {
        const char *length =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        *req_cls = calloc(1, sizeof(struct request_state));
        metrics_add(&metrics.http_requests, 1);
        if (length != NULL && strtoull(length, NULL, 10) > HTTP_MAX_BODY_BYTES) {
            metrics_add(&metrics.limit_rejections, 1);
            return queue_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "limit",
                               "request body over 65536 bytes");
        }
        return *req_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* no endpoint takes a body yet: discard it */
        return MHD_YES;
    }

    if (!is_get && !is_head)
        return queue_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "invalid",
                           "only GET and HEAD are served here");

    if (strcmp(url, "/ws") == 0)
        return serve_websocket(http, conn, *req_cls);
    if (strcmp(url, "/healthz") == 0)
        return queue_buffer(conn, MHD_HTTP_OK, "text/plain", "ok\n", 3, MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/readyz") == 0)
        return serve_readyz(conn);
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(conn);
    if (strcmp(url, "/api/v1/topics") == 0)
        return serve_topics(http, conn);
    if (strcmp(url, "/api/v1/history") == 0)
        return serve_history(http, conn);
    if (strcmp(url, "/api/v1/stream") == 0)
        return serve_stream(http, conn);

    if (strcmp(url, "/api/v1/dashboards") == 0)
        return serve_dashboards(http, conn);
    if (strncmp(url, "/d/", 3) == 0)
        return serve_dashboard_page(http, conn, url + 3);
    return serve_file(http, conn, url);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t len;

    vsnprintf(line, sizeof(line), fmt, ap);
    len = strlen(line);
    while (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    log_debug(COMPONENT, "libmicrohttpd: %s", line);
}

static bool read_text_file(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    long size;

    *out = NULL;
    if (f == NULL)
        return false;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) <= 0 || size > 1048576 ||
        fseek(f, 0, SEEK_SET) != 0 || (*out = malloc((size_t)size + 1)) == NULL ||
        fread(*out, 1, (size_t)size, f) != (size_t)size) {
        free(*out);
        *out = NULL;
        fclose(f);
        return false;
    }
    (*out)[size] = '\0';
    fclose(f);
    return true;
}

/* Binds the listening socket here so a failure names the address and the
 * system's reason. */
static int open_listen_socket(const struct config *cfg)
{
    struct addrinfo hints = {0};
    struct addrinfo *res = NULL;
    char port[8];
    int fd = -1;
    int one = 1;
    int rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(port, sizeof(port), "%u", cfg->listen_port);
    rc = getaddrinfo(cfg->listen_host, port, &hints, &res);
    if (rc != 0) {
        log_error(COMPONENT, "cannot resolve listen address %s: %s", cfg->listen,
                  gai_strerror(rc));
        return -1;
    }

    fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0)
        goto fail;
    freeaddrinfo(res);
    return fd;

fail:
    log_error(COMPONENT, "cannot listen on %s: %s", cfg->listen, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

struct http *http_create(const struct config *cfg, struct mailbox *mb, json_t *dashboards,
                         const struct auth *auth)
{
    struct http *http = calloc(1, sizeof(*http));
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_UPGRADE |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC |
                     MHD_ALLOW_SUSPEND_RESUME;

    if (http == NULL)
        return NULL;
    http->cfg = cfg;
    http->mb = mb;
    http->dashboards = dashboards;
    http->auth = auth;
    pthread_mutex_init(&http->readers_lock, NULL);
    http->listen_fd = open_listen_socket(cfg);
    if (http->listen_fd < 0)
        goto fail;

    if (cfg->tls_cert[0] != '\0') {
        if (!read_text_file(cfg->tls_cert, &http->tls_cert) ||
            !read_text_file(cfg->tls_key, &http->tls_key)) {
            log_error(COMPONENT, "cannot read tls_cert %s or tls_key %s: check that both exist "
                      "and are readable PEM files", cfg->tls_cert, cfg->tls_key);
            goto fail;
        }
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            log_error(COMPONENT, "this libmicrohttpd has no TLS support; remove tls_cert");
            goto fail;
        }
        flags |= MHD_USE_TLS;
    } else {
        /* No shutdown() on close: take_upgraded_socket keeps the socket. */
        flags |= MHD_USE_TURBO;
    }

    struct MHD_OptionItem options[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL},
        {MHD_OPTION_LISTEN_SOCKET, http->listen_fd, NULL},
        /* WebSocket clients over max_connections get close 1013 from the loop;
         * the headroom lets them, and plain HTTP requests, in to hear it. */
        {MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections + HTTP_CONNECTION_HEADROOM, NULL},
        /* Slow or silent HTTP clients (slowloris) are cut off after this. */
        {MHD_OPTION_CONNECTION_TIMEOUT, HTTP_TIMEOUT_S, NULL},
        /* Bounds the request line and headers: larger ones get 431. */
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_MEMORY_LIMIT, NULL},
        {MHD_OPTION_THREAD_POOL_SIZE, HTTP_THREADS, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL},
        {http->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, http->tls_cert},
        {http->tls_key ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, http->tls_key},
        {MHD_OPTION_END, 0, NULL},
    };
    http->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, http, MHD_OPTION_ARRAY,
                                    options, MHD_OPTION_END);
    if (http->daemon == NULL) {
        log_error(COMPONENT, "cannot start the HTTP server on %s", cfg->listen);
        goto fail;
    }
    /* libmicrohttpd owns the listening socket from here on. */
    http->listen_fd = -1;
    log_info(COMPONENT, "listening on %s://%s (WebSocket at /ws)", http->tls_cert ? "https" : "http",
             cfg->listen);
    return http;

fail:
    if (http->listen_fd >= 0)
        close(http->listen_fd);
    free(http->tls_cert);
    free(http->tls_key);
    free(http);
    return NULL;
}

void http_quiesce(struct http *http)
{
    MHD_socket fd;

    if (http == NULL || http->daemon == NULL)
        return;
    fd = MHD_quiesce_daemon(http->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void http_destroy(struct http *http)
{
    if (http == NULL)
        return;
    if (http->daemon != NULL)
        MHD_stop_daemon(http->daemon);
    if (http->listen_fd >= 0)
        close(http->listen_fd);
    while (http->reader_count > 0)
        store_reader_close(http->readers[--http->reader_count]);
    free(http->tls_cert);
    if (http->tls_key != NULL)
        explicit_bzero(http->tls_key, strlen(http->tls_key));
    free(http->tls_key);
    pthread_mutex_destroy(&http->readers_lock);
    free(http);
}
