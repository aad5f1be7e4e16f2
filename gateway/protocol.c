#include "protocol.h"
#include "buf.h"
#include "utf8.h"
#include "ws.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *protocol_error_code_name(enum protocol_error_code code)
{
    switch (code) {
    case PROTOCOL_INVALID:
        return "invalid";
    case PROTOCOL_FORBIDDEN:
        return "forbidden";
    case PROTOCOL_NOT_FOUND:
        return "not_found";
    case PROTOCOL_LIMIT:
        return "limit";
    case PROTOCOL_UNAVAILABLE:
        return "unavailable";
    }
    return "invalid";
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

static bool parse_history(json_t *history, struct history_request *out, char *err,
                          size_t err_size)
{
    json_t *last = json_object_get(history, "last");
    json_t *since_ms = json_object_get(history, "since_ms");
    json_t *since = json_object_get(history, "since");
    int given = (last != NULL) + (since_ms != NULL) + (since != NULL);

    if (!json_is_object(history))
        FAIL("'history' must be an object such as {\"last\":100}");
    if (given != 1 || json_object_size(history) != 1)
        FAIL("'history' must have exactly one of 'last', 'since_ms' or 'since'");

    if (last != NULL) {
        if (!json_is_integer(last) || json_integer_value(last) < 0)
            FAIL("'history.last' must be an integer >= 0");
        out->kind = HISTORY_LAST;
        out->last = (uint64_t)json_integer_value(last);
        return true;
    }
    if (since_ms != NULL) {
        if (!json_is_integer(since_ms) || json_integer_value(since_ms) < 0)
            FAIL("'history.since_ms' must be an integer >= 0 (ms since the Unix epoch)");
        out->kind = HISTORY_SINCE_MS;
        out->since_ms = json_integer_value(since_ms);
        return true;
    }

    json_t *epoch = json_object_get(since, "epoch");
    json_t *seq = json_object_get(since, "seq");
    if (!json_is_object(since) || !json_is_string(epoch) || !json_is_integer(seq) ||
        json_integer_value(seq) < 0 || json_object_size(since) != 2)
        FAIL("'history.since' must be {\"epoch\":\"<epoch>\",\"seq\":<integer >= 0>}");
    if (json_string_length(epoch) >= sizeof(out->epoch))
        FAIL("'history.since.epoch' is longer than %zu characters", sizeof(out->epoch) - 1);
    out->kind = HISTORY_SINCE_SEQ;
    snprintf(out->epoch, sizeof(out->epoch), "%s", json_string_value(epoch));
    out->seq = (uint64_t)json_integer_value(seq);
    return true;
}

static bool parse_filter(json_t *root, struct request *req, char *err, size_t err_size)
{
    json_t *filter = json_object_get(root, "filter");

    if (filter == NULL)
        FAIL("'filter' is missing: give an MQTT topic filter such as \"sensors/+/temp\"");
    if (!json_is_string(filter))
        FAIL("'filter' must be a string");
    req->filter = json_string_value(filter);
    req->filter_len = json_string_length(filter);
    return true;
}

static bool decode_base64(const char *text, size_t len, struct request *req)
{
    size_t cap = 3 * (len / 4) + 3;
    int n;
    size_t pad = 0;

    if (len % 4 != 0)
        return false;
    req->payload = malloc(cap ? cap : 1);
    if (req->payload == NULL)
        return false;
    if (len == 0) {
        req->payload_len = 0;
        return true;
    }
    n = EVP_DecodeBlock(req->payload, (const unsigned char *)text, (int)len);
    if (n < 0)
        return false;
    /* EVP_DecodeBlock counts padding as zero bytes; drop them. */
    if (text[len - 1] == '=')
        pad++;
    if (text[len - 2] == '=')
        pad++;
    req->payload_len = (size_t)n - pad;
    return true;
}

static bool parse_publish(json_t *root, struct request *req, char *err, size_t err_size)
{
    json_t *topic = json_object_get(root, "topic");
    json_t *payload = req->raw_payload_value ? req->raw_payload_value
                                             : json_object_get(root, "payload");
    json_t *qos = json_object_get(root, "qos");
    json_t *retain = json_object_get(root, "retain");
    json_t *encoding = json_object_get(root, "encoding");

    if (!json_is_string(topic))
        FAIL("'topic' must be a string naming the MQTT topic to publish to");
    req->topic = json_string_value(topic);
    req->topic_len = json_string_length(topic);

    if (payload == NULL)
        FAIL("'payload' is missing: give any JSON value");

    req->qos = 1;
    if (qos != NULL) {
        if (!json_is_integer(qos) || json_integer_value(qos) < 0 || json_integer_value(qos) > 1)
            FAIL("'qos' must be 0 or 1");
        req->qos = (int)json_integer_value(qos);
    }
    if (retain != NULL) {
        if (!json_is_boolean(retain))
            FAIL("'retain' must be true or false");
        req->retain = json_is_true(retain);
    }

    if (encoding != NULL) {
        if (!json_is_string(encoding) || strcmp(json_string_value(encoding), "base64") != 0)
            FAIL("'encoding' must be \"base64\" when given");
        if (!json_is_string(payload))
            FAIL("'payload' must be a base64 string when 'encoding' is \"base64\"");
        if (!decode_base64(json_string_value(payload), json_string_length(payload), req))
            FAIL("'payload' is not valid base64");
        return true;
    }

    /* A non-string value goes out exactly as the client wrote it. */
    if (req->raw_payload != NULL && req->raw_payload[0] != '"') {
        req->payload = malloc(req->raw_payload_len);
        if (req->payload == NULL)
            FAIL("out of memory");
        memcpy(req->payload, req->raw_payload, req->raw_payload_len);
        req->payload_len = req->raw_payload_len;
        return true;
    }

    if (json_is_string(payload)) {
        size_t len = json_string_length(payload);
        req->payload = malloc(len ? len : 1);
        if (req->payload == NULL)
            FAIL("out of memory");
        memcpy(req->payload, json_string_value(payload), len);
        req->payload_len = len;
        return true;
    }

    char *text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        FAIL("'payload' could not be encoded");
    req->payload = (uint8_t *)text;
    req->payload_len = strlen(text);
    return true;
}

static bool parse_type(const char *type, struct request *req, char *err, size_t err_size)
{
    static const struct {
        const char *name;
        enum request_type type;
    } types[] = {
        {"subscribe", REQUEST_SUBSCRIBE},
        {"unsubscribe", REQUEST_UNSUBSCRIBE},
        {"publish", REQUEST_PUBLISH},
        {"ping", REQUEST_PING},
        {"auth", REQUEST_AUTH},
    };

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(type, types[i].name) == 0) {
            req->type = types[i].type;
            return true;
        }
    }
    FAIL("unknown message type '%.*s': expected subscribe, unsubscribe, publish, ping or auth",
         utf8_prefix_len(type, 64), type);
}

