#include "payload.h"
#include "utf8.h"

#include <string.h>

/*
 * A JSON grammar check without building a tree. jansson is not used here
 * because it rejects numbers outside the range of a double or long long,
 * which are valid JSON that devices do send, and because it would allocate
 * a tree for every message on the hot path.
 */

struct json_scan {
    const uint8_t *p;
    const uint8_t *end;
};

static bool scan_value(struct json_scan *s, int depth);

static void skip_ws(struct json_scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(uint8_t c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool scan_literal(struct json_scan *s, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool scan_digits(struct json_scan *s)
{
    const uint8_t *start = s->p;

    while (s->p < s->end && is_digit(*s->p))
        s->p++;
    return s->p > start;
}

/* number = [ minus ] int [ frac ] [ exp ] */
static bool scan_number(struct json_scan *s)
{
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p >= s->end)
        return false;

    if (*s->p == '0')
        s->p++;
    else if (!scan_digits(s))
        return false;

    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!scan_digits(s))
            return false;
    }

    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!scan_digits(s))
            return false;
    }
    return true;
}

static bool scan_string(struct json_scan *s)
{
    s->p++; /* opening quote */
    while (s->p < s->end) {
        uint8_t c = *s->p++;

        if (c == '"')
            return true;
        if (c < 0x20)
            return false;
        if (c != '\\')
            continue;

        if (s->p >= s->end)
            return false;
        c = *s->p++;
        if (c == 'u') {
            if (s->end - s->p < 4)
                return false;
            for (int i = 0; i < 4; i++) {
                if (!is_hex(s->p[i]))
                    return false;
            }
            s->p += 4;
        } else if (strchr("\"\\/bfnrt", c) == NULL || c == '\0') {
            return false;
        }
    }
    return false;
}

static bool scan_array(struct json_scan *s, int depth)
{
    s->p++; /* '[' */
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return true;
    }
    for (;;) {
        if (!scan_value(s, depth + 1))
            return false;
        skip_ws(s);
        if (s->p >= s->end)
            return false;
        if (*s->p == ']') {
            s->p++;
            return true;
        }
        if (*s->p++ != ',')
            return false;
    }
}

static bool scan_object(struct json_scan *s, int depth)
{
    s->p++; /* '{' */
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return true;
    }
    for (;;) {
        skip_ws(s);
        if (s->p >= s->end || *s->p != '"' || !scan_string(s))
            return false;
        skip_ws(s);
        if (s->p >= s->end || *s->p++ != ':')
            return false;
        if (!scan_value(s, depth + 1))
            return false;
        skip_ws(s);
        if (s->p >= s->end)
            return false;
        if (*s->p == '}') {
            s->p++;
            return true;
        }
        if (*s->p++ != ',')
            return false;
    }
}

static bool scan_value(struct json_scan *s, int depth)
{
    if (depth > PAYLOAD_JSON_MAX_DEPTH)
        return false;

    skip_ws(s);
    if (s->p >= s->end)
        return false;

    switch (*s->p) {
    case '{':
        return scan_object(s, depth);
    case '[':
        return scan_array(s, depth);
    case '"':
        return scan_string(s);
    case 't':
        return scan_literal(s, "true");
    case 'f':
        return scan_literal(s, "false");
    case 'n':
        return scan_literal(s, "null");
    default:
        return scan_number(s);
    }
}

bool payload_is_json(const uint8_t *data, size_t len)
{
    struct json_scan s = {data, data + len};

    if (!scan_value(&s, 0))
        return false;
    skip_ws(&s);
    return s.p == s.end;
}

enum payload_encoding payload_classify(const uint8_t *data, size_t len)
{
    if (len == 0)
        return PAYLOAD_UTF8;
    if (!utf8_valid(data, len))
        return PAYLOAD_BASE64;
    if (payload_is_json(data, len))
        return PAYLOAD_JSON;
    return PAYLOAD_UTF8;
}

const char *payload_encoding_name(enum payload_encoding encoding)
{
    switch (encoding) {
    case PAYLOAD_JSON:
        return "json";
    case PAYLOAD_UTF8:
        return "utf8";
    case PAYLOAD_BASE64:
        return "base64";
    }
    return "unknown";
}

bool payload_find_member(const uint8_t *data, size_t len, const char *key, size_t *value_start,
                         size_t *value_end)
{
    struct json_scan s = {data, data + len};
    size_t key_len = strlen(key);
    bool found = false;

    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return false;
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}')
        return false;

    for (;;) {
        const uint8_t *name;
        const uint8_t *value;

        skip_ws(&s);
        name = s.p;
        if (s.p >= s.end || *s.p != '"' || !scan_string(&s))
            return false;
        skip_ws(&s);
        if (s.p >= s.end || *s.p++ != ':')
            return false;
        skip_ws(&s);
        value = s.p;
        if (!scan_value(&s, 1))
            return false;

        /* The name as written, quotes included: escaped names do not match. */
        if ((size_t)(s.p - name) >= key_len + 2 && (size_t)(value - name) > key_len + 1 &&
            name[key_len + 1] == '"' && memcmp(name + 1, key, key_len) == 0) {
            *value_start = (size_t)(value - data);
            *value_end = (size_t)(s.p - data);
            found = true;
        }

        skip_ws(&s);
        if (s.p >= s.end)
            return false;
        if (*s.p == '}')
            break;
        if (*s.p++ != ',')
            return false;
    }
    s.p++;
    skip_ws(&s);
    return found && s.p == s.end;
}
