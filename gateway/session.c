#include "session.h"
#include "gateway.h"
#include "clock.h"
#include "conflate.h"
#include "history.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "protocol.h"
#include "sse.h"
#include "topic.h"
#include "utf8.h"
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPONENT "session"

static void on_text(struct ws_conn *conn, const uint8_t *data, size_t len, void *user);
static void handle_subscribe(struct session *s, struct request *req);
static void set_rate(struct session *s, struct session_filter *f, double max_rate);

/* ---- the transport: a WebSocket connection or a Server-Sent Events stream ---- */

static bool out_closing(const struct session *s)
{
    return s->ws ? ws_conn_is_closing(s->ws) : sse_conn_is_closing(s->sse);
}

/* Queues @f; @m, when given, is the message it carries (for the SSE id).
 * Exempt frames do not count against the send queue limit. Returns false
 * when the limit was passed and the client is being closed. */
static bool out_send(struct session *s, struct frame *f, const struct msg *m, bool exempt)
{
    char id[SEQUENCER_EPOCH_LEN + 24];
    const uint8_t *json;
    size_t len;

    if (s->ws != NULL) {
        if (exempt) {
            ws_conn_send_exempt(s->ws, f);
            return true;
        }
        return ws_conn_send(s->ws, f);
    }
    json = ws_frame_payload(f, &len);
    if (m != NULL)
        snprintf(id, sizeof(id), "%s:%llu", s->gw->epoch, (unsigned long long)m->seq);
    return sse_conn_send(s->sse, json, len, m ? id : NULL, exempt);
}

static size_t out_queued_bytes(const struct session *s)
{
    return s->ws ? ws_conn_queued_bytes(s->ws) : sse_conn_queued_bytes(s->sse);
}

static void out_close(struct session *s, uint16_t code, const char *reason)
{
    if (s->ws != NULL)
        ws_conn_close(s->ws, code, reason, true);
    else
        sse_conn_close(s->sse, reason);
}

void session_flush(struct session *s)
{
    if (s->ws != NULL)
        ws_conn_flush(s->ws);
    else
        sse_conn_flush(s->sse);
}

void session_tick(struct session *s, int64_t now_ms)
{
    if (s->ws != NULL)
        ws_conn_tick(s->ws, now_ms);
    else
        sse_conn_tick(s->sse, now_ms);
}

void session_close(struct session *s, uint16_t code, const char *reason)
{
    if (s->ws != NULL)
        ws_conn_close(s->ws, code, reason, false);
    else
        sse_conn_close(s->sse, reason);
    session_mark_dirty(s);
}

bool session_is_done(const struct session *s)
{
    return s->ws ? ws_conn_is_done(s->ws) : sse_conn_is_done(s->sse);
}

const char *session_end_reason(const struct session *s)
{
    return s->ws ? ws_conn_end_reason(s->ws) : sse_conn_end_reason(s->sse);
}

static void send_frame(struct session *s, struct frame *f)
{
    if (f == NULL) {
        log_error(COMPONENT, "session %llu: out of memory encoding a reply",
                  (unsigned long long)s->id);
        return;
    }
    /* Replies are small and bounded by the requests: they never count as a
     * slow client. */
    out_send(s, f, NULL, true);
    frame_unref(f);
    session_mark_dirty(s);
}

static void send_json(struct session *s, json_t *obj)
{
    if (obj == NULL)
        return;
    send_frame(s, protocol_encode_json(obj));
    json_decref(obj);
}

static void send_error(struct session *s, json_t *id, enum protocol_error_code code,
                       const char *message)
{
    metrics_add(&metrics.client_errors, 1);
    log_debug(COMPONENT, "session %llu (%s): %s error: %s", (unsigned long long)s->id, s->peer,
              protocol_error_code_name(code), message);
    send_frame(s, protocol_encode_error(id, code, message));
}

/* Builds a reply object of @type that echoes the request id. */
static json_t *reply_new(const char *type, json_t *id)
{
    json_t *obj = json_pack("{s:s}", "type", type);

    if (obj != NULL && id != NULL)
        json_object_set(obj, "id", id);
    return obj;
}

