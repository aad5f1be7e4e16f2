/*
 * select_fields: reshapes JSON object payloads to the fields a dashboard
 * needs, such as a Zigbee2MQTT sensor's temperature, humidity and battery
 * out of its dozen fields.
 *
 * Config:
 *
 *     {"keep": ["temperature", "humidity", "battery"],
 *      "rename": {"temperature": "temp_c"},
 *      "drop_if_empty": true}
 *
 * "keep" lists the fields to keep, as top-level names or dotted paths
 * ("update.state"). The output is a flat object with the kept fields in
 * the order of "keep", each under its path or its "rename" entry. Every
 * key of "rename" must be in "keep". Fields missing from the payload are
 * left out. When none is present the output is {}, or, with
 * "drop_if_empty" true, the message is dropped. A payload that is not a
 * JSON object passes unchanged.
 *
 * Build (the gateway's meson build does this):
 *
 *     cc -shared -fPIC -Iinclude -Iplugins/common -o select_fields.so \
 *         plugins/select_fields/select_fields.c plugins/common/plugin_config.c \
 *         plugins/common/plugin_json.c -ljansson
 */
#include <tidegate/plugin.h>

#include "plugin_config.h"
#include "plugin_json.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kept_field {
    char *path;       /* where the field is in the payload */
    const char *name; /* its key in the output: path, or an owned rename */
    char *rename;
};

struct select_fields {
    const struct tg_host *host;
    struct kept_field *fields;
    size_t count;
    bool drop_if_empty;
};

static void select_fields_cleanup(void *state)
{
    struct select_fields *self = state;

    if (self == NULL)
        return;
    for (size_t i = 0; i < self->count; i++) {
        free(self->fields[i].path);
        free(self->fields[i].rename);
    }
    free(self->fields);
    free(self);
}

/* Checks "keep": a non-empty array of distinct, non-empty strings. */
static int check_keep(const json_t *keep, char *err, size_t err_size)
{
    size_t i;
    json_t *item;

    if (!json_is_array(keep) || json_array_size(keep) == 0)
        return plugin_config_fail_type("", "keep", keep,
                                       "a non-empty array of field names such as [\"battery\"]",
                                       err, err_size);
    json_array_foreach(keep, i, item)
    {
        if (!json_is_string(item) || json_string_length(item) == 0) {
            snprintf(err, err_size,
                     "invalid value for \"keep[%zu]\": expected a non-empty string, got %s", i,
                     json_is_string(item) ? "an empty string" : plugin_config_type_name(item));
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (json_equal(item, json_array_get(keep, j))) {
                snprintf(err, err_size, "invalid value for \"keep[%zu]\": \"%s\" is listed twice",
                         i, json_string_value(item));
                return -1;
            }
        }
    }
    return 0;
}

/* Checks "rename": an object whose keys are in "keep" and whose values are
 * distinct output names. */
static int check_rename(const json_t *rename, const json_t *keep, char *err, size_t err_size)
{
    const char *key;
    json_t *value;

    if (!json_is_object(rename))
        return plugin_config_fail_type(
            "", "rename", rename, "an object such as {\"temperature\": \"temp_c\"}", err, err_size);
    json_object_foreach((json_t *)rename, key, value)
    {
        bool in_keep = false;
        size_t i;
        json_t *item;

        if (!json_is_string(value) || json_string_length(value) == 0)
            return plugin_config_fail_type("rename", key, value, "a non-empty string", err,
                                           err_size);
        json_array_foreach(keep, i, item)
        {
            in_keep = in_keep || strcmp(json_string_value(item), key) == 0;
        }
        if (!in_keep) {
            snprintf(err, err_size,
                     "invalid key \"rename.%s\": expected one of the fields in \"keep\"", key);
            return -1;
        }
    }
    return 0;
}

/* Rejects two kept fields that would share one output name. */
static int check_output_names(const struct select_fields *self, char *err, size_t err_size)
{
    for (size_t i = 0; i < self->count; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(self->fields[i].name, self->fields[j].name) == 0) {
                snprintf(err, err_size,
                         "invalid value for \"rename\": \"%s\" and \"%s\" would both be "
                         "written as \"%s\"",
                         self->fields[j].path, self->fields[i].path, self->fields[i].name);
                return -1;
            }
        }
    }
    return 0;
}

