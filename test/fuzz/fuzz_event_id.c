/* libFuzzer target: Last-Event-ID cursors of Server-Sent Events clients. */
#include "sequencer.h"
#include "sse.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size);
    char epoch[SEQUENCER_EPOCH_LEN + 1];
    uint64_t seq;

    if (text != NULL && sse_parse_event_id(text, epoch, sizeof(epoch), &seq) &&
        strlen(epoch) > SEQUENCER_EPOCH_LEN)
        abort();
    free(text);
    return 0;
}
