/*
 * Process-wide counters and gauges, rendered in the Prometheus text format
 * on GET /metrics. Updated with relaxed atomics from any thread.
 */
#ifndef TIDEGATE_METRICS_H
#define TIDEGATE_METRICS_H

#include "buf.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct metrics {
    atomic_uint_fast64_t messages_received;   /* from the broker */
    atomic_uint_fast64_t messages_rejected;   /* from the broker, with an invalid topic */
    atomic_uint_fast64_t messages_delivered;  /* message frames queued to clients */
    atomic_uint_fast64_t ws_connections_total;
    atomic_int_fast64_t clients_connected;
    atomic_int_fast64_t ws_parsers;           /* WebSocket connections with a wslay context */
    atomic_uint_fast64_t slow_client_disconnects;
    atomic_uint_fast64_t client_errors;       /* error replies sent to clients */
    atomic_uint_fast64_t publish_requests;
    atomic_uint_fast64_t publish_failures;
    atomic_int_fast64_t subscriptions;
    atomic_int_fast64_t broker_connected;     /* 0 or 1 */
    atomic_uint_fast64_t http_requests;
    atomic_uint_fast64_t messages_stored;
    atomic_uint_fast64_t messages_not_stored; /* delivered live while the store failed */
    atomic_uint_fast64_t store_errors;
    atomic_uint_fast64_t duplicates_dropped;  /* broker redeliveries already stored */
    atomic_int_fast64_t store_healthy;        /* 0 or 1 */
    atomic_uint_fast64_t history_requests;
    atomic_uint_fast64_t history_messages;
    atomic_int_fast64_t sse_streams;
    atomic_uint_fast64_t auth_failures;     /* credentials rejected */
    atomic_uint_fast64_t forbidden;         /* requests outside a client's permissions */
    atomic_uint_fast64_t limit_rejections;  /* requests or connections over a limit */
};

extern struct metrics metrics;

static inline void metrics_add(atomic_uint_fast64_t *counter, uint64_t n)
{
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

static inline void metrics_gauge_add(atomic_int_fast64_t *gauge, int64_t n)
{
    atomic_fetch_add_explicit(gauge, n, memory_order_relaxed);
}

void metrics_set_broker_connected(bool connected);
bool metrics_broker_connected(void);
void metrics_set_store_healthy(bool healthy);
bool metrics_store_healthy(void);

/* Sets a function that appends more metrics after the built-in ones (the
 * plugin chain's); NULL removes it. */
void metrics_set_extra(void (*render)(void *arg, struct buf *out), void *arg);

/* Appends every metric in the Prometheus text exposition format. */
void metrics_render(struct buf *out);

#endif
