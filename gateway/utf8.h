/* UTF-8 validation (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF). */
#ifndef TIDEGATE_UTF8_H
#define TIDEGATE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

bool utf8_valid(const unsigned char *s, size_t len);

/*
 * Returns how many bytes of the valid UTF-8 string @s to keep so that at
 * most @max bytes remain and no character is cut, for "%.*s" in messages.
 */
int utf8_prefix_len(const char *s, size_t max);

#endif
