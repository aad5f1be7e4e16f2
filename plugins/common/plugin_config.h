/*
 * Config validation shared by the example plugins.
 *
 * Every function here writes a message into @err (at most @err_size bytes)
 * and returns -1 when the config is invalid, or returns 0. The message
 * names the key by its path in the instance's "config" object, such as
 * "fields.temperature.scale", and states what is expected. A getter leaves
 * its output untouched when the key is absent, so the caller sets the
 * default first.
 */
#ifndef TIDEGATE_PLUGIN_CONFIG_H
#define TIDEGATE_PLUGIN_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Parses @config_json into *@root, which must be a JSON object. The caller
 * owns *@root and releases it with json_decref. */
int plugin_config_load(const char *config_json, json_t **root, char *err, size_t err_size);

/* Rejects any key of @object not in @allowed, a NULL-terminated list.
 * @path is where @object sits in the config ("" for the top level). */
int plugin_config_check_keys(const json_t *object, const char *path, const char *const allowed[],
                             char *err, size_t err_size);

/* Rejects @object when it lacks @key; @expected describes the value, such
 * as "a number". */
int plugin_config_require(const json_t *object, const char *path, const char *key,
                          const char *expected, char *err, size_t err_size);

/* Reads a number (integer or real) in [@min, @max]. */
int plugin_config_number(const json_t *object, const char *path, const char *key, double min,
                         double max, double *value, char *err, size_t err_size);

/* Reads an integer in [@min, @max]. */
int plugin_config_integer(const json_t *object, const char *path, const char *key, long long min,
                          long long max, long long *value, char *err, size_t err_size);

/* Reads true or false. */
int plugin_config_bool(const json_t *object, const char *path, const char *key, bool *value,
                       char *err, size_t err_size);

/* Reads a non-empty string. *@value is borrowed from @object. */
int plugin_config_string(const json_t *object, const char *path, const char *key,
                         const char **value, char *err, size_t err_size);

/* Writes an "expected" message about the value at @path.@key, naming the
 * JSON type found, and returns -1. For checks the getters cannot make. */
int plugin_config_fail_type(const char *path, const char *key, const json_t *found,
                            const char *expected, char *err, size_t err_size);

/* Returns the JSON type of @value as a noun phrase ("a string", "null"). */
const char *plugin_config_type_name(const json_t *value);

#endif
