#include "mailbox.h"
#include "sse.h"

#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

bool mailbox_init(struct mailbox *mb, size_t max_pending_messages)
{
    mb->head = NULL;
    mb->tail = NULL;
    mb->pending_messages = 0;
    mb->max_pending_messages = max_pending_messages;
    mb->eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mb->eventfd < 0)
        return false;
    pthread_mutex_init(&mb->lock, NULL);
    pthread_cond_init(&mb->drained, NULL);
    return true;
}

void mailbox_cleanup(struct mailbox *mb)
{
    struct mail *m = mailbox_take_all(mb);

    while (m != NULL) {
        struct mail *next = m->next;
        mail_free(m);
        m = next;
    }
    close(mb->eventfd);
    pthread_mutex_destroy(&mb->lock);
    pthread_cond_destroy(&mb->drained);
}

void mailbox_post(struct mailbox *mb, struct mail *m)
{
    uint64_t one = 1;
    bool was_empty;

    m->next = NULL;
    pthread_mutex_lock(&mb->lock);
    if (mb->closed) {
        pthread_mutex_unlock(&mb->lock);
        mail_free(m);
        return;
    }
    if (m->kind == MAIL_MESSAGES) {
        while (mb->pending_messages >= mb->max_pending_messages && !mb->closed)
            pthread_cond_wait(&mb->drained, &mb->lock);
        mb->pending_messages += m->u.messages.count;
    }
    was_empty = mb->head == NULL;
    if (mb->tail != NULL)
        mb->tail->next = m;
    else
        mb->head = m;
    mb->tail = m;
    pthread_mutex_unlock(&mb->lock);

    /* One wake-up per batch: the loop takes everything at once. */
    if (was_empty) {
        ssize_t n = write(mb->eventfd, &one, sizeof(one));
        (void)n;
    }
}

void mailbox_close(struct mailbox *mb)
{
    pthread_mutex_lock(&mb->lock);
    mb->closed = true;
    pthread_cond_broadcast(&mb->drained);
    pthread_mutex_unlock(&mb->lock);
}

struct mail *mailbox_take_all(struct mailbox *mb)
{
    uint64_t count;
    struct mail *all;
    ssize_t n = read(mb->eventfd, &count, sizeof(count));

    (void)n;
    pthread_mutex_lock(&mb->lock);
    all = mb->head;
    mb->head = NULL;
    mb->tail = NULL;
    if (mb->pending_messages > 0) {
        mb->pending_messages = 0;
        pthread_cond_broadcast(&mb->drained);
    }
    pthread_mutex_unlock(&mb->lock);
    return all;
}

void mail_free(struct mail *m)
{
    if (m == NULL)
        return;
    switch (m->kind) {
    case MAIL_MESSAGES:
        for (size_t i = 0; i < m->u.messages.count; i++)
            msg_unref(m->u.messages.items[i]);
        free(m->u.messages.items);
        break;
    case MAIL_UPGRADE:
        free(m->u.upgrade.extra);
        if (m->u.upgrade.principal != NULL)
            principal_cleanup(m->u.upgrade.principal);
        free(m->u.upgrade.principal);
        break;
    case MAIL_PUBLISH_DONE:
        free(m->u.publish_done.request_id_json);
        free(m->u.publish_done.error);
        break;
    case MAIL_SSE_OPEN:
        if (m->u.sse_open.sse != NULL) {
            sse_conn_close(m->u.sse_open.sse, "gateway shutting down");
            sse_conn_destroy(m->u.sse_open.sse);
        }
        free(m->u.sse_open.filter);
        if (m->u.sse_open.principal != NULL)
            principal_cleanup(m->u.sse_open.principal);
        free(m->u.sse_open.principal);
        break;
    case MAIL_HISTORY:
        free(m->u.history.request_id_json);
        free(m->u.history.filter);
        store_history_cleanup(&m->u.history.result);
        break;
    }
    free(m);
}
