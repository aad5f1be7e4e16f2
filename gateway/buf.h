/* A growable byte buffer. Caller-owned storage: buf_init / buf_cleanup. */
#ifndef TIDEGATE_BUF_H
#define TIDEGATE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool failed; /* set when an allocation failed; later appends do nothing */
};

void buf_init(struct buf *b);
void buf_cleanup(struct buf *b);
bool buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_append_str(struct buf *b, const char *s);
void buf_append_u64(struct buf *b, uint64_t v);
void buf_append_i64(struct buf *b, int64_t v);

/*
 * Appends @s as a JSON string literal with quotes. @s must be valid UTF-8.
 * Escapes '"', '\\', control characters, and U+2028 and U+2029 (which some
 * JavaScript parsers treat as line ends).
 */
void buf_append_json_string(struct buf *b, const char *s, size_t len);

/* Appends the standard base64 (RFC 4648, with padding) of @data, unquoted. */
void buf_append_base64(struct buf *b, const uint8_t *data, size_t len);

#endif