static void send_welcome(struct session *s)
{
    const struct gateway *gw = s->gw;
    json_t *obj = json_pack("{s:s, s:s, s:I, s:s, s:s, s:I, s:I}", "type", "welcome", "epoch",
                            gw->epoch, "seq", (json_int_t)gw->last_seq,
                            "server", "tidegate", "version", TIDEGATE_VERSION,
                            "max_message_bytes", (json_int_t)gw->cfg->max_message_bytes,
                            "session", (json_int_t)s->id);
    send_json(s, obj);
}

static void adopt_principal(struct session *s, struct principal *principal)
{
    if (principal == NULL)
        return;
    principal_cleanup(&s->principal);
    s->principal = *principal; /* takes over its lists */
    memset(principal, 0, sizeof(*principal));
    s->authenticated = true;
    s->auth_deadline_ms = 0;
}

struct session *session_create(struct gateway *gw, int fd, struct MHD_UpgradeResponseHandle *urh,
                               const char *extra, size_t extra_len, const char *peer,
                               struct principal *principal)
{
    static const struct ws_callbacks callbacks = {.on_text = on_text};
    struct session *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    adopt_principal(s, principal);
    if (!s->authenticated)
        s->auth_deadline_ms = clock_monotonic_ms() + SESSION_AUTH_TIMEOUT_MS;
    s->publish_tokens = 2.0 * gw->cfg->publish_rate;
    s->publish_refill_ms = clock_monotonic_ms();
    s->gw = gw;
    s->id = ++gw->next_session_id;
    snprintf(s->peer, sizeof(s->peer), "%s", peer);
    s->ws = ws_conn_create(fd, urh, extra, extra_len, &gw->ws_cfg, &callbacks, s);
    if (s->ws == NULL) {
        free(s);
        return NULL;
    }
    send_welcome(s);
    return s;
}

struct session *session_create_sse(struct gateway *gw, struct sse_conn *sse, const char *peer,
                                   const char *filter, const struct history_request *history,
                                   struct principal *principal)
{
    struct session *s = calloc(1, sizeof(*s));
    struct request req;

    if (s == NULL)
        return NULL;
    adopt_principal(s, principal);
    s->gw = gw;
    s->id = ++gw->next_session_id;
    s->sse = sse;
    snprintf(s->peer, sizeof(s->peer), "%s", peer);
    send_welcome(s);

    memset(&req, 0, sizeof(req));
    req.type = REQUEST_SUBSCRIBE;
    req.filter = filter;
    req.filter_len = strlen(filter);
    req.history = *history;
    handle_subscribe(s, &req);
    return s;
}

void session_destroy(struct session *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->filter_count; i++) {
        hub_unsubscribe(s->gw->hub, s->filters[i].sub);
        free(s->filters[i].filter);
    }
    metrics_gauge_add(&metrics.subscriptions, -(int64_t)s->filter_count);
    free(s->filters);
    if (s->conflate_pending)
        s->gw->conflating_sessions--;
    conflate_destroy(s->conflate);
    for (size_t i = 0; i < s->held_count; i++)
        msg_unref(s->held[i]);
    free(s->held);
    ws_conn_destroy(s->ws);
    sse_conn_destroy(s->sse);
    principal_cleanup(&s->principal);
    free(s);
}

void session_mark_dirty(struct session *s)
{
    if (s->dirty)
        return;
    s->dirty = true;
    s->dirty_next = s->gw->dirty;
    s->gw->dirty = s;
}

void session_check_done(struct session *s)
{
    if (s->reaping || !session_is_done(s))
        return;
    s->reaping = true;
    s->reap_next = s->gw->reap;
    s->gw->reap = s;
}

static void close_slow(struct session *s, size_t queued)
{
    metrics_add(&metrics.slow_client_disconnects, 1);
    log_warn(COMPONENT, "session %llu (%s): closing a slow client: %zu bytes would be queued, limit %d",
             (unsigned long long)s->id, s->peer, queued, s->gw->cfg->send_queue_bytes);
}

static void send_live(struct session *s, struct msg *m)
{
    if (m->live_frame == NULL) {
        /* Encoded once, on the first match, and shared by every client. */
        m->live_frame = protocol_encode_message(m, false);
        if (m->live_frame == NULL)
            return;
    }
    if (out_closing(s))
        return;
    size_t queued = out_queued_bytes(s);
    if (!out_send(s, m->live_frame, m, false))
        close_slow(s, queued + m->live_frame->len);
    else
        metrics_add(&metrics.messages_delivered, 1);
    session_mark_dirty(s);
}

