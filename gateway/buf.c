#include "buf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

void buf_init(struct buf *b)
{
    memset(b, 0, sizeof(*b));
}

void buf_cleanup(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

bool buf_reserve(struct buf *b, size_t extra)
{
    size_t need;
    size_t cap;
    uint8_t *data;

    if (b->failed)
        return false;
    if (extra > SIZE_MAX - b->len) {
        b->failed = true;
        return false;
    }
    need = b->len + extra;
    if (need <= b->cap)
        return true;

    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;

    data = realloc(b->data, cap);
    if (data == NULL) {
        b->failed = true;
        return false;
    }
    b->data = data;
    b->cap = cap;
    return true;
}

void buf_append(struct buf *b, const void *data, size_t len)
{
    if (len == 0 || !buf_reserve(b, len))
        return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

void buf_append_str(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_append_u64(struct buf *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);

    buf_append(b, tmp, (size_t)n);
}

void buf_append_i64(struct buf *b, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

    buf_append(b, tmp, (size_t)n);
}

void buf_append_json_string(struct buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0;

    buf_append(b, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        char esc[7];
        size_t esc_len = 0;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            esc_len = 2;
        } else if (c < 0x20) {
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xF];
            esc_len = 6;
        } else if (c == 0xE2 && i + 2 < len && p[i + 1] == 0x80 &&
                   (p[i + 2] == 0xA8 || p[i + 2] == 0xA9)) {
            memcpy(esc, p[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
            esc_len = 6;
        }

        if (esc_len == 0) {
            run++;
            continue;
        }
        buf_append(b, p + i - run, run);
        run = 0;
        buf_append(b, esc, esc_len);
        if (c == 0xE2)
            i += 2;
    }
    buf_append(b, p + len - run, run);
    buf_append(b, "\"", 1);
}

void buf_append_base64(struct buf *b, const uint8_t *data, size_t len)
{
    size_t out_len = 4 * ((len + 2) / 3);

    if (len > (SIZE_MAX / 4) * 3 - 3 || len > INT32_MAX)
        b->failed = true;
    if (!buf_reserve(b, out_len + 1))
        return;
    /* EVP_EncodeBlock writes a NUL after the output, hence the extra byte. */
    EVP_EncodeBlock(b->data + b->len, data, (int)len);
    b->len += out_len;
}
