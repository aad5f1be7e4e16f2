/*
 * topic_prefix: a template Tidegate plugin. It moves every message it receives
 * under a topic prefix, so "lab/1/temp" becomes "site-a/lab/1/temp".
 *
 * Build (out of tree, against the installed header):
 *     cc -shared -fPIC -Wall -Wextra $(pkg-config --cflags tidegate-plugin jansson) \
 *        -o topic_prefix.so topic_prefix.c $(pkg-config --libs jansson)
 *
 * Configure (in the gateway's config file):
 *     "plugins": [{"name": "site", "plugin": "/path/to/topic_prefix.so",
 *                  "filters": ["lab/#"], "config": {"prefix": "site-a"}}]
 */
#include <tidegate/plugin.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* All state lives here, one per configured instance: no globals. */
struct prefix_state {
    const struct tg_host *host;
    struct tg_instance *instance;
    char *prefix;
};

static int prefix_init(const struct tg_host *host, struct tg_instance *instance,
                       const char *config_json, void **state, char *err, size_t err_size)
{
    json_error_t jerr;
    json_t *config = json_loads(config_json, 0, &jerr);
    const char *key;
    json_t *value;
    struct prefix_state *st;

    if (config == NULL) {
        snprintf(err, err_size, "config is not JSON: %s", jerr.text);
        return -1;
    }
    json_object_foreach(config, key, value)
    {
        if (strcmp(key, "prefix") != 0) {
            snprintf(err, err_size, "unknown setting '%s': the only setting is 'prefix'", key);
            json_decref(config);
            return -1;
        }
    }
    value = json_object_get(config, "prefix");
    if (!json_is_string(value) || json_string_length(value) == 0 ||
        strpbrk(json_string_value(value), "+#") != NULL) {
        snprintf(err, err_size, "'prefix' must be a non-empty string without '+' or '#'");
        json_decref(config);
        return -1;
    }

    st = calloc(1, sizeof(*st));
    if (st == NULL || (st->prefix = strdup(json_string_value(value))) == NULL) {
        free(st);
        json_decref(config);
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    st->host = host;
    st->instance = instance;
    json_decref(config);
    *state = st;
    return 0;
}

static enum tg_result prefix_transform(void *state, const struct tg_message *message,
                                       struct tg_call *call)
{
    struct prefix_state *st = state;
    size_t len = strlen(st->prefix) + 1 + message->topic_len + 1;
    char *topic = malloc(len);

    if (topic == NULL) {
        st->host->fail(call, "out of memory");
        return TG_ERROR;
    }
    snprintf(topic, len, "%s/%s", st->prefix, message->topic);

    /* The host copies the topic (buffer ownership rule 2), so free it now. */
    if (st->host->replace(call, topic, NULL, 0) != 0) {
        free(topic);
        return TG_ERROR;
    }
    free(topic);
    return TG_PASS;
}

static void prefix_cleanup(void *state)
{
    struct prefix_state *st = state;

    if (st == NULL)
        return;
    free(st->prefix);
    free(st);
}

static const struct tg_plugin descriptor = {
    .abi_version = TIDEGATE_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct tg_plugin),
    .name = "topic_prefix",
    .version = "1.0.0",
    .description = "Moves messages under a topic prefix.",
    .init = prefix_init,
    .transform = prefix_transform,
    .cleanup = prefix_cleanup,
};

const struct tg_plugin *tidegate_plugin_entry(void);

const struct tg_plugin *tidegate_plugin_entry(void)
{
    return &descriptor;
}