/*
 * Parses the message with jansson. The "payload" member, which may hold
 * numbers beyond what jansson decodes (integers past 64 bits), is cut out
 * first and kept as raw text; jansson parses null in its place. A string
 * payload is decoded on its own, so its escapes are resolved.
 */
static bool parse_root(const uint8_t *data, size_t len, struct request *req, json_error_t *jerr)
{
    size_t start;
    size_t end;
    struct buf copy;

    if (!payload_find_member(data, len, "payload", &start, &end)) {
        req->root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, jerr);
        return req->root != NULL;
    }

    buf_init(&copy);
    buf_append(&copy, data, start);
    buf_append_str(&copy, "null");
    buf_append(&copy, data + end, len - end);
    if (copy.failed) {
        buf_cleanup(&copy);
        snprintf(jerr->text, sizeof(jerr->text), "out of memory");
        return false;
    }
    req->root = json_loadb((const char *)copy.data, copy.len, JSON_REJECT_DUPLICATES, jerr);
    buf_cleanup(&copy);
    if (req->root == NULL)
        return false;

    req->raw_payload = (const char *)data + start;
    req->raw_payload_len = end - start;
    if (data[start] == '"') {
        req->raw_payload_value =
            json_loadb(req->raw_payload, req->raw_payload_len, JSON_DECODE_ANY, jerr);
        if (req->raw_payload_value == NULL)
            return false;
    } else {
        req->raw_payload_value = json_null();
    }
    return true;
}

