#include "plugin_config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Writes a printf-style message into @err and returns -1. */
__attribute__((format(printf, 3, 4))) static int config_fail(char *err, size_t err_size,
                                                             const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    vsnprintf(err, err_size, fmt, args);
    va_end(args);
    return -1;
}

/* Formats @path.@key, or @key alone at the top level, into @out. */
static const char *config_key_path(const char *path, const char *key, char *out, size_t size)
{
    if (path[0] == '\0')
        snprintf(out, size, "%s", key);
    else
        snprintf(out, size, "%s.%s", path, key);
    return out;
}

const char *plugin_config_type_name(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        return json_object_size(value) == 0 ? "an empty object" : "an object";
    case JSON_ARRAY:
        return json_array_size(value) == 0 ? "an empty array" : "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "an unknown type";
}

int plugin_config_fail_type(const char *path, const char *key, const json_t *found,
                            const char *expected, char *err, size_t err_size)
{
    char name[256];

    return config_fail(err, err_size, "invalid value for \"%s\": expected %s, got %s",
                       config_key_path(path, key, name, sizeof(name)), expected,
                       plugin_config_type_name(found));
}

int plugin_config_load(const char *config_json, json_t **root, char *err, size_t err_size)
{
    json_error_t error;
    json_t *parsed = json_loads(config_json, JSON_REJECT_DUPLICATES, &error);

    *root = NULL;
    if (parsed == NULL)
        return config_fail(err, err_size, "invalid config JSON at line %d, column %d: %s",
                           error.line, error.column, error.text);
    if (!json_is_object(parsed)) {
        config_fail(err, err_size, "invalid config: expected an object, got %s",
                    plugin_config_type_name(parsed));
        json_decref(parsed);
        return -1;
    }
    *root = parsed;
    return 0;
}

int plugin_config_check_keys(const json_t *object, const char *path, const char *const allowed[],
                             char *err, size_t err_size)
{
    const char *key;
    json_t *value;

    json_object_foreach((json_t *)object, key, value)
    {
        bool known = false;
        char list[256] = "";
        char name[256];
        size_t used = 0;

        for (size_t i = 0; allowed[i] != NULL && !known; i++)
            known = strcmp(key, allowed[i]) == 0;
        if (known)
            continue;

        for (size_t i = 0; allowed[i] != NULL && used < sizeof(list); i++)
            used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i > 0 ? ", " : "",
                                     allowed[i]);
        return config_fail(err, err_size, "unknown key \"%s\": expected one of %s",
                           config_key_path(path, key, name, sizeof(name)), list);
    }
    return 0;
}

int plugin_config_require(const json_t *object, const char *path, const char *key,
                          const char *expected, char *err, size_t err_size)
{
    char name[256];

    if (json_object_get(object, key) != NULL)
        return 0;
    return config_fail(err, err_size, "missing key \"%s\": expected %s",
                       config_key_path(path, key, name, sizeof(name)), expected);
}

int plugin_config_number(const json_t *object, const char *path, const char *key, double min,
                         double max, double *value, char *err, size_t err_size)
{
    json_t *found = json_object_get(object, key);
    char expected[128];
    char name[256];
    double number;

    if (found == NULL)
        return 0;

    if (min == -INFINITY && max == INFINITY)
        snprintf(expected, sizeof(expected), "a number");
    else if (max == INFINITY)
        snprintf(expected, sizeof(expected), "a number of at least %g", min);
    else
        snprintf(expected, sizeof(expected), "a number from %g to %g", min, max);
    if (!json_is_number(found))
        return plugin_config_fail_type(path, key, found, expected, err, err_size);

    number = json_number_value(found);
    if (number < min || number > max)
        return config_fail(err, err_size, "invalid value %g for \"%s\": expected %s", number,
                           config_key_path(path, key, name, sizeof(name)), expected);
    *value = number;
    return 0;
}

int plugin_config_integer(const json_t *object, const char *path, const char *key, long long min,
                          long long max, long long *value, char *err, size_t err_size)
{
    json_t *found = json_object_get(object, key);
    char expected[128];
    char name[256];
    long long number;

    if (found == NULL)
        return 0;

    snprintf(expected, sizeof(expected), "an integer from %lld to %lld", min, max);
    if (!json_is_integer(found))
        return plugin_config_fail_type(path, key, found, expected, err, err_size);

    number = json_integer_value(found);
    if (number < min || number > max)
        return config_fail(err, err_size, "invalid value %lld for \"%s\": expected %s", number,
                           config_key_path(path, key, name, sizeof(name)), expected);
    *value = number;
    return 0;
}

int plugin_config_bool(const json_t *object, const char *path, const char *key, bool *value,
                       char *err, size_t err_size)
{
    json_t *found = json_object_get(object, key);

    if (found == NULL)
        return 0;
    if (!json_is_boolean(found))
        return plugin_config_fail_type(path, key, found, "true or false", err, err_size);
    *value = json_is_true(found);
    return 0;
}

int plugin_config_string(const json_t *object, const char *path, const char *key,
                         const char **value, char *err, size_t err_size)
{
    json_t *found = json_object_get(object, key);
    char name[256];

    if (found == NULL)
        return 0;
    if (!json_is_string(found))
        return plugin_config_fail_type(path, key, found, "a string", err, err_size);
    if (json_string_length(found) == 0)
        return config_fail(err, err_size, "invalid value for \"%s\": expected a non-empty string",
                           config_key_path(path, key, name, sizeof(name)));
    *value = json_string_value(found);
    return 0;
}
