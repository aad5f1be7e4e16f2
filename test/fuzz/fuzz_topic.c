/* libFuzzer target: topic names and filters. The input is split at the
 * first newline into a filter and a topic; whenever both are valid, the
 * subscription tree must agree with topic_matches. */
#include "hub.h"
#include "topic.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int delivered;

static void count(struct hub_subscriber *subscriber, void *arg)
{
    delivered++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t filter_len = nl ? (size_t)(nl - data) : size;
    size_t topic_len = nl ? size - filter_len - 1 : 0;
    char *filter = strndup((const char *)data, filter_len);
    char *topic = strndup(nl ? (const char *)nl + 1 : "", topic_len);
    bool filter_ok = topic_check_filter((const char *)data, filter_len) == NULL;
    bool topic_ok = nl && topic_check_name((const char *)nl + 1, topic_len) == NULL;

    if (filter_ok && topic_ok && strlen(filter) == filter_len && strlen(topic) == topic_len) {
        struct hub *hub = hub_create();
        struct hub_subscriber subscriber = {0};
        struct hub_sub *sub = hub_subscribe(hub, &subscriber, filter);

        delivered = 0;
        hub_match(hub, topic, 1, count, NULL);
        if ((delivered == 1) != topic_matches(filter, topic))
            abort();
        hub_unsubscribe(hub, sub);
        hub_destroy(hub);
    }
    free(filter);
    free(topic);
    return 0;
}
