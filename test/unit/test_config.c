/* Unit tests for configuration parsing and its error messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char err[512];

static int setup(void **state)
{
    static struct config cfg;

    config_init_defaults(&cfg);
    err[0] = '\0';
    *state = &cfg;
    return 0;
}

static int teardown(void **state)
{
    config_cleanup(*state);
    return 0;
}

static bool apply_json_text(struct config *cfg, const char *text)
{
    json_t *root = json_loads(text, 0, NULL);
    bool ok;

    assert_non_null(root);
    ok = config_apply_json(cfg, root, "test.json", err, sizeof(err));
    json_decref(root);
    return ok;
}

static void assert_err_contains(const char *needle)
{
    if (strstr(err, needle) == NULL)
        fail_msg("error message '%s' does not contain '%s'", err, needle);
}

static void test_defaults(void **state)
{
    struct config *cfg = *state;

    assert_string_equal(cfg->mqtt_url, "tcp://127.0.0.1:1883");
    assert_string_equal(cfg->listen_host, "127.0.0.1");
    assert_int_equal(cfg->listen_port, 8080);
    assert_int_equal(cfg->subscribe.count, 1);
    assert_string_equal(cfg->subscribe.items[0], "#");
    assert_int_equal(cfg->publish_allow.count, 0);
    assert_int_equal(cfg->mqtt_qos, 1);
    assert_true(config_validate(cfg, err, sizeof(err)));
}

static void test_json_file_values(void **state)
{
    struct config *cfg = *state;

    assert_true(apply_json_text(cfg, "{\"mqtt_url\":\"mqtt://broker.local:1884\","
                                     "\"subscribe\":[\"a/#\",\"b/+/c\"],"
                                     "\"publish_allow\":[\"chat/#\"],"
                                     "\"listen\":\"[::1]:9000\",\"log_level\":\"debug\","
                                     "\"max_message_bytes\":1024}"));
    assert_string_equal(cfg->mqtt_url, "mqtt://broker.local:1884");
    assert_int_equal(cfg->subscribe.count, 2);
    assert_string_equal(cfg->subscribe.items[1], "b/+/c");
    assert_string_equal(cfg->publish_allow.items[0], "chat/#");
    assert_string_equal(cfg->listen_host, "::1");
    assert_int_equal(cfg->listen_port, 9000);
    assert_int_equal(cfg->log_level, LOG_DEBUG);
    assert_int_equal(cfg->max_message_bytes, 1024);
}

static void test_unknown_key(void **state)
{
    assert_false(apply_json_text(*state, "{\"mqtt_uri\":\"tcp://x:1\"}"));
    assert_err_contains("unknown key 'mqtt_uri'");
    assert_err_contains("test.json");
}

static void test_wrong_types(void **state)
{
    assert_false(apply_json_text(*state, "{\"max_message_bytes\":\"big\"}"));
    assert_err_contains("max_message_bytes");
    assert_err_contains("expected an integer");

    assert_false(apply_json_text(*state, "{\"subscribe\":\"#\"}"));
    assert_err_contains("expected an array");

    assert_false(apply_json_text(*state, "{\"subscribe\":[\"a\",3]}"));
    assert_err_contains("subscribe[1]");

    assert_false(apply_json_text(*state, "[]"));
    assert_err_contains("JSON object");
}

static void test_bad_values_name_key_and_value(void **state)
{
    struct config *cfg = *state;
    static const struct {
        const char *key;
        const char *value;
        const char *expect;
    } cases[] = {
        {"listen", "nope", "HOST:PORT"},
        {"listen", "127.0.0.1:0", "1 to 65535"},
        {"listen", "127.0.0.1:70000", "1 to 65535"},
        {"listen", "127.0.0.1:", "HOST:PORT"},
        {"log_level", "loud", "error, warn, info or debug"},
        {"max_message_bytes", "-1", "from 256 to"},
        {"max_message_bytes", "12abc", "expected an integer"},
        {"mqtt_qos", "3", "from 0 to 2"},
        {"mqtt_url", "http://x:1", "tcp://HOST:PORT"},
        {"mqtt_url", "tcp://", "host"},
        {"mqtt_client_id", "has space", "printable"},
        {"subscribe", "a/#/b", "last level"},
        {"publish_allow", "a+", "whole level"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        if (config_apply_text(cfg, cases[i].key, cases[i].value, "--test", err, sizeof(err)))
            fail_msg("%s=%s was accepted", cases[i].key, cases[i].value);
        assert_err_contains(cases[i].key);
        assert_err_contains(cases[i].value);
        assert_err_contains(cases[i].expect);
    }
}

static void test_cross_checks(void **state)
{
    struct config *cfg = *state;

    cfg->ws_ping_interval = 30;
    cfg->ws_idle_timeout = 30;
    assert_false(config_validate(cfg, err, sizeof(err)));
    assert_err_contains("ws_idle_timeout");

    cfg->ws_idle_timeout = 60;
    cfg->mqtt_reconnect_min_ms = 5000;
    cfg->mqtt_reconnect_max_ms = 1000;
    assert_false(config_validate(cfg, err, sizeof(err)));
    assert_err_contains("mqtt_reconnect_max_ms");
}

static void test_command_line_and_environment(void **state)
{
    struct config *cfg = *state;
    char *argv[] = {"tidegate", "--listen", "127.0.0.1:9100", "--subscribe", "x/#",
                    "--subscribe", "y/+", NULL};
    char *envp[] = {"TIDEGATE_LOG_LEVEL=warn", "TIDEGATE_PUBLISH_ALLOW=chat/#,cmd/+",
                    "TIDEGATE_LISTEN=127.0.0.1:9200", NULL};

    assert_int_equal(config_load(cfg, 7, argv, envp), CONFIG_RUN);
    assert_int_equal(cfg->listen_port, 9100); /* the command line wins */
    assert_int_equal(cfg->log_level, LOG_WARN);
    assert_int_equal(cfg->publish_allow.count, 2);
    assert_string_equal(cfg->publish_allow.items[1], "cmd/+");
    assert_int_equal(cfg->subscribe.count, 2); /* replaces the default "#" */
    assert_string_equal(cfg->subscribe.items[0], "x/#");
}

static void test_command_line_errors(void **state)
{
    struct config *cfg = *state;
    char *unknown[] = {"tidegate", "--no-such-option", NULL};
    char *bad[] = {"tidegate", "--log-level", "loud", NULL};
    char *stray[] = {"tidegate", "extra", NULL};
    char *envp[] = {NULL};

    assert_int_equal(config_load(cfg, 2, unknown, envp), CONFIG_EXIT_ERROR);
    assert_int_equal(config_load(cfg, 3, bad, envp), CONFIG_EXIT_ERROR);
    assert_int_equal(config_load(cfg, 2, stray, envp), CONFIG_EXIT_ERROR);
}

static void test_to_json_round_trip(void **state)
{
    struct config *cfg = *state;
    struct config copy;
    json_t *root = config_to_json(cfg);

    config_init_defaults(&copy);
    assert_true(config_apply_json(&copy, root, "round trip", err, sizeof(err)));
    assert_string_equal(copy.mqtt_url, cfg->mqtt_url);
    assert_int_equal(copy.listen_port, cfg->listen_port);
    assert_int_equal(copy.subscribe.count, cfg->subscribe.count);
    json_decref(root);
    config_cleanup(&copy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_file_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_values_name_key_and_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_line_and_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_line_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_to_json_round_trip, setup, teardown),
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