bool protocol_parse_request(const uint8_t *data, size_t len, struct request *req, char *err,
                            size_t err_size)
{
    json_error_t jerr;
    json_t *type;
    json_t *id;

    memset(req, 0, sizeof(*req));
    if (!parse_root(data, len, req, &jerr))
    if (req->root == NULL)
        FAIL("message is not valid JSON: %s at line %d, column %d", jerr.text, jerr.line,
             jerr.column);
    if (!json_is_object(req->root))
        FAIL("message must be a JSON object with a 'type'");

    id = json_object_get(req->root, "id");
    if (id != NULL) {
        if (!json_is_integer(id) && !json_is_string(id))
            FAIL("'id' must be an integer or a string");
        req->id = id;
    }

    type = json_object_get(req->root, "type");
    if (!json_is_string(type))
        FAIL("'type' is missing: expected subscribe, unsubscribe, publish, ping or auth");
    if (!parse_type(json_string_value(type), req, err, err_size))
        return false;

    switch (req->type) {
    case REQUEST_SUBSCRIBE: {
        json_t *history = json_object_get(req->root, "history");
        json_t *max_rate = json_object_get(req->root, "max_rate");
        if (!parse_filter(req->root, req, err, err_size))
            return false;
        if (max_rate != NULL) {
            if (!json_is_number(max_rate) || json_number_value(max_rate) <= 0 ||
                json_number_value(max_rate) > PROTOCOL_MAX_RATE)
                FAIL("'max_rate' must be a number above 0 and at most %d (messages per second "
                     "per topic)", PROTOCOL_MAX_RATE);
            req->max_rate = json_number_value(max_rate);
        }
        if (history != NULL && !json_is_null(history) &&
            !parse_history(history, &req->history, err, err_size))
            return false;
        return true;
    }
    case REQUEST_UNSUBSCRIBE:
        return parse_filter(req->root, req, err, err_size);
    case REQUEST_PUBLISH:
        return parse_publish(req->root, req, err, err_size);
    case REQUEST_PING:
        return true;
    case REQUEST_AUTH: {
        json_t *token = json_object_get(req->root, "token");
        if (!json_is_string(token) || json_string_length(token) == 0)
            FAIL("'token' must be a non-empty string: a JWT or an API key");
        req->token = json_string_value(token);
        return true;
    }
    }
    return true;
}

void request_cleanup(struct request *req)
{
    free(req->payload);
    json_decref(req->raw_payload_value);
    json_decref(req->root);
    memset(req, 0, sizeof(*req));
}

struct frame *protocol_encode_message(const struct msg *m, bool history)
{
    struct buf b;

    buf_init(&b);
    ws_frame_begin(&b);
    buf_append_str(&b, "{\"type\":\"message\",\"topic\":");
    buf_append_json_string(&b, m->topic, m->topic_len);
    buf_append_str(&b, ",\"seq\":");
    buf_append_u64(&b, m->seq);
    buf_append_str(&b, ",\"ts\":");
    buf_append_i64(&b, m->ts_ms);
    buf_append_str(&b, ",\"qos\":");
    buf_append_u64(&b, m->qos);
    buf_append_str(&b, m->retain ? ",\"retain\":true" : ",\"retain\":false");
    if (history)
        buf_append_str(&b, ",\"history\":true");
    buf_append_str(&b, ",\"encoding\":\"");
    buf_append_str(&b, payload_encoding_name(m->encoding));
    buf_append_str(&b, "\",\"payload\":");

    switch (m->encoding) {
    case PAYLOAD_JSON:
        buf_append(&b, m->payload, m->payload_len);
        break;
    case PAYLOAD_UTF8:
        buf_append_json_string(&b, (const char *)m->payload, m->payload_len);
        break;
    case PAYLOAD_BASE64:
        buf_append(&b, "\"", 1);
        buf_append_base64(&b, m->payload, m->payload_len);
        buf_append(&b, "\"", 1);
        break;
    }
    buf_append(&b, "}", 1);

    return ws_frame_finish(&b, WS_OPCODE_TEXT);
}

static int dump_to_buf(const char *data, size_t size, void *arg)
{
    struct buf *b = arg;

    buf_append(b, data, size);
    return b->failed ? -1 : 0;
}

struct frame *protocol_encode_json(json_t *obj)
{
    struct buf b;

    buf_init(&b);
    ws_frame_begin(&b);
    if (json_dump_callback(obj, dump_to_buf, &b, JSON_COMPACT) != 0) {
        buf_cleanup(&b);
        return NULL;
    }
    return ws_frame_finish(&b, WS_OPCODE_TEXT);
}

struct frame *protocol_encode_error(json_t *id, enum protocol_error_code code,
                                    const char *message)
{
    json_t *obj = json_pack("{s:s, s:s, s:s}", "type", "error", "code",
                            protocol_error_code_name(code), "message", message);
    struct frame *f;

    if (obj == NULL)
        return NULL;
    if (id != NULL)
        json_object_set(obj, "id", id);
    f = protocol_encode_json(obj);
    json_decref(obj);
    return f;
}
