/*
 * Conflation for subscriptions with a max_rate: at most that many messages
 * per second per topic go to the client. When messages come faster, the one
 * sent after the pause is always the latest, so a slow screen never falls
 * behind and never shows a stale last value.
 *
 * Not thread-safe: the loop thread owns every conflation table.
 */
#ifndef TIDEGATE_CONFLATE_H
#define TIDEGATE_CONFLATE_H

#include "msg.h"

#include <stdbool.h>
#include <stdint.h>

/* Most topics one client's table tracks; messages on more topics than
 * this go out unconflated rather than growing the table further. */
#define CONFLATE_MAX_TOPICS 10000

struct conflate;

struct conflate *conflate_create(void);
void conflate_destroy(struct conflate *c);

/*
 * Offers @m, limited to @rate messages per second on its topic. Returns
 * true when @m should be sent now. Otherwise it keeps a reference to @m as
 * the topic's pending message, replacing an older pending one, and returns
 * false.
 */
bool conflate_offer(struct conflate *c, struct msg *m, double rate, int64_t now_ms);

/*
 * Calls @send for each pending message that is due (in no particular order
 * across topics) and drops the reference to it. Returns true while messages are still
 * pending.
 */
bool conflate_flush(struct conflate *c, int64_t now_ms, void (*send)(void *arg, struct msg *m),
                    void *arg);

#endif
