/*
 * threshold_alert: emits a message on an alert topic when a numeric field
 * crosses a limit, with hysteresis so a noisy sensor does not flap.
 *
 * Config:
 *
 *     {"field": "temperature", "above": 40, "clear_below": 38,
 *      "alert_topic": "alerts/{topic}"}
 *
 * A topic goes into alert when the field's value is greater than "above",
 * and back to clear when it is less than "clear_below". "clear_below" may
 * not be greater than "above", and defaults to "above", which means no
 * hysteresis. Each change emits one message on "alert_topic", with
 * "{topic}" replaced by the source topic:
 *
 *     {"state":"alert","value":41.5,"topic":"sensors/room1"}
 *     {"state":"clear","value":37.5,"topic":"sensors/room1"}
 *
 * with the source message's QoS and "retain" (default false) as the retain
 * flag. A topic starts clear, so its first reading emits only when above
 * the limit. The source message always passes unchanged. A payload that is
 * not a JSON object, lacks the field or holds a non-number there changes
 * nothing. "max_topics" (default 10000) bounds the topics remembered:
 * beyond it the least recently seen topic is forgotten and starts clear
 * again.
 *
 * Build (the gateway's meson build does this):
 *
 *     cc -shared -fPIC -Iinclude -Iplugins/common -o threshold_alert.so \
 *         plugins/threshold_alert/threshold_alert.c plugins/common/plugin_config.c \
 *         plugins/common/plugin_json.c plugins/common/topic_map.c \
 *         plugins/common/topic_template.c -ljansson
 */
#include <tidegate/plugin.h>

#include "plugin_config.h"
#include "plugin_json.h"
#include "topic_map.h"
#include "topic_template.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct alert_topic_state {
    bool alerting;
};

struct threshold_alert {
    const struct tg_host *host;
    char *field;
    double above;
    double clear_below;
    char *alert_topic; /* a topic template */
    bool retain;
    struct topic_map *topics;
};

static void threshold_alert_cleanup(void *state)
{
    struct threshold_alert *self = state;

    if (self == NULL)
        return;
    topic_map_destroy(self->topics);
    free(self->field);
    free(self->alert_topic);
    free(self);
}

/* Reads and checks the settings that need more than a type check. */
static int check_limits(const json_t *config, double *above, double *clear_below, char *err,
                        size_t err_size)
{
    if (plugin_config_number(config, "", "above", -INFINITY, INFINITY, above, err, err_size) != 0)
        return -1;
    *clear_below = *above;
    if (plugin_config_number(config, "", "clear_below", -INFINITY, INFINITY, clear_below, err,
                             err_size) != 0)
        return -1;
    if (*clear_below > *above) {
        snprintf(err, err_size,
                 "invalid value %g for \"clear_below\": expected a number not greater than "
                 "\"above\" (%g)",
                 *clear_below, *above);
        return -1;
    }
    return 0;
}

