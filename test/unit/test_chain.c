/* Unit tests for the plugin loader and chain, with test plugins that
 * misbehave on purpose (test/plugins/). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "chain.h"

static char err[1024];

static struct chain *build(const char *plugins_json)
{
    json_t *plugins = json_loads(plugins_json, 0, NULL);
    struct chain *chain;

    if (plugins == NULL)
        fail_msg("test JSON does not parse: %s", plugins_json);
    err[0] = '\0';
    chain = chain_create(plugins, TEST_PLUGIN_DIR, err, sizeof(err));
    json_decref(plugins);
    return chain;
}

static void assert_err_contains(const char *needle)
{
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' does not contain '%s'", err, needle);
}

static struct chain *build_mode(const char *mode, const char *on_error)
{
    char text[256];

    snprintf(text, sizeof(text),
             "[{\"name\":\"m\",\"plugin\":\"misbehave\",\"on_error\":\"%s\","
             "\"config\":{\"mode\":\"%s\"}}]",
             on_error, mode);
    return build(text);
}

/* Runs one message through and returns the outputs in @out. */
static bool run_one(struct chain *chain, const char *topic, const char *payload,
                    struct msg_list *out)
{
    struct msg *m = msg_create(topic, strlen(topic), payload, strlen(payload), 1, false);

    memset(out, 0, sizeof(*out));
    return chain_run(chain, m, out);
}

static void assert_payload(const struct msg *m, const char *expected)
{
    assert_int_equal(m->payload_len, strlen(expected));
    assert_memory_equal(m->payload, expected, strlen(expected));
}

static void test_load_errors_name_instance_and_key(void **state)
{
    static const struct {
        const char *json;
        const char *expect[3];
    } cases[] = {
        {"[{\"name\":\"a\",\"plugin\":\"does_not_exist\"}]",
         {"plugins[0] (instance 'a').plugin", "'does_not_exist' not found", "plugin_dir"}},
        {"[{\"name\":\"a\",\"plugin\":\"" TEST_SOURCE_DIR "/test_chain.c\"}]",
         {"plugins[0] (instance 'a').plugin", "cannot load", "test_chain.c"}},
        {"[{\"name\":\"a\",\"plugin\":\"no_entry\"}]",
         {"instance 'a'", "no entry point tidegate_plugin_entry", "no_entry.so"}},
        {"[{\"name\":\"a\",\"plugin\":\"wrong_abi\"}]",
         {"ABI version 2", "this gateway has version 1", "wrong_abi.so"}},
        {"[{\"name\":\"a\",\"plugin\":\"misbehave\",\"config\":{\"mode\":\"fail_init\"}}]",
         {"instance 'a').config", "failed to start", "refusing to start, as configured"}},
        {"[{\"name\":\"a\",\"plugin\":\"misbehave\",\"config\":{\"mode\":\"pass\",\"x\":1}}]",
         {"instance 'a').config", "failed to start", "nothing else"}},
        {"[{\"name\":\"a\",\"plugin\":\"misbehave\",\"colour\":1}]",
         {"plugins[0]", "unknown key 'colour'", "on_error"}},
        {"[{\"name\":\"a\",\"plugin\":\"misbehave\",\"on_error\":\"explode\"}]",
         {"instance 'a').on_error", "\"pass\" or \"drop\"", ""}},
        {"[{\"name\":\"a\",\"plugin\":\"misbehave\",\"filters\":[\"a/#/b\"]}]",
         {"instance 'a').filters[0]", "a/#/b", "last level"}},
        {"[{\"name\":\"a b\",\"plugin\":\"misbehave\"}]", {"plugins[0].name", "letters", ""}},
        {"[{\"name\":\"a\",\"plugin\":\"misbehave\",\"config\":{\"mode\":\"pass\"}},"
         "{\"name\":\"a\",\"plugin\":\"misbehave\",\"config\":{\"mode\":\"pass\"}}]",
         {"plugins[1].name", "'a' is used by plugins[0]", ""}},
        {"[{\"name\":\"a\",\"plugin\":\"misbehave\",\"config\":[1]}]",
         {"instance 'a').config", "expected an object", ""}},
        {"[3]", {"plugins[0]", "expected an object", ""}},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct chain *chain = build(cases[i].json);
        if (chain != NULL)
            fail_msg("case %zu loaded: %s", i, cases[i].json);
        for (size_t k = 0; k < 3; k++)
            assert_err_contains(cases[i].expect[k]);
    }
}

