/*
 * Messages and encoded frames, both reference-counted and immutable once
 * shared, so one message fanned out to many clients is one buffer.
 *
 * Ownership: msg_create returns a message with one reference, owned by the
 * caller. Every holder that keeps the pointer takes a reference with msg_ref
 * and drops it with msg_unref; the last unref frees it. Frames follow the
 * same rules with frame_ref / frame_unref. References may be taken and
 * dropped on any thread; fields may be written only before the message is
 * shared (before the first msg_ref by another holder).
 */
#ifndef TIDEGATE_MSG_H
#define TIDEGATE_MSG_H

#include "payload.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An encoded WebSocket frame: header and payload in one contiguous block. */
struct frame {
    atomic_uint refs;
    size_t len;
    uint8_t *data;  /* points into storage: the header starts here */
    uint8_t *storage;
};

struct msg {
    atomic_uint refs;
    uint64_t seq;    /* 0 until the sequencer assigns one */
    int64_t ts_ms;   /* arrival time, ms since the Unix epoch */
    uint8_t qos;
    bool retain;
    bool dup;        /* the broker's DUP flag: a redelivery */
    uint16_t mqtt_id; /* the MQTT packet id, for spotting redeliveries */
    enum payload_encoding encoding;
    char *topic;     /* NUL-terminated, valid UTF-8 */
    size_t topic_len;
    uint8_t *payload;
    size_t payload_len;
    struct frame *live_frame; /* the "message" frame, encoded once on first use */
};

/* Copies @topic and @payload. Returns NULL when out of memory. */
struct msg *msg_create(const char *topic, size_t topic_len, const void *payload,
                       size_t payload_len, uint8_t qos, bool retain);
struct msg *msg_ref(struct msg *m);
void msg_unref(struct msg *m);

struct frame *frame_ref(struct frame *f);
void frame_unref(struct frame *f);

#endif