/* Returns the max_rate that applies to @topic: 0 (every message) when any
 * matching filter has none, else the highest of the matching filters. */
static double rate_for(const struct session *s, const char *topic)
{
    double rate = 0;

    for (size_t i = 0; i < s->filter_count; i++) {
        if (!topic_matches(s->filters[i].filter, topic))
            continue;
        if (s->filters[i].max_rate <= 0)
            return 0;
        if (s->filters[i].max_rate > rate)
            rate = s->filters[i].max_rate;
    }
    return rate;
}

static void send_conflated(void *arg, struct msg *m)
{
    send_live(arg, m);
}

/* Sends @m now, or leaves it to conflation when its filters set a rate. */
static void deliver_live(struct session *s, struct msg *m)
{
    double rate = s->rate_limited_filters > 0 ? rate_for(s, m->topic) : 0;

    if (rate <= 0 || s->conflate == NULL ||
        conflate_offer(s->conflate, m, rate, clock_monotonic_ms())) {
        send_live(s, m);
        return;
    }
    if (!s->conflate_pending) {
        s->conflate_pending = true;
        s->gw->conflating_sessions++;
    }
}

bool session_flush_conflated(struct session *s, int64_t now_ms)
{
    if (!s->conflate_pending)
        return false;
    if (!conflate_flush(s->conflate, now_ms, send_conflated, s)) {
        s->conflate_pending = false;
        s->gw->conflating_sessions--;
    }
    return s->conflate_pending;
}

/* Keeps @m until the pending history is sent. Held bytes count against the
 * same limit as the send queue. */
static void hold(struct session *s, struct msg *m)
{
    size_t cost = m->topic_len + m->payload_len + 64;

    if (out_closing(s))
        return;
    if (s->held_bytes + cost > (size_t)s->gw->cfg->send_queue_bytes) {
        out_close(s, WS_CLOSE_POLICY_VIOLATION,
                  "client too slow: live messages piled up behind its history");
        close_slow(s, s->held_bytes);
        session_mark_dirty(s);
        return;
    }
    if (s->held_count == s->held_cap) {
        size_t cap = s->held_cap ? s->held_cap * 2 : 64;
        struct msg **held = realloc(s->held, cap * sizeof(*held));
        if (held == NULL)
            return;
        s->held = held;
        s->held_cap = cap;
    }
    s->held[s->held_count++] = msg_ref(m);
    s->held_bytes += cost;
}

void session_deliver(struct hub_subscriber *subscriber, void *arg)
{
    struct session *s = (struct session *)subscriber;
    struct msg *m = arg;

    if (s->pending_history > 0)
        hold(s, m);
    else
        deliver_live(s, m);
}

static void release_held(struct session *s)
{
    for (size_t i = 0; i < s->held_count; i++) {
        deliver_live(s, s->held[i]);
        msg_unref(s->held[i]);
    }
    s->held_count = 0;
    s->held_bytes = 0;
}

static void send_subscribed(struct session *s, json_t *id, const char *filter, bool recovered,
                            const struct store_history *h)
{
    json_t *reply = reply_new("subscribed", id);

    json_object_set_new(reply, "filter", json_string(filter));
    json_object_set_new(reply, "recovered", json_boolean(recovered));
    if (h != NULL) {
        json_object_set_new(reply, "epoch", json_string(h->epoch));
        json_object_set_new(reply, "history_count", json_integer((json_int_t)h->count));
        json_object_set_new(reply, "truncated", json_boolean(h->truncated));
        if (h->count > 0)
            json_object_set_new(reply, "first_seq", json_integer((json_int_t)h->first_seq));
    }
    send_json(s, reply);
}

