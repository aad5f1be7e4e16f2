/* Unit tests for payload classification and the message envelope. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>

#include "msg.h"
#include "payload.h"
#include "protocol.h"
#include "utf8.h"
#include "ws.h"

static enum payload_encoding classify(const char *s)
{
    return payload_classify((const uint8_t *)s, strlen(s));
}

static void test_classify_json(void **state)
{
    assert_int_equal(classify("{\"t\":21.5}"), PAYLOAD_JSON);
    assert_int_equal(classify("[1,2,3]"), PAYLOAD_JSON);
    assert_int_equal(classify("123"), PAYLOAD_JSON);
    assert_int_equal(classify("-0.5e-3"), PAYLOAD_JSON);
    assert_int_equal(classify("true"), PAYLOAD_JSON);
    assert_int_equal(classify("null"), PAYLOAD_JSON);
    assert_int_equal(classify("\"online\""), PAYLOAD_JSON);
    assert_int_equal(classify("  {\"a\" : [ ] }\n"), PAYLOAD_JSON);
    assert_int_equal(classify("123456789012345678901234567890123456789"), PAYLOAD_JSON);
    assert_int_equal(classify("{\"s\":\"\\u00e9\\n\\\"\"}"), PAYLOAD_JSON);
}

static void test_classify_text(void **state)
{
    assert_int_equal(classify(""), PAYLOAD_UTF8);
    assert_int_equal(classify("online"), PAYLOAD_UTF8);
    assert_int_equal(classify("{\"t\":NaN}"), PAYLOAD_UTF8);
    assert_int_equal(classify("{\"t\":Infinity}"), PAYLOAD_UTF8);
    assert_int_equal(classify("01"), PAYLOAD_UTF8);
    assert_int_equal(classify("1."), PAYLOAD_UTF8);
    assert_int_equal(classify("{\"a\":1,}"), PAYLOAD_UTF8);
    assert_int_equal(classify("[1 2]"), PAYLOAD_UTF8);
    assert_int_equal(classify("{} {}"), PAYLOAD_UTF8);
    assert_int_equal(classify("\"tab\there\""), PAYLOAD_UTF8);
    assert_int_equal(classify("\"\\x\""), PAYLOAD_UTF8);
    assert_int_equal(classify("\"\\u12\""), PAYLOAD_UTF8);
    assert_int_equal(classify("{'a':1}"), PAYLOAD_UTF8);
    assert_int_equal(classify("caf\xc3\xa9"), PAYLOAD_UTF8);
}

static void test_classify_binary(void **state)
{
    static const uint8_t bytes[] = {0x00, 0xff, 0x10, 0x80};
    static const uint8_t overlong[] = {'a', 0xc0, 0xaf};
    static const uint8_t surrogate[] = {0xed, 0xa0, 0x80};
    static const uint8_t truncated[] = {'"', 0xe2, 0x82, '"'};

    assert_int_equal(payload_classify(bytes, sizeof(bytes)), PAYLOAD_BASE64);
    assert_int_equal(payload_classify(overlong, sizeof(overlong)), PAYLOAD_BASE64);
    assert_int_equal(payload_classify(surrogate, sizeof(surrogate)), PAYLOAD_BASE64);
    assert_int_equal(payload_classify(truncated, sizeof(truncated)), PAYLOAD_BASE64);
}

static void test_deep_nesting_is_text(void **state)
{
    char deep[2 * (PAYLOAD_JSON_MAX_DEPTH + 2) + 1];
    size_t n = PAYLOAD_JSON_MAX_DEPTH + 2;

    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = '\0';
    assert_int_equal(classify(deep), PAYLOAD_UTF8);

    n = PAYLOAD_JSON_MAX_DEPTH;
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = '\0';
    assert_int_equal(classify(deep), PAYLOAD_JSON);
}

/* Encodes @payload as a live message and returns the frame's JSON text. */
static json_t *envelope(const void *payload, size_t len, char **text_out)
{
    struct msg *m = msg_create("dev/1/temp", 10, payload, len, 1, false);
    struct frame *f;
    json_t *root;
    const uint8_t *json;
    size_t json_len;

    m->seq = 42;
    m->ts_ms = 1700000000123;
    f = protocol_encode_message(m, false);
    assert_non_null(f);

    /* The frame is FIN + text, unmasked. */
    assert_int_equal(f->data[0], 0x81);
    json = ws_frame_payload(f, &json_len);
    assert_true(utf8_valid(json, json_len));
    *text_out = strndup((const char *)json, json_len);
    root = json_loadb((const char *)json, json_len, JSON_DECODE_INT_AS_REAL, NULL);
    assert_non_null(root);

    frame_unref(f);
    msg_unref(m);
    return root;
}