static void test_pass_replace_and_emit(void **state)
{
    struct chain *chain = build_mode("uppercase", "pass");
    struct msg_list out;

    assert_non_null(chain);
    assert_true(run_one(chain, "dev/1", "hello", &out));
    assert_int_equal(out.count, 2);
    assert_string_equal(out.items[0]->topic, "dev/1");
    assert_payload(out.items[0], "HELLO");
    assert_int_equal(out.items[0]->qos, 1);
    assert_string_equal(out.items[1]->topic, "dev/1/copy");
    assert_payload(out.items[1], "HELLO");
    msg_list_cleanup(&out);
    chain_destroy(chain);
}

static void test_errors_follow_policy(void **state)
{
    static const char *const modes[] = {"error",    "bad_result", "bad_topic",
                                        "emit_bad", "huge",       "emit_many"};
    struct msg_list out;

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        struct chain *pass = build_mode(modes[i], "pass");
        struct chain *drop = build_mode(modes[i], "drop");
        struct buf metrics;

        assert_non_null(pass);
        assert_non_null(drop);

        /* pass: the message goes on unchanged, and nothing it emitted. */
        assert_true(run_one(pass, "t", "payload", &out));
        assert_int_equal(out.count, 1);
        assert_payload(out.items[0], "payload");
        assert_string_equal(out.items[0]->topic, "t");
        msg_list_cleanup(&out);

        assert_false(run_one(drop, "t", "payload", &out));
        assert_int_equal(out.count, 0);
        msg_list_cleanup(&out);

        buf_init(&metrics);
        chain_render_metrics(pass, &metrics);
        buf_append(&metrics, "", 1);
        if (strstr((char *)metrics.data,
                   "tidegate_plugin_errors_total{instance=\"m\",plugin=\"misbehave\"} 1") == NULL)
            fail_msg("mode %s: error not counted in:\n%s", modes[i], (char *)metrics.data);
        buf_cleanup(&metrics);
        chain_destroy(pass);
        chain_destroy(drop);
    }
}

static void test_drop_and_filters(void **state)
{
    struct chain *chain = build("[{\"name\":\"d\",\"plugin\":\"misbehave\",\"filters\":"
                                "[\"noisy/#\",\"+/spam\"],\"config\":{\"mode\":\"drop\"}}]");
    struct msg_list out;

    assert_non_null(chain);
    assert_false(run_one(chain, "noisy/a/b", "x", &out));
    assert_int_equal(out.count, 0);
    msg_list_cleanup(&out);
    assert_false(run_one(chain, "dev/spam", "x", &out));
    msg_list_cleanup(&out);
    assert_true(run_one(chain, "quiet/a", "x", &out));
    assert_int_equal(out.count, 1);
    msg_list_cleanup(&out);
    chain_destroy(chain);
}

static void test_two_instances_in_order(void **state)
{
    /* The same plugin twice with different settings: the first instance
     * upper-cases, the second drops "+/copy" topics. Emitted messages skip
     * the rest of the chain, so the copy the first one emits survives. */
    struct chain *chain =
        build("[{\"name\":\"up\",\"plugin\":\"misbehave\",\"config\":{\"mode\":\"uppercase\"}},"
              "{\"name\":\"dropper\",\"plugin\":\"misbehave\",\"filters\":[\"+/copy\"],"
              "\"config\":{\"mode\":\"drop\"}}]");
    struct msg_list out;

    assert_non_null(chain);
    assert_int_equal(chain_instance_count(chain), 2);
    assert_true(run_one(chain, "a", "abc", &out));
    assert_int_equal(out.count, 2);
    assert_payload(out.items[0], "ABC");
    assert_string_equal(out.items[1]->topic, "a/copy");
    msg_list_cleanup(&out);
    chain_destroy(chain);
}

static void test_empty_chain_passes(void **state)
{
    struct chain *chain = chain_create(NULL, TEST_PLUGIN_DIR, err, sizeof(err));
    struct msg_list out;

    assert_non_null(chain);
    assert_int_equal(chain_instance_count(chain), 0);
    assert_true(run_one(chain, "t", "x", &out));
    assert_int_equal(out.count, 1);
    msg_list_cleanup(&out);
    chain_destroy(chain);
    chain_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_errors_name_instance_and_key),
        cmocka_unit_test(test_pass_replace_and_emit),
        cmocka_unit_test(test_errors_follow_policy),
        cmocka_unit_test(test_drop_and_filters),
        cmocka_unit_test(test_two_instances_in_order),
        cmocka_unit_test(test_empty_chain_passes),
    };

    return cmocka_run_group_tests_name("chain", tests, NULL, NULL);
}