void session_history_done(struct session *s, struct mail *mail)
{
    struct store_history *h = &mail->u.history.result;
    json_t *id = mail->u.history.request_id_json
                     ? json_loads(mail->u.history.request_id_json, JSON_DECODE_ANY, NULL)
                     : NULL;

    if (mail->u.history.failed) {
        /* The subscription is kept; only its history is missing. */
        send_subscribed(s, id, mail->u.history.filter, false, h);
    } else {
        send_subscribed(s, id, mail->u.history.filter, h->recovered, h);
        for (size_t i = 0; i < h->count && !out_closing(s); i++) {
            struct frame *f = protocol_encode_message(h->msgs[i], true);
            if (f == NULL)
                break;
            out_send(s, f, h->msgs[i], true);
            frame_unref(f);
        }
        metrics_add(&metrics.history_messages, h->count);
        log_debug(COMPONENT, "session %llu (%s): sent %zu history message(s) for '%s'%s",
                  (unsigned long long)s->id, s->peer, h->count, mail->u.history.filter,
                  h->recovered ? "" : " (not recovered)");
    }
    json_decref(id);
    session_mark_dirty(s);

    if (s->pending_history > 0 && --s->pending_history == 0)
        release_held(s);
}

static struct session_filter *find_filter(struct session *s, const char *filter)
{
    for (size_t i = 0; i < s->filter_count; i++) {
        if (strcmp(s->filters[i].filter, filter) == 0)
            return &s->filters[i];
    }
    return NULL;
}

static void set_rate(struct session *s, struct session_filter *f, double max_rate)
{
    if (f->max_rate > 0)
        s->rate_limited_filters--;
    f->max_rate = max_rate;
    if (max_rate > 0)
        s->rate_limited_filters++;
}

static bool add_filter(struct session *s, const char *filter)
{
    struct session_filter *f;

    if (s->filter_count == s->filter_cap) {
        size_t cap = s->filter_cap ? s->filter_cap * 2 : 1; /* most clients have one */
        struct session_filter *filters = realloc(s->filters, cap * sizeof(*filters));
        if (filters == NULL)
            return false;
        s->filters = filters;
        s->filter_cap = cap;
    }
    f = &s->filters[s->filter_count];
    f->max_rate = 0;
    f->filter = strdup(filter);
    if (f->filter == NULL)
        return false;
    f->sub = hub_subscribe(s->gw->hub, &s->subscriber, filter);
    if (f->sub == NULL) {
        free(f->filter);
        return false;
    }
    s->filter_count++;
    metrics_gauge_add(&metrics.subscriptions, 1);
    return true;
}

