/* libFuzzer target: client WebSocket messages through the request parser. */
#include "protocol.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct request req;
    char err[256];

    protocol_parse_request(data, size, &req, err, sizeof(err));
    request_cleanup(&req);
    return 0;
}
