/* Unit tests for parsing client requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "protocol.h"

static struct request req;
static char err[256];

static bool parse(const char *text)
{
    err[0] = '\0';
    request_cleanup(&req);
    return protocol_parse_request((const uint8_t *)text, strlen(text), &req, err, sizeof(err));
}

static int teardown(void **state)
{
    request_cleanup(&req);
    return 0;
}

static void assert_err_contains(const char *needle)
{
    if (strstr(err, needle) == NULL)
        fail_msg("error message '%s' does not contain '%s'", err, needle);
}

static void test_subscribe_forms(void **state)
{
    assert_true(parse("{\"type\":\"subscribe\",\"id\":1,\"filter\":\"a/+\"}"));
    assert_int_equal(req.type, REQUEST_SUBSCRIBE);
    assert_string_equal(req.filter, "a/+");
    assert_int_equal(req.history.kind, HISTORY_NONE);
    assert_int_equal(json_integer_value(req.id), 1);

    assert_true(parse("{\"type\":\"subscribe\",\"filter\":\"#\",\"history\":{\"last\":100}}"));
    assert_int_equal(req.history.kind, HISTORY_LAST);
    assert_int_equal(req.history.last, 100);

    assert_true(parse("{\"type\":\"subscribe\",\"filter\":\"#\",\"history\":{\"since_ms\":5}}"));
    assert_int_equal(req.history.kind, HISTORY_SINCE_MS);
    assert_int_equal(req.history.since_ms, 5);

    assert_true(parse("{\"type\":\"subscribe\",\"id\":\"s\",\"filter\":\"#\","
                      "\"history\":{\"since\":{\"epoch\":\"ab12\",\"seq\":77}}}"));
    assert_int_equal(req.history.kind, HISTORY_SINCE_SEQ);
    assert_string_equal(req.history.epoch, "ab12");
    assert_int_equal(req.history.seq, 77);
    assert_string_equal(json_string_value(req.id), "s");
}

static void test_subscribe_errors(void **state)
{
    assert_false(parse("{\"type\":\"subscribe\"}"));
    assert_err_contains("'filter' is missing");
    assert_false(parse("{\"type\":\"subscribe\",\"filter\":7}"));
    assert_err_contains("'filter' must be a string");
    assert_false(parse("{\"type\":\"subscribe\",\"filter\":\"#\",\"history\":{\"last\":-1}}"));
    assert_err_contains("history.last");
    assert_false(parse("{\"type\":\"subscribe\",\"filter\":\"#\",\"history\":{}}"));
    assert_err_contains("exactly one");
    assert_false(
        parse("{\"type\":\"subscribe\",\"filter\":\"#\",\"history\":{\"last\":1,\"since_ms\":2}}"));
    assert_err_contains("exactly one");
    assert_false(parse("{\"type\":\"subscribe\",\"filter\":\"#\",\"history\":{\"since\":{}}}"));
    assert_err_contains("history.since");
}

static void test_envelope_errors(void **state)
{
    assert_false(parse("not json"));
    assert_err_contains("not valid JSON");
    assert_false(parse("[1]"));
    assert_err_contains("JSON object");
    assert_false(parse("{\"id\":1}"));
    assert_err_contains("'type' is missing");
    assert_int_equal(json_integer_value(req.id), 1); /* kept for the error reply */
    assert_false(parse("{\"type\":\"fly\",\"id\":2}"));
    assert_err_contains("unknown message type 'fly'");
    assert_false(parse("{\"type\":\"ping\",\"id\":[1]}"));
    assert_err_contains("'id' must be");
    assert_false(parse("{\"type\":\"ping\",\"type\":\"ping\"}"));
}

