#include "plugin_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *plugin_json_parse_object(const struct tg_message *message)
{
    json_t *root;

    if (message->payload_len == 0)
        return NULL;

    root = json_loadb((const char *)message->payload, message->payload_len, 0, NULL);
    if (root != NULL && !json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    return root;
}

json_t *plugin_json_lookup(json_t *root, const char *path, json_t **parent, const char **leaf)
{
    json_t *object = root;
    const char *segment = path;
    json_t *value = json_object_get(root, path);

    if (value != NULL) {
        if (parent != NULL)
            *parent = root;
        if (leaf != NULL)
            *leaf = path;
        return value;
    }

    /* Walk the dotted path one segment at a time. A segment of 256 bytes or
     * more is never found. */
    for (;;) {
        const char *dot = strchr(segment, '.');
        char name[256];
        size_t len;

        if (dot == NULL) {
            value = json_object_get(object, segment);
            break;
        }
        len = (size_t)(dot - segment);
        if (len >= sizeof(name))
            return NULL;
        memcpy(name, segment, len);
        name[len] = '\0';
        object = json_object_get(object, name);
        if (!json_is_object(object))
            return NULL;
        segment = dot + 1;
    }

    if (value != NULL) {
        if (parent != NULL)
            *parent = object;
        if (leaf != NULL)
            *leaf = segment;
    }
    return value;
}

int plugin_json_replace(const struct tg_host *host, struct tg_call *call, const json_t *root)
{
    char *text = json_dumps(root, PLUGIN_JSON_DUMP_FLAGS);
    int rc;

    if (text == NULL) {
        host->fail(call, "out of memory while writing the new payload");
        return -1;
    }
    rc = host->replace(call, NULL, text, strlen(text));
    free(text);
    if (rc != 0) {
        host->fail(call, "the host rejected the new payload (size limit passed)");
        return -1;
    }
    return 0;
}

int plugin_json_emit(const struct tg_host *host, struct tg_call *call, const char *topic,
                     const json_t *root, int qos, bool retain)
{
    char *text = json_dumps(root, PLUGIN_JSON_DUMP_FLAGS);
    char reason[512];
    int rc;

    if (text == NULL) {
        host->fail(call, "out of memory while writing an emitted message");
        return -1;
    }
    rc = host->emit(call, topic, text, strlen(text), qos, retain);
    free(text);
    if (rc != 0) {
        snprintf(reason, sizeof(reason),
                 "the host rejected a message on \"%s\" (invalid topic or emit limit passed)",
                 topic);
        host->fail(call, reason);
        return -1;
    }
    return 0;
}