static void test_envelope_json_verbatim(void **state)
{
    const char *payload = "{\"big\":123456789012345678901234567890,\"f\":1.10}";
    char *text;
    json_t *root = envelope(payload, strlen(payload), &text);

    assert_string_equal(json_string_value(json_object_get(root, "encoding")), "json");
    /* Decoded with JSON_DECODE_INT_AS_REAL, so numbers come back as reals. */
    assert_true(json_number_value(json_object_get(root, "seq")) == 42.0);
    assert_true(json_number_value(json_object_get(root, "ts")) == 1700000000123.0);
    /* Every digit the device sent is in the frame, as sent. */
    assert_non_null(strstr(text, "\"payload\":{\"big\":123456789012345678901234567890,\"f\":1.10}"));
    free(text);
    json_decref(root);
}

static void test_envelope_text_escapes(void **state)
{
    const char payload[] = "q\"b\\s\x01\x1f\xe2\x80\xa8|\xe2\x80\xa9 end";
    char *text;
    json_t *root = envelope(payload, sizeof(payload) - 1, &text);

    assert_string_equal(json_string_value(json_object_get(root, "encoding")), "utf8");
    assert_string_equal(json_string_value(json_object_get(root, "payload")), payload);
    assert_non_null(strstr(text, "\\u2028"));
    assert_non_null(strstr(text, "\\u2029"));
    assert_non_null(strstr(text, "\\u0001"));
    free(text);
    json_decref(root);
}

static void test_envelope_nan_is_text(void **state)
{
    const char *payload = "{\"t\":NaN}";
    char *text;
    json_t *root = envelope(payload, strlen(payload), &text);

    assert_string_equal(json_string_value(json_object_get(root, "encoding")), "utf8");
    assert_string_equal(json_string_value(json_object_get(root, "payload")), payload);
    free(text);
    json_decref(root);
}

static void test_envelope_empty_is_empty_string(void **state)
{
    char *text;
    json_t *root = envelope("", 0, &text);

    assert_string_equal(json_string_value(json_object_get(root, "encoding")), "utf8");
    assert_true(json_is_string(json_object_get(root, "payload")));
    assert_string_equal(json_string_value(json_object_get(root, "payload")), "");
    free(text);
    json_decref(root);
}

static void test_envelope_binary_base64(void **state)
{
    static const uint8_t bytes[] = {0x00, 0xff, 0xfe, 0x41, 0x80};
    char *text;
    json_t *root = envelope(bytes, sizeof(bytes), &text);

    assert_string_equal(json_string_value(json_object_get(root, "encoding")), "base64");
    assert_string_equal(json_string_value(json_object_get(root, "payload")), "AP/+QYA=");
    free(text);
    json_decref(root);
}

static void test_envelope_history_flag(void **state)
{
    struct msg *m = msg_create("t", 1, "1", 1, 0, true);
    struct frame *f = protocol_encode_message(m, true);

    assert_non_null(f);
    assert_non_null(memmem(f->data, f->len, "\"history\":true", 14));
    assert_non_null(memmem(f->data, f->len, "\"retain\":true", 13));
    frame_unref(f);
    msg_unref(m);
}

static void test_frame_length_forms(void **state)
{
    static const size_t sizes[] = {0, 125, 126, 65535, 65536, 70000};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct buf b;
        struct frame *f;
        size_t header = sizes[i] < 126 ? 2 : sizes[i] <= 65535 ? 4 : 10;

        buf_init(&b);
        ws_frame_begin(&b);
        for (size_t j = 0; j < sizes[i]; j++)
            buf_append(&b, "x", 1);
        f = ws_frame_finish(&b, WS_OPCODE_TEXT);
        assert_non_null(f);
        assert_int_equal(f->len, header + sizes[i]);
        if (header == 2) {
            assert_int_equal(f->data[1], sizes[i]);
        } else if (header == 4) {
            assert_int_equal(f->data[1], 126);
            assert_int_equal((f->data[2] << 8) | f->data[3], sizes[i]);
        } else {
            uint64_t len = 0;
            assert_int_equal(f->data[1], 127);
            for (int k = 0; k < 8; k++)
                len = (len << 8) | f->data[2 + k];
            assert_int_equal(len, sizes[i]);
        }
        frame_unref(f);
    }
}

static void test_accept_key_rfc_sample(void **state)
{
    char accept[WS_ACCEPT_KEY_LEN + 1];

    /* The sample handshake in RFC 6455, section 1.3. */
    assert_true(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept));
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    assert_false(ws_accept_key("", accept));
    assert_false(ws_accept_key("short==", accept));
    assert_false(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", accept));
    assert_false(ws_accept_key("!!!!!!!!!!!!!!!!!!!!!!==", accept));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_json),
        cmocka_unit_test(test_classify_text),
        cmocka_unit_test(test_classify_binary),
        cmocka_unit_test(test_deep_nesting_is_text),
        cmocka_unit_test(test_envelope_json_verbatim),
        cmocka_unit_test(test_envelope_text_escapes),
        cmocka_unit_test(test_envelope_nan_is_text),
        cmocka_unit_test(test_envelope_empty_is_empty_string),
        cmocka_unit_test(test_envelope_binary_base64),
        cmocka_unit_test(test_envelope_history_flag),
        cmocka_unit_test(test_frame_length_forms),
        cmocka_unit_test(test_accept_key_rfc_sample),
    };

    return cmocka_run_group_tests_name("payload", tests, NULL, NULL);
}
