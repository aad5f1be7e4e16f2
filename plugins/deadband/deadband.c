/*
 * deadband: forwards a reading only when it matters. A message passes when
 * its numeric field moved by at least "threshold" from the value last
 * forwarded on the same topic, or when "max_interval_ms" passed since then.
 * Time is the message's received_ms. Other readings are dropped.
 *
 * Config:
 *
 *     {"field": "temperature", "threshold": 0.5, "max_interval_ms": 60000}
 *
 * "field" is a field name or a dotted path ("sensor.temp"). "threshold" is
 * a number of at least 0. "max_interval_ms" is optional; without it (or
 * with 0) a steady reading is never repeated. "max_topics" (default 10000)
 * bounds the topics remembered: beyond it the least recently seen topic is
 * forgotten, and its next reading passes as if it were the first. The first
 * reading of a topic always passes. A payload that is not a JSON object,
 * lacks the field or holds a non-number there passes unchanged and leaves
 * the state alone.
 *
 * Build (the gateway's meson build does this):
 *
 *     cc -shared -fPIC -Iinclude -Iplugins/common -o deadband.so \
 *         plugins/deadband/deadband.c plugins/common/plugin_config.c \
 *         plugins/common/plugin_json.c plugins/common/topic_map.c -ljansson -lm
 */
#include <tidegate/plugin.h>

#include "plugin_config.h"
#include "plugin_json.h"
#include "topic_map.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The last forwarded reading of one topic. */
struct deadband_topic {
    bool forwarded;
    double value;
    int64_t forwarded_ms;
};

struct deadband {
    const struct tg_host *host;
    char *field;
    double threshold;
    int64_t max_interval_ms; /* 0: no interval */
    struct topic_map *topics;
};

static void deadband_cleanup(void *state)
{
    struct deadband *self = state;

    if (self == NULL)
        return;
    topic_map_destroy(self->topics);
    free(self->field);
    free(self);
}

static int deadband_init(const struct tg_host *host, struct tg_instance *instance,
                         const char *config_json, void **state, char *err, size_t err_size)
{
    static const char *const keys[] = {"field", "threshold", "max_interval_ms", "max_topics", NULL};
    struct deadband *self = NULL;
    const char *field = NULL;
    double threshold = 0.0;
    long long max_interval_ms = 0;
    long long max_topics = TOPIC_MAP_DEFAULT_MAX;
    json_t *config;
    int rc = -1;

    (void)instance;
    *state = NULL;
    if (plugin_config_load(config_json, &config, err, err_size) != 0)
        return -1;

    if (plugin_config_check_keys(config, "", keys, err, err_size) != 0 ||
        plugin_config_require(config, "", "field", "a string", err, err_size) != 0 ||
        plugin_config_require(config, "", "threshold", "a number", err, err_size) != 0 ||
        plugin_config_string(config, "", "field", &field, err, err_size) != 0 ||
        plugin_config_number(config, "", "threshold", 0.0, INFINITY, &threshold, err, err_size) !=
            0 ||
        plugin_config_integer(config, "", "max_interval_ms", 0, INT64_MAX / 2, &max_interval_ms,
                              err, err_size) != 0 ||
        plugin_config_integer(config, "", "max_topics", 1, TOPIC_MAP_LIMIT, &max_topics, err,
                              err_size) != 0)
        goto out;

    self = calloc(1, sizeof(*self));
    *state = self;
    if (self == NULL)
        goto out_memory;
    self->host = host;
    self->threshold = threshold;
    self->max_interval_ms = max_interval_ms;
    self->field = strdup(field);
    self->topics = topic_map_create(sizeof(struct deadband_topic), (size_t)max_topics);
    if (self->field == NULL || self->topics == NULL)
        goto out_memory;
    rc = 0;
    goto out;

out_memory:
    snprintf(err, err_size, "out of memory");
out:
    json_decref(config);
    return rc;
}

/* Decides whether a reading of @value at @now_ms passes, given @last. */
static bool deadband_passes(const struct deadband *self, const struct deadband_topic *last,
                            double value, int64_t now_ms)
{
    if (!last->forwarded)
        return true;
    if (fabs(value - last->value) >= self->threshold)
        return true;
    /* A clock that went backwards never expires the interval. */
    return self->max_interval_ms > 0 && now_ms - last->forwarded_ms >= self->max_interval_ms;
}

static enum tg_result deadband_transform(void *state, const struct tg_message *message,
                                         struct tg_call *call)
{
    struct deadband *self = state;
    json_t *root = plugin_json_parse_object(message);
    json_t *field;
    struct deadband_topic *last;
    enum tg_result result = TG_PASS;
    double value;

    if (root == NULL)
        return TG_PASS;
    field = plugin_json_lookup(root, self->field, NULL, NULL);
    if (!json_is_number(field))
        goto out;
    value = json_number_value(field);

    last = topic_map_get(self->topics, message->topic, message->topic_len);
    if (last == NULL) {
        self->host->fail(call, "out of memory for the topic's state");
        result = TG_ERROR;
        goto out;
    }

    if (deadband_passes(self, last, value, message->received_ms)) {
        last->forwarded = true;
        last->value = value;
        last->forwarded_ms = message->received_ms;
    } else {
        result = TG_DROP;
    }

out:
    json_decref(root);
    return result;
}

static const struct tg_plugin deadband_plugin = {
    .abi_version = TIDEGATE_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct tg_plugin),
    .name = "deadband",
    .version = "1.0.0",
    .description = "Drops readings that moved less than a threshold, repeating one per interval.",
    .init = deadband_init,
    .transform = deadband_transform,
    .cleanup = deadband_cleanup,
};

__attribute__((visibility("default"))) const struct tg_plugin *tidegate_plugin_entry(void);

const struct tg_plugin *tidegate_plugin_entry(void)
{
    return &deadband_plugin;
}
