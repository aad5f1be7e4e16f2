/*
 * The history worker: a thread with its own read connection to the window
 * store that answers the history part of WebSocket subscriptions, so a
 * large query never stalls ingest or fan-out. Jobs come from the event
 * loop; results go back through the mailbox as MAIL_HISTORY.
 */
#ifndef TIDEGATE_HISTORY_H
#define TIDEGATE_HISTORY_H

#include "config.h"
#include "mailbox.h"
#include "protocol.h"

#include <stdint.h>

struct history_worker;

/* Opens a reader on cfg->db and starts the thread. NULL with a logged
 * reason on failure. Borrows @cfg and @mb. */
struct history_worker *history_create(const struct config *cfg, struct mailbox *mb);
void history_destroy(struct history_worker *w);

/*
 * Queues a query of @req on @filter, up to @upto_seq, for @session_id.
 * Copies @filter and @request_id_json (may be NULL). Returns false when
 * out of memory.
 */
bool history_submit(struct history_worker *w, uint64_t session_id, const char *request_id_json,
                    const char *filter, const struct history_request *req, uint64_t upto_seq);

#endif
