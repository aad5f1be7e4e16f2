/*
 * Authentication and topic permissions.
 *
 * A client is a principal: a name and the topic filters it may subscribe
 * to and publish to. It proves who it is with a JWT (HS256 with a shared
 * secret, RS256 or ES256 with a public key) or a static API key from the
 * config. Without either it is the anonymous principal, if the gateway
 * allows anonymous clients.
 *
 * JWT claims: "sub" (string, required), "exp" (integer seconds, required),
 * "nbf" (integer seconds, optional), "subscribe" and "publish" (arrays of
 * topic filters, optional, empty when absent).
 *
 * libjwt 1.10 is wrapped here because it trusts too much by itself: it
 * takes the algorithm from the token's header, never checks exp or nbf,
 * accepts any token when the key is empty, and reads float or string
 * numbers as 0. The wrapper requires the configured algorithm, checks exp
 * and nbf with a leeway, refuses short secrets at start and checks every
 * claim's type. Tokens and keys are never logged.
 *
 * Thread-safe: a struct auth is read-only after auth_create.
 */
#ifndef TIDEGATE_AUTH_H
#define TIDEGATE_AUTH_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Shortest HS256 secret accepted, in bytes (RFC 7518, section 3.2). */
#define AUTH_MIN_SECRET_BYTES 32

/* Maximum length of a token or API key, in bytes. */
#define AUTH_MAX_TOKEN_BYTES 8192

struct auth;

/* Maximum length of a principal name in bytes, without the NUL. */
#define PRINCIPAL_NAME_MAX 127

struct principal {
    char *name;            /* owned: "sub", "key:" and the API key's name, or
                              "anonymous"; NULL until the client is known */
    char **subscribe;      /* filters it may subscribe to (and read) */
    size_t subscribe_count;
    char **publish;        /* filters whose topics it may publish to */
    size_t publish_count;
    int64_t expires_ms;    /* ms since the Unix epoch; 0 for never */
    bool anonymous;
    bool read_all;         /* may read every topic, "$" topics too */
};

/* The principal's name, or "" while it is unknown. */
static inline const char *principal_name(const struct principal *p)
{
    return p->name != NULL ? p->name : "";
}

/* Reads the key file and API keys of @cfg. NULL with the reason in @err. */
struct auth *auth_create(const struct config *cfg, char *err, size_t err_size);
void auth_destroy(struct auth *auth);

/* True when tokens or API keys are configured. */
bool auth_enabled(const struct auth *auth);

/* Fills @out with the anonymous principal. Returns false when anonymous
 * clients are not allowed. */
bool auth_anonymous(const struct auth *auth, struct principal *out);

/*
 * Checks @credential (a JWT or an API key) and fills @out. Returns false
 * with a reason in @err that never contains the credential.
 */
bool auth_authenticate(const struct auth *auth, const char *credential, int64_t now_ms,
                       struct principal *out, char *err, size_t err_size);

bool principal_may_subscribe(const struct principal *p, const char *filter);
bool principal_may_publish(const struct principal *p, const char *topic);
bool principal_may_read_topic(const struct principal *p, const char *topic);

/* Deep-copies @src into @dst. Returns false when out of memory. */
bool principal_copy(struct principal *dst, const struct principal *src);
void principal_cleanup(struct principal *p);

#endif
