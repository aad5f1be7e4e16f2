/* libFuzzer target: MQTT payloads through classification and the envelope.
 * Every frame the gateway sends must be valid UTF-8 and valid JSON. */
#include "msg.h"
#include "protocol.h"
#include "utf8.h"
#include "ws.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct msg *m = msg_create("fuzz/topic", 10, data, size, 1, false);
    struct frame *f;
    const uint8_t *json;
    size_t len;
    json_t *root;

    if (m == NULL)
        return 0;
    m->seq = 1;
    f = protocol_encode_message(m, false);
    if (f != NULL) {
        json = ws_frame_payload(f, &len);
        if (!utf8_valid(json, len))
            abort();
        root = json_loadb((const char *)json, len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL,
                          NULL);
        /* jansson rejects numbers beyond a double; only then may it fail. */
        if (root == NULL && m->encoding != PAYLOAD_JSON)
            abort();
        json_decref(root);
        frame_unref(f);
    }
    msg_unref(m);
    return 0;
}