static void handle_subscribe(struct session *s, struct request *req)
{
    const char *why = topic_check_filter(req->filter, req->filter_len);
    char message[256];
    char *id_json;

    if (why != NULL) {
        snprintf(message, sizeof(message), "invalid filter: the filter %s", why);
        send_error(s, req->id, PROTOCOL_INVALID, message);
        return;
    }

    if (!principal_may_subscribe(&s->principal, req->filter)) {
        metrics_add(&metrics.forbidden, 1);
        snprintf(message, sizeof(message), "'%.60s' may not subscribe to '%.*s'",
                 principal_name(&s->principal), utf8_prefix_len(req->filter, 100), req->filter);
        send_error(s, req->id, PROTOCOL_FORBIDDEN, message);
        return;
    }
    if (find_filter(s, req->filter) == NULL &&
        s->filter_count >= (size_t)s->gw->cfg->max_subscriptions_per_client) {
        metrics_add(&metrics.limit_rejections, 1);
        snprintf(message, sizeof(message),
                 "this client holds %zu subscriptions, the most allowed "
                 "(max_subscriptions_per_client): unsubscribe some first",
                 s->filter_count);
        send_error(s, req->id, PROTOCOL_LIMIT, message);
        return;
    }
    if (find_filter(s, req->filter) == NULL && !add_filter(s, req->filter)) {
        send_error(s, req->id, PROTOCOL_UNAVAILABLE, "out of memory; try again later");
        return;
    }
    if (req->max_rate > 0 && s->conflate == NULL)
        s->conflate = conflate_create();
    set_rate(s, find_filter(s, req->filter), s->conflate ? req->max_rate : 0);
    log_debug(COMPONENT, "session %llu (%s): subscribed to '%s'", (unsigned long long)s->id,
              s->peer, req->filter);

    if (req->history.kind == HISTORY_NONE) {
        send_subscribed(s, req->id, req->filter, true, NULL);
        return;
    }

    /* Live messages from now on wait until the history up to the last seq
     * delivered so far has been read and sent: no gap, no duplicate. */
    id_json = req->id ? json_dumps(req->id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    if (!history_submit(s->gw->history, s->id, id_json, req->filter, &req->history,
                        s->gw->last_seq)) {
        send_subscribed(s, req->id, req->filter, false, NULL);
    } else {
        s->pending_history++;
    }
    free(id_json);
}

static void handle_unsubscribe(struct session *s, struct request *req)
{
    struct session_filter *f = find_filter(s, req->filter);
    json_t *reply;

    if (f == NULL) {
        char message[160];
        snprintf(message, sizeof(message), "not subscribed to '%.*s'",
                 utf8_prefix_len(req->filter, 100), req->filter);
        send_error(s, req->id, PROTOCOL_NOT_FOUND, message);
        return;
    }

    hub_unsubscribe(s->gw->hub, f->sub);
    set_rate(s, f, 0);
    free(f->filter);
    *f = s->filters[--s->filter_count];
    metrics_gauge_add(&metrics.subscriptions, -1);

    reply = reply_new("unsubscribed", req->id);
    json_object_set_new(reply, "filter", json_string(req->filter));
    send_json(s, reply);
}

/* A token bucket: publish_rate tokens per second, up to twice that stored. */
static bool take_publish_token(struct session *s)
{
    int64_t now = clock_monotonic_ms();
    double rate = s->gw->cfg->publish_rate;

    s->publish_tokens += (double)(now - s->publish_refill_ms) * rate / 1000.0;
    if (s->publish_tokens > 2.0 * rate)
        s->publish_tokens = 2.0 * rate;
    s->publish_refill_ms = now;
    if (s->publish_tokens < 1.0)
        return false;
    s->publish_tokens -= 1.0;
    return true;
}

/* Authenticates with the token of an auth message, replacing who the
 * client is; subscriptions the new principal may not hold are dropped. */
static void handle_auth(struct session *s, struct request *req)
{
    struct principal next;
    char err[256];
    json_t *reply;

    if (!auth_authenticate(s->gw->auth, req->token, clock_realtime_ms(), &next, err,
                           sizeof(err))) {
        metrics_add(&metrics.auth_failures, 1);
        log_limited(&s->gw->auth_rl, LOG_WARN, COMPONENT,
                    "session %llu (%s): rejected a credential: %s", (unsigned long long)s->id,
                    s->peer, err);
        send_error(s, req->id, PROTOCOL_FORBIDDEN, err);
        return;
    }
    adopt_principal(s, &next);
    log_info(COMPONENT, "session %llu (%s): authenticated as '%s'", (unsigned long long)s->id,
             s->peer, principal_name(&s->principal));

    for (size_t i = s->filter_count; i > 0; i--) {
        struct session_filter *f = &s->filters[i - 1];
        char message[256];
        if (principal_may_subscribe(&s->principal, f->filter))
            continue;
        snprintf(message, sizeof(message), "the new token does not allow '%.*s': unsubscribed",
                 utf8_prefix_len(f->filter, 100), f->filter);
        send_error(s, NULL, PROTOCOL_FORBIDDEN, message);
        hub_unsubscribe(s->gw->hub, f->sub);
        set_rate(s, f, 0);
        free(f->filter);
        *f = s->filters[--s->filter_count];
        metrics_gauge_add(&metrics.subscriptions, -1);
    }

    reply = reply_new("authenticated", req->id);
    json_object_set_new(reply, "sub", json_string(principal_name(&s->principal)));
    if (s->principal.expires_ms > 0)
        json_object_set_new(reply, "expires_ms", json_integer(s->principal.expires_ms));
    send_json(s, reply);
}

bool session_check_token(struct session *s, int64_t now_ms, int64_t monotonic_ms)
{
    if (!s->authenticated && s->auth_deadline_ms > 0 && monotonic_ms >= s->auth_deadline_ms) {
        session_close(s, WS_CLOSE_POLICY_VIOLATION,
                      "authentication required: send an auth message first");
        return false;
    }
    if (s->authenticated && s->principal.expires_ms > 0 && now_ms >= s->principal.expires_ms) {
        log_info(COMPONENT, "session %llu (%s): the token of '%s' expired", (unsigned long long)s->id,
                 s->peer, principal_name(&s->principal));
        s->principal.expires_ms = 0;
        session_close(s, SESSION_CLOSE_TOKEN_EXPIRED,
                      "token expired: get a new token and reconnect");
        return false;
    }
    return true;
}

static void handle_publish(struct session *s, struct request *req)
{
    const char *why = topic_check_name(req->topic, req->topic_len);
    char message[256];
    char *id_json = NULL;
    enum ingest_publish_result result;

    if (why != NULL) {
        snprintf(message, sizeof(message), "invalid topic: the topic name %s", why);
        send_error(s, req->id, PROTOCOL_INVALID, message);
        return;
    }
    if (!principal_may_publish(&s->principal, req->topic)) {
        metrics_add(&metrics.forbidden, 1);
        snprintf(message, sizeof(message),
                 "publishing to '%.*s' is not allowed: the topic matches none of the publish "
                 "filters of '%.60s'",
                 utf8_prefix_len(req->topic, 100), req->topic, principal_name(&s->principal));
        send_error(s, req->id, PROTOCOL_FORBIDDEN, message);
        return;
    }
    if (!take_publish_token(s)) {
        metrics_add(&metrics.limit_rejections, 1);
        snprintf(message, sizeof(message),
                 "publish rate over %d per second (publish_rate): slow down and retry",
                 s->gw->cfg->publish_rate);
        send_error(s, req->id, PROTOCOL_LIMIT, message);
        return;
    }

    if (req->id != NULL)
        id_json = json_dumps(req->id, JSON_ENCODE_ANY | JSON_COMPACT);
    result = ingest_publish(s->gw->ingest, req->topic, req->payload, req->payload_len, req->qos,
                            req->retain, s->id, id_json);
    free(id_json);

    if (result == INGEST_PUBLISH_UNAVAILABLE) {
        send_error(s, req->id, PROTOCOL_UNAVAILABLE,
                   "the MQTT broker is not connected; try again later");
        return;
    }
    if (result != INGEST_PUBLISH_QUEUED) {
        send_error(s, req->id, PROTOCOL_UNAVAILABLE, "the publish could not be queued");
        return;
    }
    metrics_add(&metrics.publish_requests, 1);
    log_debug(COMPONENT, "session %llu (%s): publishing %zu bytes to '%s'",
              (unsigned long long)s->id, s->peer, req->payload_len, req->topic);
}

void session_publish_done(struct session *s, const char *request_id_json, bool ok,
                          const char *error)
{
    json_t *id = request_id_json ? json_loads(request_id_json, JSON_DECODE_ANY, NULL) : NULL;

    if (ok) {
        send_json(s, reply_new("published", id));
    } else {
        char message[256];
        snprintf(message, sizeof(message), "the broker did not accept the publish: %s",
                 error ? error : "unknown error");
        send_error(s, id, PROTOCOL_UNAVAILABLE, message);
    }
    json_decref(id);
}

static void on_text(struct ws_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct session *s = user;
    struct request req;
    char err[256];

    if (!protocol_parse_request(data, len, &req, err, sizeof(err))) {
        send_error(s, req.id, PROTOCOL_INVALID, err);
        request_cleanup(&req);
        return;
    }

    if (!s->authenticated && req.type != REQUEST_AUTH && req.type != REQUEST_PING) {
        send_error(s, req.id, PROTOCOL_FORBIDDEN,
                   "authentication required: send {\"type\":\"auth\",\"token\":\"...\"} "
                   "first, or connect with ?access_token=");
        request_cleanup(&req);
        return;
    }

    switch (req.type) {
    case REQUEST_AUTH:
        handle_auth(s, &req);
        break;
    case REQUEST_SUBSCRIBE:
        handle_subscribe(s, &req);
        break;
    case REQUEST_UNSUBSCRIBE:
        handle_unsubscribe(s, &req);
        break;
    case REQUEST_PUBLISH:
        handle_publish(s, &req);
        break;
    case REQUEST_PING:
        send_json(s, reply_new("pong", req.id));
        break;
    }
    request_cleanup(&req);
}
