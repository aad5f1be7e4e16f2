#include "sequencer.h"
#include "clock.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

bool sequencer_init_random(struct sequencer *seq)
{
    unsigned char bytes[SEQUENCER_EPOCH_LEN / 2];

    memset(seq, 0, sizeof(*seq));
    if (getrandom(bytes, sizeof(bytes), 0) != (ssize_t)sizeof(bytes))
        return false;
    for (size_t i = 0; i < sizeof(bytes); i++)
        snprintf(seq->epoch + 2 * i, 3, "%02x", bytes[i]);
    return true;
}

void sequencer_assign(struct sequencer *seq, struct msg *m)
{
    int64_t now = clock_realtime_ms();

    if (now < seq->last_ts_ms)
        now = seq->last_ts_ms;
    seq->last_ts_ms = now;
    m->seq = ++seq->last_seq;
    m->ts_ms = now;
}
