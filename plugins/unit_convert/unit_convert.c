/*
 * unit_convert: rescales numeric fields of JSON payloads, value * scale +
 * offset, such as Celsius to Fahrenheit or millivolts to volts.
 *
 * Config:
 *
 *     {"fields": {"temperature": {"scale": 1.8, "offset": 32},
 *                 "voltage": {"scale": 0.001}}}
 *
 * "fields" maps a field name, or a dotted path such as "sensor.temp", to
 * its "scale" (default 1) and "offset" (default 0). A converted value is
 * always written as a real number. A payload that is not a JSON object, a
 * missing field and a field that is not a number are passed on unchanged.
 *
 * Build (the gateway's meson build does this):
 *
 *     cc -shared -fPIC -Iinclude -Iplugins/common -o unit_convert.so \
 *         plugins/unit_convert/unit_convert.c plugins/common/plugin_config.c \
 *         plugins/common/plugin_json.c -ljansson
 */
#include <tidegate/plugin.h>

#include "plugin_config.h"
#include "plugin_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct conversion {
    char *path;
    double scale;
    double offset;
};

struct unit_convert {
    const struct tg_host *host;
    struct conversion *conversions;
    size_t count;
};

static void unit_convert_cleanup(void *state)
{
    struct unit_convert *self = state;

    if (self == NULL)
        return;
    for (size_t i = 0; i < self->count; i++)
        free(self->conversions[i].path);
    free(self->conversions);
    free(self);
}

/* Reads one entry of "fields" into @conversion. */
static int parse_conversion(const char *name, const json_t *spec, struct conversion *conversion,
                            char *err, size_t err_size)
{
    static const char *const keys[] = {"scale", "offset", NULL};
    char path[256];

    snprintf(path, sizeof(path), "fields.%s", name);
    if (!json_is_object(spec))
        return plugin_config_fail_type("fields", name, spec,
                                       "an object such as {\"scale\": 1.8, \"offset\": 32}", err,
                                       err_size);
    if (plugin_config_check_keys(spec, path, keys, err, err_size) != 0)
        return -1;

    conversion->scale = 1.0;
    conversion->offset = 0.0;
    if (plugin_config_number(spec, path, "scale", -INFINITY, INFINITY, &conversion->scale, err,
                             err_size) != 0 ||
        plugin_config_number(spec, path, "offset", -INFINITY, INFINITY, &conversion->offset, err,
                             err_size) != 0)
        return -1;

    conversion->path = strdup(name);
    if (conversion->path == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    return 0;
}

static int unit_convert_init(const struct tg_host *host, struct tg_instance *instance,
                             const char *config_json, void **state, char *err, size_t err_size)
{
    static const char *const keys[] = {"fields", NULL};
    struct unit_convert *self;
    json_t *config;
    json_t *fields;
    const char *name;
    json_t *spec;
    int rc = -1;

    (void)instance;
    *state = NULL;
    if (plugin_config_load(config_json, &config, err, err_size) != 0)
        return -1;
    if (plugin_config_check_keys(config, "", keys, err, err_size) != 0 ||
        plugin_config_require(config, "", "fields", "an object of field names", err, err_size) != 0)
        goto out_config;

    fields = json_object_get(config, "fields");
    if (!json_is_object(fields) || json_object_size(fields) == 0) {
        plugin_config_fail_type("", "fields", fields,
                                "a non-empty object such as {\"temperature\": {\"scale\": 1.8}}",
                                err, err_size);
        goto out_config;
    }

    self = calloc(1, sizeof(*self));
    *state = self;
    if (self != NULL) {
        self->host = host;
        self->conversions = calloc(json_object_size(fields), sizeof(*self->conversions));
    }
    if (self == NULL || self->conversions == NULL) {
        snprintf(err, err_size, "out of memory");
        goto out_config;
    }

    json_object_foreach(fields, name, spec)
    {
        if (parse_conversion(name, spec, &self->conversions[self->count], err, err_size) != 0)
            goto out_config;
        self->count++;
    }
    rc = 0;

out_config:
    json_decref(config);
    return rc;
}

/* Converts the fields present in @root. Returns the number converted, or
 * -1 after host->fail when a result is not finite. */
static int convert_fields(struct unit_convert *self, json_t *root, struct tg_call *call)
{
    int converted = 0;

    for (size_t i = 0; i < self->count; i++) {
        const struct conversion *conversion = &self->conversions[i];
        json_t *parent;
        const char *leaf;
        json_t *value = plugin_json_lookup(root, conversion->path, &parent, &leaf);
        double result;
        char reason[320];

        if (!json_is_number(value))
            continue;

        result = json_number_value(value) * conversion->scale + conversion->offset;
        if (!isfinite(result)) {
            snprintf(reason, sizeof(reason), "field \"%s\": converted value is out of range",
                     conversion->path);
            self->host->fail(call, reason);
            return -1;
        }
        if (json_object_set_new(parent, leaf, json_real(result)) != 0) {
            self->host->fail(call, "out of memory");
            return -1;
        }
        converted++;
    }
    return converted;
}

static enum tg_result unit_convert_transform(void *state, const struct tg_message *message,
                                             struct tg_call *call)
{
    struct unit_convert *self = state;
    json_t *root = plugin_json_parse_object(message);
    enum tg_result result = TG_PASS;
    int converted;

    if (root == NULL)
        return TG_PASS;

    converted = convert_fields(self, root, call);
    if (converted < 0)
        result = TG_ERROR;
    else if (converted > 0 && plugin_json_replace(self->host, call, root) != 0)
        result = TG_ERROR;

    json_decref(root);
    return result;
}

static const struct tg_plugin unit_convert_plugin = {
    .abi_version = TIDEGATE_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct tg_plugin),
    .name = "unit_convert",
    .version = "1.0.0",
    .description = "Rescales numeric JSON fields: value * scale + offset.",
    .init = unit_convert_init,
    .transform = unit_convert_transform,
    .cleanup = unit_convert_cleanup,
};

__attribute__((visibility("default"))) const struct tg_plugin *tidegate_plugin_entry(void);

const struct tg_plugin *tidegate_plugin_entry(void)
{
    return &unit_convert_plugin;
}
