#include "auth.h"
#include "topic.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct api_key {
    char name[128];
    unsigned char sha256[SHA256_DIGEST_LENGTH];
    struct string_list subscribe;
    struct string_list publish;
};

struct auth {
    jwt_alg_t alg;           /* JWT_ALG_NONE when tokens are off */
    unsigned char *key;
    size_t key_len;
    int leeway_s;
    struct api_key *keys;
    size_t key_count;
    bool anonymous_allowed;
    const struct string_list *anonymous_subscribe;
    const struct string_list *anonymous_publish;
};

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

/* ---- principals ---- */

static void free_list(char **items, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(items[i]);
    free(items);
}

void principal_cleanup(struct principal *p)
{
    free_list(p->subscribe, p->subscribe_count);
    free_list(p->publish, p->publish_count);
    free(p->name);
    memset(p, 0, sizeof(*p));
}

static bool copy_list(char ***dst, size_t *dst_count, char *const *src, size_t count)
{
    *dst = calloc(count ? count : 1, sizeof(char *));
    *dst_count = 0;
    if (*dst == NULL)
        return false;
    for (size_t i = 0; i < count; i++) {
        (*dst)[i] = strdup(src[i]);
        if ((*dst)[i] == NULL)
            return false;
        *dst_count = i + 1;
    }
    return true;
}

bool principal_copy(struct principal *dst, const struct principal *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->expires_ms = src->expires_ms;
    dst->anonymous = src->anonymous;
    dst->read_all = src->read_all;
    if ((src->name != NULL && (dst->name = strdup(src->name)) == NULL) ||
        !copy_list(&dst->subscribe, &dst->subscribe_count, src->subscribe,
                   src->subscribe_count) ||
        !copy_list(&dst->publish, &dst->publish_count, src->publish, src->publish_count)) {
        principal_cleanup(dst);
        return false;
    }
    return true;
}

bool principal_may_subscribe(const struct principal *p, const char *filter)
{
    if (p->read_all)
        return true;
    for (size_t i = 0; i < p->subscribe_count; i++) {
        if (topic_filter_covers(p->subscribe[i], filter))
            return true;
    }
    return false;
}

bool principal_may_publish(const struct principal *p, const char *topic)
{
    for (size_t i = 0; i < p->publish_count; i++) {
        if (topic_matches(p->publish[i], topic))
            return true;
    }
    return false;
}

bool principal_may_read_topic(const struct principal *p, const char *topic)
{
    if (p->read_all)
        return true;
    for (size_t i = 0; i < p->subscribe_count; i++) {
        if (topic_matches(p->subscribe[i], topic))
            return true;
    }
    return false;
}

/* ---- set-up ---- */

static bool read_file(const char *path, unsigned char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long size;

    if (f == NULL)
        return false;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || size > 65536 ||
        fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return false;
    }
    *out = malloc((size_t)size + 1);
    if (*out == NULL || fread(*out, 1, (size_t)size, f) != (size_t)size) {
        free(*out);
        *out = NULL;
        fclose(f);
        return false;
    }
    (*out)[size] = '\0';
    *len = (size_t)size;
    fclose(f);
    return true;
}

static bool hex_decode(const char *hex, unsigned char *out, size_t len)
{
    if (strlen(hex) != 2 * len)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned int byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
            return false;
        out[i] = (unsigned char)byte;
    }
    return true;
}

static bool parse_filter_list(json_t *array, struct string_list *out, const char *where,
                              char *err, size_t err_size)
{
    size_t i;
    json_t *item;

    memset(out, 0, sizeof(*out));
    if (array == NULL)
        return true;
    if (!json_is_array(array))
        FAIL("%s: expected an array of topic filters", where);
    out->items = calloc(json_array_size(array) + 1, sizeof(char *));
    if (out->items == NULL)
        FAIL("out of memory");
    json_array_foreach(array, i, item)
    {
        if (!json_is_string(item) ||
            topic_check_filter(json_string_value(item), json_string_length(item)) != NULL)
            FAIL("%s[%zu]: expected a valid MQTT topic filter", where, i);
        out->items[i] = strdup(json_string_value(item));
        out->count = i + 1;
    }
    return true;
}

