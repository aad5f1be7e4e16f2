#include "session.h"
#include "gateway.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "protocol.h"
#include "topic.h"
#include "utf8.h"
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPONENT "session"

static void on_text(struct ws_conn *conn, const uint8_t *data, size_t len, void *user);

static void send_frame(struct session *s, struct frame *f)
{
    if (f == NULL) {
        log_error(COMPONENT, "session %llu: out of memory encoding a reply",
                  (unsigned long long)s->id);
        return;
    }
    ws_conn_send(s->ws, f);
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
                            gw->sequencer.epoch, "seq", (json_int_t)gw->sequencer.last_seq,
                            "server", "tidegate", "version", TIDEGATE_VERSION,
                            "max_message_bytes", (json_int_t)gw->cfg->max_message_bytes,
                            "session", (json_int_t)s->id);
    send_json(s, obj);
}

struct session *session_create(struct gateway *gw, int fd, struct MHD_UpgradeResponseHandle *urh,
                               const char *extra, size_t extra_len, const char *peer)
{
    static const struct ws_callbacks callbacks = {.on_text = on_text};
    struct session *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
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
    ws_conn_destroy(s->ws);
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
    if (s->reaping || !ws_conn_is_done(s->ws))
        return;
    s->reaping = true;
    s->reap_next = s->gw->reap;
    s->gw->reap = s;
}

void session_deliver(struct hub_subscriber *subscriber, void *arg)
{
    struct session *s = (struct session *)subscriber;
    struct msg *m = arg;

    if (m->live_frame == NULL) {
        /* Encoded once, on the first match, and shared by every client. */
        m->live_frame = protocol_encode_message(m, false);
        if (m->live_frame == NULL)
            return;
    }
    if (ws_conn_is_closing(s->ws))
        return;
    if (!ws_conn_send(s->ws, m->live_frame)) {
        metrics_add(&metrics.slow_client_disconnects, 1);
        log_warn(COMPONENT, "session %llu (%s): closing a slow client: %zu bytes queued, limit %d",
                 (unsigned long long)s->id, s->peer, ws_conn_queued_bytes(s->ws),
                 s->gw->cfg->send_queue_bytes);
    } else {
        metrics_add(&metrics.messages_delivered, 1);
    }
    session_mark_dirty(s);
}

static struct session_filter *find_filter(struct session *s, const char *filter)
{
    for (size_t i = 0; i < s->filter_count; i++) {
        if (strcmp(s->filters[i].filter, filter) == 0)
            return &s->filters[i];
    }
    return NULL;
}

static bool add_filter(struct session *s, const char *filter)
{
    struct session_filter *f;

    if (s->filter_count == s->filter_cap) {
        size_t cap = s->filter_cap ? s->filter_cap * 2 : 4;
        struct session_filter *filters = realloc(s->filters, cap * sizeof(*filters));
        if (filters == NULL)
            return false;
        s->filters = filters;
        s->filter_cap = cap;
    }
    f = &s->filters[s->filter_count];
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
    json_t *reply;

    if (why != NULL) {
        snprintf(message, sizeof(message), "invalid filter: the filter %s", why);
        send_error(s, req->id, PROTOCOL_INVALID, message);
        return;
    }

    if (find_filter(s, req->filter) == NULL && !add_filter(s, req->filter)) {
        send_error(s, req->id, PROTOCOL_UNAVAILABLE, "out of memory; try again later");
        return;
    }
    log_debug(COMPONENT, "session %llu (%s): subscribed to '%s'", (unsigned long long)s->id,
              s->peer, req->filter);

    /* NOTE: no message window exists yet, so requested history cannot be
     * recovered; the reply says so with recovered:false. */
    reply = reply_new("subscribed", req->id);
    json_object_set_new(reply, "filter", json_string(req->filter));
    json_object_set_new(reply, "recovered", json_boolean(req->history.kind == HISTORY_NONE));
    send_json(s, reply);
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
    free(f->filter);
    *f = s->filters[--s->filter_count];
    metrics_gauge_add(&metrics.subscriptions, -1);

    reply = reply_new("unsubscribed", req->id);
    json_object_set_new(reply, "filter", json_string(req->filter));
    send_json(s, reply);
}

static bool publish_allowed(const struct config *cfg, const char *topic)
{
    for (size_t i = 0; i < cfg->publish_allow.count; i++) {
        if (topic_matches(cfg->publish_allow.items[i], topic))
            return true;
    }
    return false;
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
    if (!publish_allowed(s->gw->cfg, req->topic)) {
        snprintf(message, sizeof(message),
                 "publishing to '%.*s' is not allowed: the topic matches no publish_allow "
                 "filter of this gateway",
                 utf8_prefix_len(req->topic, 100), req->topic);
        send_error(s, req->id, PROTOCOL_FORBIDDEN, message);
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

    switch (req.type) {
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
