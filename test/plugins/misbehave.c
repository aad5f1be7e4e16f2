/*
 * A test plugin that misbehaves on request, to prove the host's error
 * paths. Config: {"mode": "..."} where mode is one of
 *   "pass"          pass every message unchanged
 *   "error"         fail every transform with a reason
 *   "bad_result"    return a result code the ABI does not define
 *   "bad_topic"     replace the topic with one holding a wildcard
 *   "emit_bad"      emit a message on an invalid topic
 *   "huge"          replace the payload with one over the host's limit
 *   "emit_many"     emit more messages than one call may
 *   "uppercase"     replace the payload with its ASCII upper case, and emit
 *                   a copy on "<topic>/copy"
 *   "drop"          drop every message
 * and init fails for "fail_init" (with a reason) and for unknown keys.
 */
#include <tidegate/plugin.h>

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct state {
    const struct tg_host *host;
    struct tg_instance *instance;
    char mode[32];
};

static int misbehave_init(const struct tg_host *host, struct tg_instance *instance,
                          const char *config_json, void **out, char *err, size_t err_size)
{
    json_t *config = json_loads(config_json, 0, NULL);
    json_t *mode = json_object_get(config, "mode");
    struct state *st;

    if (!json_is_string(mode) || json_object_size(config) != 1) {
        snprintf(err, err_size, "config must be {\"mode\": \"...\"} and nothing else");
        json_decref(config);
        return -1;
    }
    if (strcmp(json_string_value(mode), "fail_init") == 0) {
        snprintf(err, err_size, "refusing to start, as configured");
        json_decref(config);
        return -1;
    }
    st = calloc(1, sizeof(*st));
    st->host = host;
    st->instance = instance;
    snprintf(st->mode, sizeof(st->mode), "%s", json_string_value(mode));
    json_decref(config);
    *out = st;
    host->log(instance, TG_LOG_INFO, "started in mode %s", st->mode);
    return 0;
}

static enum tg_result misbehave_transform(void *state, const struct tg_message *message,
                                          struct tg_call *call)
{
    struct state *st = state;
    const struct tg_host *host = st->host;

    if (strcmp(st->mode, "error") == 0) {
        host->fail(call, "failing on purpose");
        return TG_ERROR;
    }
    if (strcmp(st->mode, "bad_result") == 0)
        return (enum tg_result)42;
    if (strcmp(st->mode, "bad_topic") == 0) {
        host->replace(call, "a/+/b", NULL, 0);
        return TG_PASS;
    }
    if (strcmp(st->mode, "emit_bad") == 0) {
        host->emit(call, "alerts/#", "x", 1, 0, false);
        return TG_PASS;
    }
    if (strcmp(st->mode, "huge") == 0) {
        size_t len = 2 * 1024 * 1024;
        char *big = calloc(1, len);
        host->replace(call, NULL, big, len);
        free(big);
        return TG_PASS;
    }
    if (strcmp(st->mode, "emit_many") == 0) {
        for (int i = 0; i < 100; i++)
            host->emit(call, "many", "x", 1, 0, false);
        return TG_PASS;
    }
    if (strcmp(st->mode, "uppercase") == 0) {
        char topic[512];
        char *upper = malloc(message->payload_len + 1);
        for (size_t i = 0; i < message->payload_len; i++)
            upper[i] = (char)toupper(message->payload[i]);
        host->replace(call, NULL, upper, message->payload_len);
        snprintf(topic, sizeof(topic), "%s/copy", message->topic);
        host->emit(call, topic, upper, message->payload_len, 1, false);
        free(upper); /* the host copied it */
        return TG_PASS;
    }
    if (strcmp(st->mode, "drop") == 0)
        return TG_DROP;
    return TG_PASS;
}

static void misbehave_cleanup(void *state)
{
    free(state);
}

static const struct tg_plugin descriptor = {
    .abi_version = TIDEGATE_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct tg_plugin),
    .name = "misbehave",
    .version = "1.0.0",
    .description = "Misbehaves on request, for testing the host.",
    .init = misbehave_init,
    .transform = misbehave_transform,
    .cleanup = misbehave_cleanup,
};

const struct tg_plugin *tidegate_plugin_entry(void);

const struct tg_plugin *tidegate_plugin_entry(void)
{
    return &descriptor;
}
