/*
 * plugin-run: runs a plugin chain over messages from a file or stdin and
 * prints what comes out, with no broker and no gateway, so plugin authors
 * can test their plugins offline.
 *
 * Input: JSON Lines, one message per line:
 *     {"topic":"lab/1/t","payload":{"temperature":21.5},"qos":1,"retain":false,"received_ms":1700000000000}
 * "payload" is any JSON value: a string is taken as its text, anything
 * else as the JSON text exactly as written. "payload_base64" may replace it
 * for binary payloads. qos, retain and received_ms are optional.
 *
 * Output: one JSON line per message that leaves the chain:
 *     {"topic":..,"encoding":"json"|"utf8"|"base64","payload":..,"qos":..,"retain":..,"emitted":false}
 * Dropped messages print nothing. Logs and a per-instance summary go to
 * stderr.
 */
#include "buf.h"
#include "chain.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "payload.h"
#include "topic.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: plugin-run --config FILE [--plugin-dir DIR] [--input FILE]\n"
            "Runs the plugin chain of a Tidegate config file over JSON Lines of\n"
            "{\"topic\":..,\"payload\":..} (from --input or stdin) and prints the messages\n"
            "that come out as JSON Lines.\n\n"
            "  --config FILE      gateway config file with a \"plugins\" array\n"
            "  --plugin-dir DIR   where plugins named without a path are found\n"
            "                     (overrides plugin_dir of the config file)\n"
            "  --input FILE       read messages from FILE instead of stdin\n"
            "  --log-level LEVEL  error, warn, info or debug (default warn)\n"
            "  --help             print this help\n");
}

/* Parses one input line into a message. Returns NULL with @err set. */
static struct msg *parse_line(const char *line, size_t len, char *err, size_t err_size)
{
    size_t start = 0, end = 0;
    bool raw = payload_find_member((const uint8_t *)line, len, "payload", &start, &end);
    json_error_t jerr;
    struct buf copy;
    json_t *root;
    json_t *topic, *payload, *b64, *qos, *retain, *received;
    uint8_t *bytes = NULL;
    size_t bytes_len = 0;
    struct msg *m = NULL;

    /* Parse with the payload cut out, so numbers jansson cannot hold (such
     * as integers past 64 bits) keep every digit. */
    buf_init(&copy);
    if (raw) {
        buf_append(&copy, line, start);
        buf_append_str(&copy, "null");
        buf_append(&copy, line + end, len - end);
    } else {
        buf_append(&copy, line, len);
    }
    root = json_loadb((const char *)copy.data, copy.len, JSON_REJECT_DUPLICATES, &jerr);
    buf_cleanup(&copy);
    if (root == NULL || !json_is_object(root)) {
        snprintf(err, err_size, "not a JSON object: %s", root ? "" : jerr.text);
        json_decref(root);
        return NULL;
    }

    topic = json_object_get(root, "topic");
    payload = json_object_get(root, "payload");
    b64 = json_object_get(root, "payload_base64");
    qos = json_object_get(root, "qos");
    retain = json_object_get(root, "retain");
    received = json_object_get(root, "received_ms");
    if (!json_is_string(topic) ||
        topic_check_name(json_string_value(topic), json_string_length(topic)) != NULL) {
        snprintf(err, err_size, "'topic' must be a valid MQTT topic name");
        goto done;
    }
    if ((payload == NULL) == (b64 == NULL)) {
        snprintf(err, err_size, "give exactly one of 'payload' and 'payload_base64'");
        goto done;
    }

    if (b64 != NULL) {
        size_t n = json_is_string(b64) ? json_string_length(b64) : 1;
        int decoded;
        bytes = malloc(n + 3);
        decoded = json_is_string(b64) && n % 4 == 0
                      ? EVP_DecodeBlock(bytes, (const unsigned char *)json_string_value(b64),
                                        (int)n)
                      : -1;
        if (bytes == NULL || decoded < 0) {
            snprintf(err, err_size, "'payload_base64' is not valid base64");
            goto done;
        }
        bytes_len = (size_t)decoded;
        if (n >= 1 && json_string_value(b64)[n - 1] == '=')
            bytes_len--;
        if (n >= 2 && json_string_value(b64)[n - 2] == '=')
            bytes_len--;
    } else if (line[start] == '"') {
        json_t *text = json_loadb(line + start, end - start, JSON_DECODE_ANY, NULL);
        bytes_len = json_string_length(text);
        bytes = malloc(bytes_len + 1);
        if (bytes != NULL)
            memcpy(bytes, json_string_value(text), bytes_len);
        json_decref(text);
    } else {
        bytes_len = end - start;
        bytes = malloc(bytes_len + 1);
        if (bytes != NULL)
            memcpy(bytes, line + start, bytes_len);
    }
    if (bytes == NULL) {
        snprintf(err, err_size, "out of memory");
        goto done;
    }

