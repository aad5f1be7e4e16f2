/*
 * tidegate-bench-chain: the per-message cost of the plugin chain with each
 * example plugin, measured by running messages through the real chain in
 * process (no broker, no store), so only the chain's own cost shows.
 *
 * Usage: tidegate-bench-chain PLUGIN_DIR [MESSAGES] [REPEATS]
 * Prints one JSON line per case: median ns per message over the repeats.
 */
#include "chain.h"
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bench_case {
    const char *name;
    const char *plugins; /* the "plugins" array, "" for an empty chain */
    const char *topic;
    const char *payload_format; /* printf with one %d (the message index) */
};

static const struct bench_case cases[] = {
    {"empty chain", "", "lab/mote1/telemetry", "{\"temperature\":%d.5,\"humidity\":40.1}"},
    {"unit_convert",
     "[{\"name\":\"f\",\"plugin\":\"unit_convert\",\"config\":{\"fields\":{\"temperature\":"
     "{\"scale\":1.8,\"offset\":32}}}}]",
     "lab/mote1/telemetry", "{\"temperature\":%d.5,\"humidity\":40.1}"},
    {"deadband",
     "[{\"name\":\"d\",\"plugin\":\"deadband\",\"config\":{\"field\":\"temperature\","
     "\"threshold\":0.5,\"max_interval_ms\":60000}}]",
     "lab/mote1/telemetry", "{\"temperature\":%d.5,\"humidity\":40.1}"},
    {"select_fields",
     "[{\"name\":\"s\",\"plugin\":\"select_fields\",\"config\":{\"keep\":[\"temperature\","
     "\"humidity\",\"battery\"],\"rename\":{\"temperature\":\"temp_c\"}}}]",
     "zigbee2mqtt/0x00158d0003587505",
     "{\"battery\":45,\"humidity\":56.84,\"last_seen\":\"2020-11-12T06:58:29.867Z\","
     "\"linkquality\":%d,\"temperature\":26.93,\"voltage\":2905}"},
    {"threshold_alert",
     "[{\"name\":\"t\",\"plugin\":\"threshold_alert\",\"config\":{\"field\":\"temperature\","
     "\"above\":40,\"clear_below\":38,\"alert_topic\":\"alerts/{topic}\"}}]",
     "lab/mote1/telemetry", "{\"temperature\":%d.5,\"humidity\":40.1}"},
    {"geofence",
     "[{\"name\":\"g\",\"plugin\":\"geofence\",\"config\":{\"zones\":[{\"name\":\"ruoholahti\","
     "\"lat\":60.163,\"lon\":24.913,\"radius_m\":400}],\"event_topic\":\"geofence/{topic}\"}}]",
     "transit/device1/position",
     "{\"lat\":60.16%d,\"lon\":24.91,\"accuracy_m\":5,\"time\":\"2016-08-26 09:07:12.809\"}"},
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *plugin_dir = argc > 1 ? argv[1] : "build/plugins";
    int messages = argc > 2 ? atoi(argv[2]) : 100000;
    int repeats = argc > 3 ? atoi(argv[3]) : 5;
    char err[1024];

    log_set_level(LOG_ERROR);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        json_t *plugins = cases[c].plugins[0] ? json_loads(cases[c].plugins, 0, NULL) : NULL;
        struct chain *chain = chain_create(plugins, plugin_dir, err, sizeof(err));
        double per_message[64];
        size_t outputs = 0;

        json_decref(plugins);
        if (chain == NULL) {
            fprintf(stderr, "tidegate-bench-chain: %s: %s\n", cases[c].name, err);
            return 1;
        }
        if (repeats > 64)
            repeats = 64;

        for (int r = 0; r < repeats; r++) {
            int64_t total = 0;
            for (int i = 0; i < messages; i++) {
                char payload[256];
                /* The formats are the constant table above, each with one %d. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
                int len = snprintf(payload, sizeof(payload), cases[c].payload_format, i % 60);
#pragma GCC diagnostic pop
                struct msg *m = msg_create(cases[c].topic, strlen(cases[c].topic), payload,
                                           (size_t)len, 1, false);
                struct msg_list out = {0};
                int64_t started;

                m->ts_ms = 1700000000000 + (int64_t)i * 1000;
                started = now_ns();
                chain_run(chain, m, &out);
                total += now_ns() - started;
                outputs += out.count;
                msg_list_cleanup(&out);
            }
            per_message[r] = (double)total / messages;
        }
        qsort(per_message, (size_t)repeats, sizeof(double), compare_double);
        printf("{\"bench\":\"chain\",\"case\":\"%s\",\"messages\":%d,\"repeats\":%d,"
               "\"median_ns_per_message\":%.0f,\"min_ns\":%.0f,\"max_ns\":%.0f,"
               "\"outputs_per_message\":%.3f}\n",
               cases[c].name, messages, repeats, per_message[repeats / 2], per_message[0],
               per_message[repeats - 1], (double)outputs / ((double)messages * repeats));
        chain_destroy(chain);
    }
    return 0;
}
