/*
 * Ingest: the MQTT side of the gateway, on the Eclipse Paho async client.
 *
 * Connects with MQTT 5 (falling back to 3.1.1 when the broker rejects the
 * protocol version) and a persistent session, subscribes to the configured
 * filters at the configured QoS, resubscribes after every reconnect, and
 * reconnects with capped exponential backoff.
 *
 * Threads: Paho calls back on its own threads. A message's PUBACK goes out
 * when the message-arrived callback returns, so that callback copies the
 * message and submits it to the pipeline, which in commit mode returns once
 * the message is stored. ingest_tick, ingest_start
 * and ingest_stop run on the event loop thread; ingest_publish may be called
 * from any thread.
 */
#ifndef TIDEGATE_INGEST_H
#define TIDEGATE_INGEST_H

#include "config.h"
#include "mailbox.h"
#include "pipeline.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ingest;

enum ingest_publish_result {
    INGEST_PUBLISH_QUEUED = 0,
    INGEST_PUBLISH_UNAVAILABLE = 1, /* the broker is not connected */
    INGEST_PUBLISH_FAILED = 2,
};

/* Borrows @cfg, @mb (for publish results) and @pipeline (for messages) for
 * the lifetime of the ingest. Returns NULL with a logged reason when the
 * Paho client could not be created. */
struct ingest *ingest_create(const struct config *cfg, struct mailbox *mb,
                             struct pipeline *pipeline);
void ingest_destroy(struct ingest *in);

/* Makes the first connection attempt; failures are retried by ingest_tick. */
void ingest_start(struct ingest *in);

/* Starts a reconnect attempt when one is due. */
void ingest_tick(struct ingest *in, int64_t now_ms);

bool ingest_is_connected(const struct ingest *in);

/*
 * Publishes to the broker. The outcome arrives later as a MAIL_PUBLISH_DONE
 * for @session_id carrying a copy of @request_id_json (may be NULL).
 */
enum ingest_publish_result ingest_publish(struct ingest *in, const char *topic,
                                          const void *payload, size_t len, int qos, bool retain,
                                          uint64_t session_id, const char *request_id_json);

/* Disconnects cleanly, waiting at most @timeout_ms. */
void ingest_stop(struct ingest *in, int timeout_ms);

#endif