static bool load_api_keys(struct auth *auth, json_t *keys, char *err, size_t err_size)
{
    size_t i;
    json_t *entry;

    if (keys == NULL)
        return true;
    auth->keys = calloc(json_array_size(keys) + 1, sizeof(*auth->keys));
    if (auth->keys == NULL)
        FAIL("out of memory");
    json_array_foreach(keys, i, entry)
    {
        json_t *name = json_object_get(entry, "name");
        json_t *hash = json_object_get(entry, "sha256");
        struct api_key *key = &auth->keys[i];
        char where[64];

        auth->key_count = i + 1;
        snprintf(where, sizeof(where), "api_keys[%zu]", i);
        if (!json_is_object(entry) || !json_is_string(name) || json_string_length(name) == 0 ||
            json_string_length(name) >= sizeof(key->name))
            FAIL("%s.name: expected a short name for the key (used in logs)", where);
        snprintf(key->name, sizeof(key->name), "%s", json_string_value(name));
        if (!json_is_string(hash) ||
            !hex_decode(json_string_value(hash), key->sha256, sizeof(key->sha256)))
            FAIL("%s.sha256: expected the key's SHA-256 as 64 hex digits (the key itself is "
                 "never stored), for example from: printf %%s KEY | sha256sum", where);
        snprintf(where, sizeof(where), "api_keys[%zu].subscribe", i);
        if (!parse_filter_list(json_object_get(entry, "subscribe"), &key->subscribe, where, err,
                               err_size))
            return false;
        snprintf(where, sizeof(where), "api_keys[%zu].publish", i);
        if (!parse_filter_list(json_object_get(entry, "publish"), &key->publish, where, err,
                               err_size))
            return false;
    }
    return true;
}

static bool load_jwt(struct auth *auth, const struct config *cfg, char *err, size_t err_size)
{
    if (cfg->auth_jwt_algorithm[0] == '\0')
        return true;
    auth->alg = jwt_str_alg(cfg->auth_jwt_algorithm);
    if (auth->alg != JWT_ALG_HS256 && auth->alg != JWT_ALG_RS256 && auth->alg != JWT_ALG_ES256)
        FAIL("invalid value '%s' for auth_jwt_algorithm: expected HS256, RS256 or ES256",
             cfg->auth_jwt_algorithm);
    if (cfg->auth_jwt_key_file[0] == '\0')
        FAIL("auth_jwt_algorithm is %s but auth_jwt_key_file is empty: give the file with the "
             "%s", cfg->auth_jwt_algorithm,
             auth->alg == JWT_ALG_HS256 ? "shared secret" : "public key (PEM)");
    if (!read_file(cfg->auth_jwt_key_file, &auth->key, &auth->key_len))
        FAIL("cannot read auth_jwt_key_file %s: check that it exists and is readable",
             cfg->auth_jwt_key_file);

    if (auth->alg == JWT_ALG_HS256) {
        /* A trailing line break from an editor is not part of the secret. */
        while (auth->key_len > 0 &&
               (auth->key[auth->key_len - 1] == '\n' || auth->key[auth->key_len - 1] == '\r'))
            auth->key[--auth->key_len] = '\0';
        if (auth->key_len < AUTH_MIN_SECRET_BYTES)
            FAIL("the HS256 secret in %s has %zu bytes; at least %d are required (for example: "
                 "openssl rand -hex 32 > %s)",
                 cfg->auth_jwt_key_file, auth->key_len, AUTH_MIN_SECRET_BYTES,
                 cfg->auth_jwt_key_file);
    } else if (strstr((const char *)auth->key, "-----BEGIN PUBLIC KEY-----") == NULL) {
        FAIL("%s does not hold a PEM public key (-----BEGIN PUBLIC KEY-----) for %s",
             cfg->auth_jwt_key_file, cfg->auth_jwt_algorithm);
    }
    return true;
}

