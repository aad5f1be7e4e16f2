/*
 * Classifies MQTT payloads for the WebSocket envelope.
 *
 * A payload that is valid UTF-8 and one complete JSON text (RFC 8259) is
 * sent embedded verbatim, so numbers keep every digit the device sent. Other
 * valid UTF-8 is sent as a JSON string and anything else as base64. An empty
 * payload is UTF-8 text.
 */
#ifndef TIDEGATE_PAYLOAD_H
#define TIDEGATE_PAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum payload_encoding {
    PAYLOAD_JSON = 0,
    PAYLOAD_UTF8 = 1,
    PAYLOAD_BASE64 = 2,
};

/* Deepest nesting of arrays and objects accepted as JSON; deeper payloads
 * are sent as UTF-8 text so no client parser is asked to recurse further. */
#define PAYLOAD_JSON_MAX_DEPTH 128

enum payload_encoding payload_classify(const uint8_t *data, size_t len);

/* Returns the wire name: "json", "utf8" or "base64". */
const char *payload_encoding_name(enum payload_encoding encoding);

/*
 * Returns true when @data is exactly one JSON value with optional white
 * space around it, nested at most PAYLOAD_JSON_MAX_DEPTH deep. The caller
 * checks UTF-8 validity separately: this only checks the grammar.
 */
bool payload_is_json(const uint8_t *data, size_t len);

/*
 * Finds the member @key of the top-level JSON object in @data and returns
 * the byte range of its value as written. Returns false when @data is not a
 * valid JSON object or has no such member (a name written with escapes does
 * not count as a match). Lets the gateway forward a JSON value with every
 * digit as the client wrote it.
 */
bool payload_find_member(const uint8_t *data, size_t len, const char *key, size_t *value_start,
                         size_t *value_end);

#endif