    m = msg_create(json_string_value(topic), json_string_length(topic), bytes, bytes_len,
                   json_is_integer(qos) ? (uint8_t)json_integer_value(qos) : 0,
                   json_is_true(retain));
    if (m != NULL)
        m->ts_ms = json_is_integer(received) ? json_integer_value(received)
                                             : clock_realtime_ms();

done:
    free(bytes);
    json_decref(root);
    return m;
}

static void print_message(const struct msg *m, bool emitted)
{
    struct buf out;

    buf_init(&out);
    buf_append_str(&out, "{\"topic\":");
    buf_append_json_string(&out, m->topic, m->topic_len);
    buf_append_str(&out, ",\"encoding\":\"");
    buf_append_str(&out, payload_encoding_name(m->encoding));
    buf_append_str(&out, "\",\"payload\":");
    if (m->encoding == PAYLOAD_JSON) {
        buf_append(&out, m->payload, m->payload_len);
    } else if (m->encoding == PAYLOAD_UTF8) {
        buf_append_json_string(&out, (const char *)m->payload, m->payload_len);
    } else {
        buf_append_str(&out, "\"");
        buf_append_base64(&out, m->payload, m->payload_len);
        buf_append_str(&out, "\"");
    }
    buf_append_str(&out, ",\"qos\":");
    buf_append_u64(&out, m->qos);
    buf_append_str(&out, m->retain ? ",\"retain\":true" : ",\"retain\":false");
    buf_append_str(&out, emitted ? ",\"emitted\":true}\n" : ",\"emitted\":false}\n");
    fwrite(out.data, 1, out.len, stdout);
    buf_cleanup(&out);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},   {"plugin-dir", required_argument, NULL, 'd'},
        {"input", required_argument, NULL, 'i'},    {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *plugin_dir = NULL, *input_path = NULL;
    struct config cfg;
    struct chain *chain;
    json_error_t jerr;
    json_t *root;
    FILE *input = stdin;
    char err[1024];
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned long line_no = 0, bad_lines = 0;
    enum log_level level = LOG_WARN;
    int c;

    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'd':
            plugin_dir = optarg;
            break;
        case 'i':
            input_path = optarg;
            break;
        case 'l':
            if (!log_parse_level(optarg, &level)) {
                fprintf(stderr, "plugin-run: invalid --log-level '%s': expected error, warn, "
                                "info or debug\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL) {
        fprintf(stderr, "plugin-run: --config FILE is missing: give a config file with a "
                        "\"plugins\" array\n");
        return 2;
    }
    log_set_level(level);

    config_init_defaults(&cfg);
    root = json_load_file(config_path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        fprintf(stderr, "plugin-run: cannot read config file %s: %s (line %d, column %d)\n",
                config_path, jerr.text, jerr.line, jerr.column);
        return 2;
    }
    if (!config_apply_json(&cfg, root, config_path, err, sizeof(err))) {
        fprintf(stderr, "plugin-run: %s\n", err);
        json_decref(root);
        return 2;
    }
    json_decref(root);

    chain = chain_create(cfg.plugins, plugin_dir ? plugin_dir : cfg.plugin_dir, err, sizeof(err));
    if (chain == NULL) {
        fprintf(stderr, "plugin-run: %s: %s\n", config_path, err);
        config_cleanup(&cfg);
        return 2;
    }

    if (input_path != NULL && (input = fopen(input_path, "r")) == NULL) {
        fprintf(stderr, "plugin-run: cannot open input %s\n", input_path);
        chain_destroy(chain);
        config_cleanup(&cfg);
        return 2;
    }

    while ((len = getline(&line, &cap, input)) >= 0) {
        struct msg_list out = {0};
        struct msg *m;
        bool kept;

        line_no++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        m = parse_line(line, (size_t)len, err, sizeof(err));
        if (m == NULL) {
            fprintf(stderr, "plugin-run: line %lu: %s\n", line_no, err);
            bad_lines++;
            continue;
        }
        kept = chain_run(chain, m, &out);
        for (size_t i = 0; i < out.count; i++)
            print_message(out.items[i], !(kept && i == 0));
        msg_list_cleanup(&out);
    }
    fflush(stdout);

    {
        struct buf summary;
        buf_init(&summary);
        chain_render_metrics(chain, &summary);
        /* Only the value lines: one per instance and counter. */
        for (char *p = (char *)summary.data; p && p < (char *)summary.data + summary.len;) {
            char *nl = memchr(p, '\n', (size_t)((char *)summary.data + summary.len - p));
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            if (n > 0 && p[0] != '#')
                fprintf(stderr, "plugin-run: %.*s\n", (int)n, p);
            p = nl ? nl + 1 : NULL;
        }
        buf_cleanup(&summary);
    }

    free(line);
    if (input != stdin)
        fclose(input);
    chain_destroy(chain);
    config_cleanup(&cfg);
    return bad_lines > 0 ? 1 : 0;
}
