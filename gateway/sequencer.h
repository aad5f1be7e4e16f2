/*
 * The sequencer gives each message that leaves ingest its cursor: a `seq`
 * strictly increasing within one epoch, and an arrival time `ts` in ms since
 * the Unix epoch. The epoch is a random id: clients resume from the pair
 * (epoch, seq), and a different epoch tells them the old cursor is void.
 *
 * Not thread-safe: one thread assigns all sequence numbers.
 */
#ifndef TIDEGATE_SEQUENCER_H
#define TIDEGATE_SEQUENCER_H

#include "msg.h"

#include <stdbool.h>
#include <stdint.h>

#define SEQUENCER_EPOCH_LEN 32 /* hex characters */

struct sequencer {
    char epoch[SEQUENCER_EPOCH_LEN + 1];
    uint64_t last_seq; /* 0 before the first message */
    int64_t last_ts_ms;
};

/* Starts a new epoch from the system's random source. Returns false when
 * no random bytes could be read. */
bool sequencer_init_random(struct sequencer *seq);

/* Assigns the next seq and the arrival time to @m. Times never go back
 * within an epoch, even when the wall clock does. */
void sequencer_assign(struct sequencer *seq, struct msg *m);

#endif