struct auth *auth_create(const struct config *cfg, char *err, size_t err_size)
{
    struct auth *auth = calloc(1, sizeof(*auth));

    if (auth == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    auth->leeway_s = cfg->auth_jwt_leeway;
    auth->anonymous_subscribe = &cfg->anonymous_subscribe;
    auth->anonymous_publish = &cfg->publish_allow;
    if (!load_jwt(auth, cfg, err, err_size) ||
        !load_api_keys(auth, cfg->api_keys, err, err_size)) {
        auth_destroy(auth);
        return NULL;
    }
    auth->anonymous_allowed = !auth_enabled(auth) || cfg->allow_anonymous;
    return auth;
}

void auth_destroy(struct auth *auth)
{
    if (auth == NULL)
        return;
    for (size_t i = 0; i < auth->key_count; i++) {
        free_list(auth->keys[i].subscribe.items, auth->keys[i].subscribe.count);
        free_list(auth->keys[i].publish.items, auth->keys[i].publish.count);
    }
    free(auth->keys);
    if (auth->key != NULL)
        OPENSSL_cleanse(auth->key, auth->key_len);
    free(auth->key);
    free(auth);
}

bool auth_enabled(const struct auth *auth)
{
    return auth->alg != JWT_ALG_NONE || auth->key_count > 0;
}

bool auth_anonymous(const struct auth *auth, struct principal *out)
{
    memset(out, 0, sizeof(*out));
    if (!auth->anonymous_allowed)
        return false;
    out->name = strdup("anonymous");
    if (out->name == NULL)
        return false;
    out->anonymous = true;
    /* With no authentication at all, "#" means everything, as it does for
     * an MQTT client with no ACL: "$" topics included. */
    for (size_t i = 0; !auth_enabled(auth) && i < auth->anonymous_subscribe->count; i++)
        out->read_all = out->read_all || strcmp(auth->anonymous_subscribe->items[i], "#") == 0;
    return copy_list(&out->subscribe, &out->subscribe_count, auth->anonymous_subscribe->items,
                     auth->anonymous_subscribe->count) &&
           copy_list(&out->publish, &out->publish_count, auth->anonymous_publish->items,
                     auth->anonymous_publish->count);
}

/* ---- tokens ---- */

static bool claim_filters(json_t *claims, const char *name, char ***out, size_t *count,
                          char *err, size_t err_size)
{
    json_t *array = json_object_get(claims, name);
    size_t i;
    json_t *item;

    *out = NULL;
    *count = 0;
    if (array == NULL)
        return copy_list(out, count, NULL, 0);
    if (!json_is_array(array))
        FAIL("invalid token: claim '%s' must be an array of topic filters", name);
    *out = calloc(json_array_size(array) + 1, sizeof(char *));
    if (*out == NULL)
        FAIL("out of memory");
    json_array_foreach(array, i, item)
    {
        /* libjwt hands arrays over as they are: check every element. */
        if (!json_is_string(item) ||
            topic_check_filter(json_string_value(item), json_string_length(item)) != NULL)
            FAIL("invalid token: claim '%s' element %zu is not a valid topic filter", name, i);
        (*out)[i] = strdup(json_string_value(item));
        *count = i + 1;
    }
    return true;
}

static bool check_claims(const struct auth *auth, json_t *claims, int64_t now_ms,
                         struct principal *out, char *err, size_t err_size)
{
    json_t *sub = json_object_get(claims, "sub");
    json_t *exp = json_object_get(claims, "exp");
    json_t *nbf = json_object_get(claims, "nbf");
    int64_t now_s = now_ms / 1000;

