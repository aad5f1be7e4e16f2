/*
 * The event loop's mailbox: other threads (Paho's callbacks, the HTTP
 * server's upgrade handler) post items here, and an eventfd wakes the loop,
 * which drains the mailbox in order on its own thread.
 *
 * Ownership: mailbox_post adopts the item and everything it points to; the
 * loop frees each item it takes with mail_free.
 */
#ifndef TIDEGATE_MAILBOX_H
#define TIDEGATE_MAILBOX_H

#include "auth.h"
#include "msg.h"
#include "store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_UpgradeResponseHandle;
struct sse_conn;

enum mail_kind {
    MAIL_MESSAGES = 1,     /* messages from the broker, stored, in seq order */
    MAIL_UPGRADE = 2,      /* a socket upgraded to WebSocket */
    MAIL_PUBLISH_DONE = 3, /* the broker's reply to a client's publish */
    MAIL_HISTORY = 4,      /* the history part of a subscription */
    MAIL_SSE_OPEN = 5,     /* a new Server-Sent Events stream */
};

struct mail {
    struct mail *next;
    enum mail_kind kind;
    union {
        struct {
            struct msg **items; /* owned, with one reference each */
            size_t count;
        } messages;
        struct {
            int fd;
            struct MHD_UpgradeResponseHandle *urh;
            char *extra;
            size_t extra_len;
            char peer[64];
            char address[64];             /* the peer's IP address alone */
            struct principal *principal;  /* NULL until the client sends auth */
        } upgrade;
        struct {
            uint64_t session_id;
            char *request_id_json; /* the request's "id" as JSON text, or NULL */
            bool ok;
            char *error;           /* why it failed, when !ok */
        } publish_done;
        struct {
            uint64_t session_id;
            char *request_id_json;
            char *filter;
            enum history_kind kind;
            bool failed;
            struct store_history result;
        } history;
        struct {
            struct sse_conn *sse;  /* the loop's reference */
            char *filter;
            struct history_request history;
            char peer[64];
            struct principal *principal;
        } sse_open;
    } u;
};

struct mailbox {
    pthread_mutex_t lock;
    pthread_cond_t drained;
    struct mail *head;
    struct mail *tail;
    size_t pending_messages;
    size_t max_pending_messages;
    bool closed; /* the loop no longer drains: posts are freed at once */
    int eventfd;
};

/* Returns false when the eventfd could not be made. */
bool mailbox_init(struct mailbox *mb, size_t max_pending_messages);
void mailbox_cleanup(struct mailbox *mb);

/*
 * Posts @m. For MAIL_MESSAGES, blocks while max_pending_messages are waiting,
 * so a loop that falls behind slows the broker's delivery (the broker keeps
 * what is not acknowledged) instead of growing memory without bound.
 */
void mailbox_post(struct mailbox *mb, struct mail *m);

/* Marks the mailbox as no longer drained, at shutdown: later posts are
 * freed at once instead of waiting for room. */
void mailbox_close(struct mailbox *mb);

/* Takes every pending item, oldest first, and clears the eventfd. */
struct mail *mailbox_take_all(struct mailbox *mb);

void mail_free(struct mail *m);

#endif