static void test_publish_payloads(void **state)
{
    assert_true(parse("{\"type\":\"publish\",\"topic\":\"chat/a\",\"payload\":\"hi \\\"you\\\"\"}"));
    assert_int_equal(req.payload_len, 8);
    assert_memory_equal(req.payload, "hi \"you\"", 8);
    assert_int_equal(req.qos, 1);
    assert_false(req.retain);

    assert_true(parse("{\"type\":\"publish\",\"topic\":\"t\",\"payload\":{\"a\":[1,2]},\"qos\":0,"
                      "\"retain\":true}"));
    assert_int_equal(req.payload_len, strlen("{\"a\":[1,2]}"));
    assert_memory_equal(req.payload, "{\"a\":[1,2]}", req.payload_len);
    assert_int_equal(req.qos, 0);
    assert_true(req.retain);

    assert_true(parse("{\"type\":\"publish\",\"topic\":\"t\",\"payload\":\"AP8=\","
                      "\"encoding\":\"base64\"}"));
    assert_int_equal(req.payload_len, 2);
    assert_int_equal(req.payload[0], 0x00);
    assert_int_equal(req.payload[1], 0xff);

    assert_true(parse("{\"type\":\"publish\",\"topic\":\"t\",\"payload\":\"\"}"));
    assert_int_equal(req.payload_len, 0);
}

static void test_publish_keeps_raw_json(void **state)
{
    const char *raw = "{ \"big\": 123456789012345678901234567890, \"f\": 1.50 }";
    char text[256];

    snprintf(text, sizeof(text),
             "{\"type\":\"publish\",\"id\":9,\"topic\":\"t\",\"payload\":%s,\"qos\":0}", raw);
    assert_true(parse(text));
    assert_int_equal(json_integer_value(req.id), 9);
    assert_int_equal(req.qos, 0);
    assert_int_equal(req.payload_len, strlen(raw));
    assert_memory_equal(req.payload, raw, strlen(raw));

    assert_true(parse("{\"payload\":\"caf\\u00e9\",\"type\":\"publish\",\"topic\":\"t\"}"));
    assert_int_equal(req.payload_len, 5);
    assert_memory_equal(req.payload, "caf\xc3\xa9", 5);

    assert_true(parse("{\"type\":\"publish\",\"topic\":\"t\",\"payload\":null}"));
    assert_int_equal(req.payload_len, 4);
    assert_memory_equal(req.payload, "null", 4);
}

static void test_publish_errors(void **state)
{
    assert_false(parse("{\"type\":\"publish\",\"payload\":1}"));
    assert_err_contains("'topic'");
    assert_false(parse("{\"type\":\"publish\",\"topic\":\"t\"}"));
    assert_err_contains("'payload' is missing");
    assert_false(parse("{\"type\":\"publish\",\"topic\":\"t\",\"payload\":1,\"qos\":2}"));
    assert_err_contains("'qos' must be 0 or 1");
    assert_false(parse("{\"type\":\"publish\",\"topic\":\"t\",\"payload\":1,\"retain\":1}"));
    assert_err_contains("'retain'");
    assert_false(parse("{\"type\":\"publish\",\"topic\":\"t\",\"payload\":\"%%%\","
                       "\"encoding\":\"base64\"}"));
    assert_err_contains("base64");
    assert_false(parse("{\"type\":\"publish\",\"topic\":\"t\",\"payload\":1,\"encoding\":\"hex\"}"));
    assert_err_contains("'encoding'");
}

static void test_long_unknown_type_stays_utf8(void **state)
{
    /* 63 ASCII bytes, then a two-byte character across the 64-byte cut. */
    char text[256];
    char type[80];

    memset(type, 'x', 63);
    memcpy(type + 63, "\xc3\xa9", 2);
    type[65] = '\0';
    snprintf(text, sizeof(text), "{\"type\":\"%s\"}", type);
    assert_false(parse(text));
    for (const char *p = err; *p; p++)
        assert_true((unsigned char)*p < 0x80 || strstr(err, "\xc3\xa9") != NULL);
    assert_null(strstr(err, "\xc3'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_subscribe_forms, teardown),
        cmocka_unit_test_teardown(test_subscribe_errors, teardown),
        cmocka_unit_test_teardown(test_envelope_errors, teardown),
        cmocka_unit_test_teardown(test_publish_payloads, teardown),
        cmocka_unit_test_teardown(test_publish_keeps_raw_json, teardown),
        cmocka_unit_test_teardown(test_publish_errors, teardown),
        cmocka_unit_test_teardown(test_long_unknown_type_stays_utf8, teardown),
    };

    return cmocka_run_group_tests_name("protocol", tests, NULL, NULL);
}
