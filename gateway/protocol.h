/*
 * The WebSocket protocol: JSON text messages from clients parsed into
 * requests, and the gateway's replies and messages encoded into frames.
 * The JSON Schemas in schemas/ws/ are the contract for both directions.
 */
#ifndef TIDEGATE_PROTOCOL_H
#define TIDEGATE_PROTOCOL_H

#include "msg.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Highest max_rate a subscription may ask for, in messages per second. */
#define PROTOCOL_MAX_RATE 1000

enum request_type {
    REQUEST_SUBSCRIBE = 1,
    REQUEST_UNSUBSCRIBE = 2,
    REQUEST_PUBLISH = 3,
    REQUEST_PING = 4,
    REQUEST_AUTH = 5,
};

enum history_kind {
    HISTORY_NONE = 0,
    HISTORY_LAST = 1,     /* the last N messages */
    HISTORY_SINCE_MS = 2, /* messages with ts >= since_ms */
    HISTORY_SINCE_SEQ = 3 /* messages after (epoch, seq) */
};

struct history_request {
    enum history_kind kind;
    uint64_t last;
    int64_t since_ms;
    char epoch[65];
    uint64_t seq;
};

/*
 * A parsed client request. Strings point into @root and live as long as it;
 * raw_payload points into the parsed input and lives as long as that.
 * request_cleanup releases what the request owns.
 */
struct request {
    json_t *root;
    enum request_type type;
    json_t *id;           /* borrowed from root; NULL when absent */
    const char *filter;   /* subscribe, unsubscribe */
    size_t filter_len;
    struct history_request history;
    double max_rate;      /* subscribe: messages per second per topic; 0 for no limit */
    const char *topic;    /* publish */
    size_t topic_len;
    const char *raw_payload;    /* the "payload" value as written, borrowed from the input */
    size_t raw_payload_len;
    json_t *raw_payload_value;  /* decoded string payload, or null for other values */
    uint8_t *payload;     /* publish: the bytes to send, owned by the request */
    size_t payload_len;
    int qos;
    bool retain;
    const char *token;    /* auth; borrowed from root, never logged */
};

enum protocol_error_code {
    PROTOCOL_INVALID = 0,
    PROTOCOL_FORBIDDEN = 1,
    PROTOCOL_NOT_FOUND = 2,
    PROTOCOL_LIMIT = 3,
    PROTOCOL_UNAVAILABLE = 4,
};

const char *protocol_error_code_name(enum protocol_error_code code);

/*
 * Parses one client text message. Returns true and fills @req, or returns
 * false with a sentence in @err saying what is wrong. On failure @req->id
 * may still be set (and @req must still be cleaned up) so the error reply
 * can echo it.
 */
bool protocol_parse_request(const uint8_t *data, size_t len, struct request *req, char *err,
                            size_t err_size);
void request_cleanup(struct request *req);

/* Encodes the "message" frame for @m, history or live. Returns NULL when
 * out of memory. The caller owns the returned reference. */
struct frame *protocol_encode_message(const struct msg *m, bool history);

/* Encodes @obj (a JSON object) compactly as one text frame. Takes no
 * reference from @obj. Returns NULL when out of memory. */
struct frame *protocol_encode_json(json_t *obj);

struct frame *protocol_encode_error(json_t *id, enum protocol_error_code code,
                                    const char *message);

#endif
