#include "metrics.h"

#include <stdio.h>

#include <pthread.h>

struct metrics metrics;

static pthread_mutex_t extra_lock = PTHREAD_MUTEX_INITIALIZER;
static void (*extra_render)(void *arg, struct buf *out);
static void *extra_arg;

void metrics_set_extra(void (*render)(void *arg, struct buf *out), void *arg)
{
    pthread_mutex_lock(&extra_lock);
    extra_render = render;
    extra_arg = arg;
    pthread_mutex_unlock(&extra_lock);
}

void metrics_set_broker_connected(bool connected)
{
    atomic_store_explicit(&metrics.broker_connected, connected ? 1 : 0, memory_order_relaxed);
}

bool metrics_broker_connected(void)
{
    return atomic_load_explicit(&metrics.broker_connected, memory_order_relaxed) != 0;
}

void metrics_set_store_healthy(bool healthy)
{
    atomic_store_explicit(&metrics.store_healthy, healthy ? 1 : 0, memory_order_relaxed);
}

bool metrics_store_healthy(void)
{
    return atomic_load_explicit(&metrics.store_healthy, memory_order_relaxed) != 0;
}

static void render_one(struct buf *out, const char *name, const char *type, const char *help,
                       long long value)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name,
                     type, name, value);

    buf_append(out, line, (size_t)n);
}

#define COUNTER(name, field, help)                                                                 \
    render_one(out, name, "counter", help, (long long)atomic_load(&metrics.field))
#define GAUGE(name, field, help)                                                                   \
    render_one(out, name, "gauge", help, (long long)atomic_load(&metrics.field))

void metrics_render(struct buf *out)
{
    COUNTER("tidegate_messages_received_total", messages_received,
            "Messages received from the MQTT broker.");
    COUNTER("tidegate_messages_rejected_total", messages_rejected,
            "Messages from the broker dropped because their topic name was invalid.");
    COUNTER("tidegate_messages_delivered_total", messages_delivered,
            "Message frames queued to WebSocket clients.");
    COUNTER("tidegate_ws_connections_total", ws_connections_total,
            "WebSocket connections accepted.");
    GAUGE("tidegate_clients_connected", clients_connected, "WebSocket clients connected now.");
    GAUGE("tidegate_ws_parsers", ws_parsers,
          "WebSocket clients with a frame parser now. Idle clients have none.");
    COUNTER("tidegate_slow_client_disconnects_total", slow_client_disconnects,
            "Clients closed because their send queue passed send_queue_bytes.");
    COUNTER("tidegate_client_errors_total", client_errors, "Error replies sent to clients.");
    COUNTER("tidegate_publish_requests_total", publish_requests,
            "Publish requests from clients that passed the checks.");
    COUNTER("tidegate_publish_failures_total", publish_failures,
            "Client publishes the broker did not accept.");
    GAUGE("tidegate_subscriptions", subscriptions, "Client subscriptions held now.");
    GAUGE("tidegate_broker_connected", broker_connected,
          "1 when connected to the MQTT broker, 0 otherwise.");
    COUNTER("tidegate_http_requests_total", http_requests, "HTTP requests received.");
    COUNTER("tidegate_messages_stored_total", messages_stored,
            "Messages committed to the window store.");
    COUNTER("tidegate_messages_not_stored_total", messages_not_stored,
            "Messages delivered live but not stored because the store failed.");
    COUNTER("tidegate_store_errors_total", store_errors, "Store batches that failed to commit.");
    COUNTER("tidegate_duplicates_dropped_total", duplicates_dropped,
            "Broker redeliveries dropped because they were already stored.");
    GAUGE("tidegate_store_healthy", store_healthy,
          "1 when the last store commit succeeded, 0 while the store is degraded.");
    COUNTER("tidegate_history_requests_total", history_requests,
            "History requests served (WebSocket and HTTP).");
    COUNTER("tidegate_history_messages_total", history_messages,
            "History messages sent to clients.");
    GAUGE("tidegate_sse_streams", sse_streams, "Server-Sent Events streams open now.");
    COUNTER("tidegate_auth_failures_total", auth_failures,
            "Tokens and API keys rejected (WebSocket and HTTP).");
    COUNTER("tidegate_forbidden_total", forbidden,
            "Subscriptions, publishes and reads refused by the client's permissions.");
    COUNTER("tidegate_limit_rejections_total", limit_rejections,
            "Requests and connections refused by a limit.");

    pthread_mutex_lock(&extra_lock);
    if (extra_render != NULL)
        extra_render(extra_arg, out);
    pthread_mutex_unlock(&extra_lock);
}
