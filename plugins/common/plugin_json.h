/*
 * JSON payload helpers shared by the example plugins: parse a message's
 * payload, find a field by name or dotted path, and hand a reshaped
 * payload to the host.
 */
#ifndef TIDEGATE_PLUGIN_JSON_H
#define TIDEGATE_PLUGIN_JSON_H

#include <jansson.h>
#include <tidegate/plugin.h>

/*
 * Flags for writing payloads back. Reals get 15 significant digits
 * (DBL_DIG), so a value that arrived with at most 15 digits is written as
 * it arrived, and 22 * 1.8 + 32 is written as 71.6 and not as
 * 71.599999999999994.
 */
#define PLUGIN_JSON_DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/* Parses the payload of @message. Returns a new reference to the object,
 * or NULL when the payload is not a JSON object (an array, a bare value,
 * invalid JSON or not JSON at all) or holds an integer beyond 64 bits,
 * which jansson cannot parse. */
json_t *plugin_json_parse_object(const struct tg_message *message);

/*
 * Finds the field @path in @root. @path is first looked up as a top-level
 * name, then as a dotted path through nested objects ("sensor.temp" is
 * root["sensor"]["temp"]). Returns the borrowed value or NULL. When
 * @parent and @leaf are not NULL and the field is found, they receive the
 * object holding it and its key inside @path, for json_object_set.
 */
json_t *plugin_json_lookup(json_t *root, const char *path, json_t **parent, const char **leaf);

/*
 * Writes @root as the new payload of the message of @call through
 * host->replace. The host copies the text, which is freed here. On failure
 * records the reason with host->fail and returns -1; the message is then
 * unchanged.
 */
int plugin_json_replace(const struct tg_host *host, struct tg_call *call, const json_t *root);

/*
 * Emits @root as a new message on @topic through host->emit. Same failure
 * rule as plugin_json_replace.
 */
int plugin_json_emit(const struct tg_host *host, struct tg_call *call, const char *topic,
                     const json_t *root, int qos, bool retain);

#endif