static int threshold_alert_init(const struct tg_host *host, struct tg_instance *instance,
                                const char *config_json, void **state, char *err, size_t err_size)
{
    static const char *const keys[] = {"field",  "above",      "clear_below", "alert_topic",
                                       "retain", "max_topics", NULL};
    struct threshold_alert *self;
    const char *field = NULL;
    const char *alert_topic = NULL;
    const char *reason;
    double above;
    double clear_below;
    bool retain = false;
    long long max_topics = TOPIC_MAP_DEFAULT_MAX;
    json_t *config;
    int rc = -1;

    (void)instance;
    *state = NULL;
    if (plugin_config_load(config_json, &config, err, err_size) != 0)
        return -1;

    if (plugin_config_check_keys(config, "", keys, err, err_size) != 0 ||
        plugin_config_require(config, "", "field", "a string", err, err_size) != 0 ||
        plugin_config_require(config, "", "above", "a number", err, err_size) != 0 ||
        plugin_config_require(config, "", "alert_topic", "a topic such as \"alerts/{topic}\"", err,
                              err_size) != 0 ||
        plugin_config_string(config, "", "field", &field, err, err_size) != 0 ||
        check_limits(config, &above, &clear_below, err, err_size) != 0 ||
        plugin_config_string(config, "", "alert_topic", &alert_topic, err, err_size) != 0 ||
        plugin_config_bool(config, "", "retain", &retain, err, err_size) != 0 ||
        plugin_config_integer(config, "", "max_topics", 1, TOPIC_MAP_LIMIT, &max_topics, err,
                              err_size) != 0)
        goto out;
    reason = topic_template_check(alert_topic);
    if (reason != NULL) {
        snprintf(err, err_size, "invalid value \"%s\" for \"alert_topic\": %s", alert_topic,
                 reason);
        goto out;
    }

    self = calloc(1, sizeof(*self));
    *state = self;
    if (self != NULL) {
        self->host = host;
        self->above = above;
        self->clear_below = clear_below;
        self->retain = retain;
        self->field = strdup(field);
        self->alert_topic = strdup(alert_topic);
        self->topics = topic_map_create(sizeof(struct alert_topic_state), (size_t)max_topics);
    }
    if (self == NULL || self->field == NULL || self->alert_topic == NULL || self->topics == NULL) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    rc = 0;

out:
    json_decref(config);
    return rc;
}

/* Emits the alert or clear message for @message. Returns 0, or -1 after
 * host->fail. */
static int emit_state(struct threshold_alert *self, const struct tg_message *message,
                      struct tg_call *call, bool alerting, json_t *value)
{
    char *topic = topic_template_expand(self->alert_topic, message->topic, message->topic_len);
    json_t *body = json_pack("{s:s, s:O, s:s}", "state", alerting ? "alert" : "clear", "value",
                             value, "topic", message->topic);
    int rc = -1;

    if (topic == NULL || body == NULL)
        self->host->fail(call, "out of memory");
    else
        rc = plugin_json_emit(self->host, call, topic, body, message->qos, self->retain);

    json_decref(body);
    free(topic);
    return rc;
}

static enum tg_result threshold_alert_transform(void *state, const struct tg_message *message,
                                                struct tg_call *call)
{
    struct threshold_alert *self = state;
    json_t *root = plugin_json_parse_object(message);
    json_t *field;
    struct alert_topic_state *topic_state;
    enum tg_result result = TG_PASS;
    double value;
    bool alerting;

    if (root == NULL)
        return TG_PASS;
    field = plugin_json_lookup(root, self->field, NULL, NULL);
    if (!json_is_number(field))
        goto out;
    value = json_number_value(field);

    topic_state = topic_map_get(self->topics, message->topic, message->topic_len);
    if (topic_state == NULL) {
        self->host->fail(call, "out of memory for the topic's state");
        result = TG_ERROR;
        goto out;
    }

    /* Between the two limits the state stays as it is. */
    alerting = topic_state->alerting;
    if (value > self->above)
        alerting = true;
    else if (value < self->clear_below)
        alerting = false;

    /* The state changes only once its message is out, so a failed emit is
     * retried on the next reading. */
    if (alerting != topic_state->alerting) {
        if (emit_state(self, message, call, alerting, field) != 0)
            result = TG_ERROR;
        else
            topic_state->alerting = alerting;
    }

out:
    json_decref(root);
    return result;
}

static const struct tg_plugin threshold_alert_plugin = {
    .abi_version = TIDEGATE_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct tg_plugin),
    .name = "threshold_alert",
    .version = "1.0.0",
    .description = "Emits alert and clear messages when a field crosses a limit, with hysteresis.",
    .init = threshold_alert_init,
    .transform = threshold_alert_transform,
    .cleanup = threshold_alert_cleanup,
};

__attribute__((visibility("default"))) const struct tg_plugin *tidegate_plugin_entry(void);

const struct tg_plugin *tidegate_plugin_entry(void)
{
    return &threshold_alert_plugin;
}