    if (!json_is_string(sub) || json_string_length(sub) == 0 ||
        json_string_length(sub) > PRINCIPAL_NAME_MAX)
        FAIL("invalid token: claim 'sub' must be a non-empty string");
    /* Checked here, as libjwt 1.10 checks neither exp nor nbf, and reads a
     * float or string exp as 0 without an error. */
    if (!json_is_integer(exp))
        FAIL("invalid token: claim 'exp' must be an integer number of seconds");
    if (now_s > json_integer_value(exp) + auth->leeway_s)
        FAIL("token expired: get a new token");
    if (nbf != NULL && !json_is_integer(nbf))
        FAIL("invalid token: claim 'nbf' must be an integer number of seconds");
    if (nbf != NULL && now_s + auth->leeway_s < json_integer_value(nbf))
        FAIL("token not valid yet (nbf is in the future)");

    out->name = strdup(json_string_value(sub));
    if (out->name == NULL)
        FAIL("out of memory reading the token");
    out->expires_ms = (json_integer_value(exp) + auth->leeway_s) * 1000;
    return claim_filters(claims, "subscribe", &out->subscribe, &out->subscribe_count, err,
                         err_size) &&
           claim_filters(claims, "publish", &out->publish, &out->publish_count, err, err_size);
}

static bool verify_jwt(const struct auth *auth, const char *token, int64_t now_ms,
                       struct principal *out, char *err, size_t err_size)
{
    jwt_t *jwt = NULL;
    char *grants;
    json_t *claims;
    bool ok;

    if (auth->alg == JWT_ALG_NONE)
        FAIL("invalid credential: this gateway accepts no JWTs");
    /* The key is never empty here (auth_create refuses that), so libjwt
     * checks the signature. */
    if (jwt_decode(&jwt, token, auth->key, (int)auth->key_len) != 0 || jwt == NULL)
        FAIL("invalid token: malformed, or the signature does not match");
    if (jwt_get_alg(jwt) != auth->alg) {
        snprintf(err, err_size, "invalid token: signed with %s, but this gateway requires %s",
                 jwt_alg_str(jwt_get_alg(jwt)), jwt_alg_str(auth->alg));
        jwt_free(jwt);
        return false;
    }

    grants = jwt_get_grants_json(jwt, NULL);
    claims = grants ? json_loads(grants, 0, NULL) : NULL;
    free(grants);
    jwt_free(jwt);
    if (!json_is_object(claims)) {
        json_decref(claims);
        FAIL("invalid token: the claims are not a JSON object");
    }
    ok = check_claims(auth, claims, now_ms, out, err, err_size);
    json_decref(claims);
    return ok;
}

static bool verify_api_key(const struct auth *auth, const char *key, struct principal *out,
                           char *err, size_t err_size)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)key, strlen(key), digest);
    for (size_t i = 0; i < auth->key_count; i++) {
        const struct api_key *k = &auth->keys[i];
        if (CRYPTO_memcmp(digest, k->sha256, sizeof(digest)) != 0)
            continue;
        char name[PRINCIPAL_NAME_MAX + 1];
        snprintf(name, sizeof(name), "key:%.100s", k->name);
        out->name = strdup(name);
        return out->name != NULL &&
               copy_list(&out->subscribe, &out->subscribe_count, k->subscribe.items,
                         k->subscribe.count) &&
               copy_list(&out->publish, &out->publish_count, k->publish.items,
                         k->publish.count);
    }
    FAIL("invalid credential: unknown API key");
}

bool auth_authenticate(const struct auth *auth, const char *credential, int64_t now_ms,
                       struct principal *out, char *err, size_t err_size)
{
    size_t len = strnlen(credential, AUTH_MAX_TOKEN_BYTES + 1);
    const char *dot = strchr(credential, '.');
    bool ok;

    memset(out, 0, sizeof(*out));
    if (len == 0)
        FAIL("invalid credential: empty");
    if (len > AUTH_MAX_TOKEN_BYTES)
        FAIL("invalid credential: longer than %d bytes", AUTH_MAX_TOKEN_BYTES);

    /* A JWT has three dot-separated parts; an API key has none. */
    if (dot != NULL && strchr(dot + 1, '.') != NULL)
        ok = verify_jwt(auth, credential, now_ms, out, err, err_size);
    else
        ok = verify_api_key(auth, credential, out, err, err_size);
    if (!ok)
        principal_cleanup(out);
    return ok;
}