/* Copies the checked "keep" and "rename" into @self. */
static int store_fields(struct select_fields *self, const json_t *keep, const json_t *rename)
{
    size_t i;
    json_t *item;

    self->fields = calloc(json_array_size(keep), sizeof(*self->fields));
    if (self->fields == NULL)
        return -1;
    json_array_foreach(keep, i, item)
    {
        struct kept_field *field = &self->fields[self->count];
        const char *path = json_string_value(item);
        json_t *new_name = json_object_get(rename, path);

        field->path = strdup(path);
        if (field->path == NULL)
            return -1;
        self->count++;
        if (new_name != NULL) {
            field->rename = strdup(json_string_value(new_name));
            if (field->rename == NULL)
                return -1;
        }
        field->name = field->rename != NULL ? field->rename : field->path;
    }
    return 0;
}

static int select_fields_init(const struct tg_host *host, struct tg_instance *instance,
                              const char *config_json, void **state, char *err, size_t err_size)
{
    static const char *const keys[] = {"keep", "rename", "drop_if_empty", NULL};
    struct select_fields *self;
    json_t *config;
    json_t *keep;
    json_t *rename;
    bool drop_if_empty = false;
    int rc = -1;

    (void)instance;
    *state = NULL;
    if (plugin_config_load(config_json, &config, err, err_size) != 0)
        return -1;

    if (plugin_config_check_keys(config, "", keys, err, err_size) != 0 ||
        plugin_config_require(config, "", "keep", "an array of field names", err, err_size) != 0 ||
        plugin_config_bool(config, "", "drop_if_empty", &drop_if_empty, err, err_size) != 0)
        goto out;
    keep = json_object_get(config, "keep");
    rename = json_object_get(config, "rename");
    if (check_keep(keep, err, err_size) != 0)
        goto out;
    if (rename != NULL && check_rename(rename, keep, err, err_size) != 0)
        goto out;

    self = calloc(1, sizeof(*self));
    *state = self;
    if (self == NULL || store_fields(self, keep, rename) != 0) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    self->host = host;
    self->drop_if_empty = drop_if_empty;
    if (check_output_names(self, err, err_size) != 0)
        goto out;
    rc = 0;

out:
    json_decref(config);
    return rc;
}

static enum tg_result select_fields_transform(void *state, const struct tg_message *message,
                                              struct tg_call *call)
{
    struct select_fields *self = state;
    json_t *root = plugin_json_parse_object(message);
    json_t *output = NULL;
    enum tg_result result = TG_PASS;

    if (root == NULL)
        return TG_PASS;

    output = json_object();
    if (output == NULL)
        goto out_memory;
    for (size_t i = 0; i < self->count; i++) {
        json_t *value = plugin_json_lookup(root, self->fields[i].path, NULL, NULL);

        if (value != NULL && json_object_set(output, self->fields[i].name, value) != 0)
            goto out_memory;
    }

    if (json_object_size(output) == 0 && self->drop_if_empty)
        result = TG_DROP;
    else if (plugin_json_replace(self->host, call, output) != 0)
        result = TG_ERROR;
    goto out;

out_memory:
    self->host->fail(call, "out of memory");
    result = TG_ERROR;
out:
    json_decref(output);
    json_decref(root);
    return result;
}

static const struct tg_plugin select_fields_plugin = {
    .abi_version = TIDEGATE_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct tg_plugin),
    .name = "select_fields",
    .version = "1.0.0",
    .description = "Keeps and renames chosen fields of JSON object payloads.",
    .init = select_fields_init,
    .transform = select_fields_transform,
    .cleanup = select_fields_cleanup,
};

__attribute__((visibility("default"))) const struct tg_plugin *tidegate_plugin_entry(void);

const struct tg_plugin *tidegate_plugin_entry(void)
{
    return &select_fields_plugin;
}
