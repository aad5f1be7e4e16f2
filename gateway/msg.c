#include "msg.h"

#include <stdlib.h>
#include <string.h>

struct msg *msg_create(const char *topic, size_t topic_len, const void *payload,
                       size_t payload_len, uint8_t qos, bool retain)
{
    struct msg *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;

    m->topic = malloc(topic_len + 1);
    m->payload = malloc(payload_len ? payload_len : 1);
    if (m->topic == NULL || m->payload == NULL)
        goto fail;

    memcpy(m->topic, topic, topic_len);
    m->topic[topic_len] = '\0';
    m->topic_len = topic_len;
    if (payload_len)
        memcpy(m->payload, payload, payload_len);
    m->payload_len = payload_len;
    m->qos = qos;
    m->retain = retain;
    m->encoding = payload_classify(m->payload, payload_len);
    atomic_init(&m->refs, 1);
    return m;

fail:
    free(m->topic);
    free(m->payload);
    free(m);
    return NULL;
}

struct msg *msg_ref(struct msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void msg_unref(struct msg *m)
{
    if (m == NULL)
        return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    frame_unref(m->live_frame);
    free(m->topic);
    free(m->payload);
    free(m);
}

struct frame *frame_ref(struct frame *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void frame_unref(struct frame *f)
{
    if (f == NULL)
        return;
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(f->storage);
    free(f);
}
