#include "config.h"
#include "topic.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum setting_type {
    SETTING_STRING,
    SETTING_STRING_LIST,
    SETTING_INT,
    SETTING_LOG_LEVEL,
    SETTING_DURATION, /* seconds, written as 90, 90s, 15m, 24h or 7d */
    SETTING_BOOL,
    SETTING_ORIGIN_LIST, /* a list of http(s)://host[:port] origins */
};

struct setting {
    const char *key;   /* JSON key; the option is --key with '_' as '-' */
    enum setting_type type;
    size_t offset;
    long long min;     /* SETTING_INT bounds */
    long long max;
    const char *help;
    bool (*check)(struct config *cfg, const char *value, char *why, size_t why_size);
};

static bool check_mqtt_url(struct config *cfg, const char *value, char *why, size_t why_size);
static bool check_listen(struct config *cfg, const char *value, char *why, size_t why_size);
static bool check_client_id(struct config *cfg, const char *value, char *why, size_t why_size);
static bool check_durability(struct config *cfg, const char *value, char *why, size_t why_size);
static bool check_db(struct config *cfg, const char *value, char *why, size_t why_size);

#define OFF(field) offsetof(struct config, field)

static const struct setting settings[] = {
    {"mqtt_url", SETTING_STRING, OFF(mqtt_url), 0, 0,
     "broker URL: tcp:// or mqtt://HOST:PORT, ssl:// or mqtts:// for TLS "
     "(default tcp://127.0.0.1:1883)",
     check_mqtt_url},
    {"mqtt_client_id", SETTING_STRING, OFF(mqtt_client_id), 0, 0,
     "MQTT client id; keep it stable so the broker keeps the session (default tidegate)",
     check_client_id},
    {"mqtt_qos", SETTING_INT, OFF(mqtt_qos), 0, 2, "QoS of the subscriptions, 0 to 2 (default 1)",
     NULL},
    {"mqtt_keepalive", SETTING_INT, OFF(mqtt_keepalive), 5, 3600,
     "MQTT keepalive in seconds (default 30)", NULL},
    {"mqtt_session_expiry", SETTING_INT, OFF(mqtt_session_expiry), 0, INT_MAX,
     "seconds the broker keeps the session while the gateway is away (default 86400)", NULL},
    {"mqtt_reconnect_min_ms", SETTING_INT, OFF(mqtt_reconnect_min_ms), 50, 600000,
     "first reconnect delay in ms, doubled after each failure (default 500)", NULL},
    {"mqtt_reconnect_max_ms", SETTING_INT, OFF(mqtt_reconnect_max_ms), 100, 3600000,
     "longest reconnect delay in ms (default 30000)", NULL},
    {"subscribe", SETTING_STRING_LIST, OFF(subscribe), 0, 0,
     "MQTT topic filter to take from the broker; repeat for more (default #)", NULL},
    {"publish_allow", SETTING_STRING_LIST, OFF(publish_allow), 0, 0,
     "topic filter clients may publish to; repeat for more (default none)", NULL},
    {"listen", SETTING_STRING, OFF(listen), 0, 0,
     "HTTP and WebSocket address, HOST:PORT (default 127.0.0.1:8080)", check_listen},
    {"log_level", SETTING_LOG_LEVEL, OFF(log_level), 0, 0,
     "error, warn, info or debug (default info)", NULL},
    {"max_message_bytes", SETTING_INT, OFF(max_message_bytes), 256, 16777216,
     "largest WebSocket message accepted from a client, in bytes (default 65536)", NULL},
    {"send_queue_bytes", SETTING_INT, OFF(send_queue_bytes), 4096, 1073741824,
     "bytes queued for one client before it is closed as too slow (default 1048576)", NULL},
    {"max_connections", SETTING_INT, OFF(max_connections), 1, 1000000,
     "most HTTP and WebSocket connections at once (default 10000)", NULL},
    {"ws_ping_interval", SETTING_INT, OFF(ws_ping_interval), 1, 3600,
     "seconds of silence before the gateway pings a WebSocket client (default 20)", NULL},
    {"ws_idle_timeout", SETTING_INT, OFF(ws_idle_timeout), 2, 86400,
     "seconds of silence before a WebSocket client is closed (default 60)", NULL},
    {"db", SETTING_STRING, OFF(db), 0, 0,
     "SQLite file of the message window (default tidegate.db in the working directory)",
     check_db},
    {"window", SETTING_DURATION, OFF(window_seconds), 0, 31536000,
     "how long messages stay in the window: 90s, 15m, 24h, 7d; 0 for no age limit "
     "(default 24h)",
     NULL},
    {"window_max_messages", SETTING_INT, OFF(window_max_messages), 0, 1000000000,
     "most messages in the window; 0 for no count limit (default 1000000)", NULL},
    {"durability", SETTING_STRING, OFF(durability), 0, 0,
     "commit: acknowledge a broker message only once stored (default); batched: faster, "
     "but a crash loses what was queued",
     check_durability},
    {"history_max_messages", SETTING_INT, OFF(history_max_messages), 1, 1000000,
     "most history messages sent for one request; older ones are cut (default 10000)", NULL},
    {"www", SETTING_STRING, OFF(www), 0, 0,
     "serve the dashboard's files from this folder instead of the built-in copies "
     "(for development; default: built-in)",
     NULL},
    {"dashboards", SETTING_STRING, OFF(dashboards), 0, 0,
     "JSON file of named dashboards, served at /d/NAME (default: none; / shows a dashboard "
     "built from the topics seen)",
     NULL},
    {"auth_jwt_algorithm", SETTING_STRING, OFF(auth_jwt_algorithm), 0, 0,
     "accept JWTs signed with HS256, RS256 or ES256 (default: no JWTs)", NULL},
    {"auth_jwt_key_file", SETTING_STRING, OFF(auth_jwt_key_file), 0, 0,
     "file with the HS256 secret (at least 32 bytes) or the RS256/ES256 public key (PEM)",
     NULL},
    {"auth_jwt_leeway", SETTING_INT, OFF(auth_jwt_leeway), 0, 600,
     "seconds of clock skew allowed when checking exp and nbf (default 30)", NULL},
    {"allow_anonymous", SETTING_BOOL, OFF(allow_anonymous), 0, 0,
     "let clients without a token in even when tokens or API keys are configured, or when "
     "listening beyond loopback (default false)",
     NULL},
    {"anonymous_subscribe", SETTING_STRING_LIST, OFF(anonymous_subscribe), 0, 0,
     "topic filter anonymous clients may read; repeat for more (default #); they may publish "
     "to publish_allow",
     NULL},
    {"allowed_origins", SETTING_ORIGIN_LIST, OFF(allowed_origins), 0, 0,
     "Origin a browser page may open WebSockets from, such as https://dash.example.com; "
     "repeat for more (default: the gateway's own origin only)",
     NULL},
    {"tls_cert", SETTING_STRING, OFF(tls_cert), 0, 0,
     "PEM certificate chain: serve https and wss (default: plain http)", NULL},
    {"tls_key", SETTING_STRING, OFF(tls_key), 0, 0, "PEM private key for tls_cert", NULL},
    {"mqtt_ca_file", SETTING_STRING, OFF(mqtt_ca_file), 0, 0,
     "CA certificates that verify the broker, for ssl:// and mqtts:// URLs (default: the "
     "system's)",
     NULL},
    {"mqtt_cert_file", SETTING_STRING, OFF(mqtt_cert_file), 0, 0,
     "client certificate for the broker (PEM)", NULL},
    {"mqtt_key_file", SETTING_STRING, OFF(mqtt_key_file), 0, 0,
     "client private key for the broker (PEM)", NULL},
    {"max_subscriptions_per_client", SETTING_INT, OFF(max_subscriptions_per_client), 1, 100000,
     "most topic filters one client may hold (default 100)", NULL},
    {"publish_rate", SETTING_INT, OFF(publish_rate), 1, 1000000,
     "publishes per second one client may send, with bursts of twice that (default 50)", NULL},
    {"max_connections_per_address", SETTING_INT, OFF(max_connections_per_address), 1, 1000000,
     "most WebSocket clients from one IP address (default 256)", NULL},
    {"max_sse_streams", SETTING_INT, OFF(max_sse_streams), 1, 1000000,
     "most Server-Sent Events streams open at once (default 1000)", NULL},
    {"plugin_dir", SETTING_STRING, OFF(plugin_dir), 0, 0,
     "folder where plugins named without a path are found (default " TIDEGATE_PLUGIN_DIR ")",
     check_db},
};

#define SETTING_COUNT (sizeof(settings) / sizeof(settings[0]))

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

static void string_list_clear(struct string_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static bool string_list_add(struct string_list *list, const char *value)
{
    char **items = realloc(list->items, (list->count + 1) * sizeof(*items));
    char *copy = strdup(value);

    if (items == NULL || copy == NULL) {
        free(copy);
        if (items != NULL)
            list->items = items;
        return false;
    }
    list->items = items;
    list->items[list->count++] = copy;
    return true;
}

static void set_string(char **field, const char *value)
{
    char *copy = strdup(value);

    if (copy == NULL) {
        fprintf(stderr, "tidegate: out of memory\n");
        exit(1);
    }
    free(*field);
    *field = copy;
}

void config_init_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    set_string(&cfg->mqtt_url, "tcp://127.0.0.1:1883");
    set_string(&cfg->mqtt_client_id, "tidegate");
    cfg->mqtt_qos = 1;
    cfg->mqtt_keepalive = 30;
    cfg->mqtt_session_expiry = 86400;
    cfg->mqtt_reconnect_min_ms = 500;
    cfg->mqtt_reconnect_max_ms = 30000;
    string_list_add(&cfg->subscribe, "#");
    set_string(&cfg->listen, "127.0.0.1:8080");
    snprintf(cfg->listen_host, sizeof(cfg->listen_host), "127.0.0.1");
    cfg->listen_port = 8080;
    cfg->log_level = LOG_INFO;
    cfg->max_message_bytes = 65536;
    cfg->send_queue_bytes = 1048576;
    cfg->max_connections = 10000;
    cfg->ws_ping_interval = 20;
    cfg->ws_idle_timeout = 60;
    set_string(&cfg->db, "tidegate.db");
    cfg->window_seconds = 86400;
    cfg->window_max_messages = 1000000;
    set_string(&cfg->durability, "commit");
    cfg->history_max_messages = 10000;
    set_string(&cfg->plugin_dir, TIDEGATE_PLUGIN_DIR);
    set_string(&cfg->www, "");
    set_string(&cfg->dashboards, "");
    set_string(&cfg->auth_jwt_algorithm, "");
    set_string(&cfg->auth_jwt_key_file, "");
    cfg->auth_jwt_leeway = 30;
    string_list_add(&cfg->anonymous_subscribe, "#");
    set_string(&cfg->tls_cert, "");
    set_string(&cfg->tls_key, "");
    set_string(&cfg->mqtt_ca_file, "");
    set_string(&cfg->mqtt_cert_file, "");
    set_string(&cfg->mqtt_key_file, "");
    cfg->max_subscriptions_per_client = 100;
    cfg->publish_rate = 50;
    cfg->max_connections_per_address = 256;
    cfg->max_sse_streams = 1000;
}

void config_cleanup(struct config *cfg)
{
    free(cfg->config_file);
    free(cfg->mqtt_url);
    free(cfg->mqtt_client_id);
    free(cfg->listen);
    free(cfg->db);
    free(cfg->durability);
    free(cfg->plugin_dir);
    free(cfg->www);
    free(cfg->dashboards);
    free(cfg->auth_jwt_algorithm);
    free(cfg->auth_jwt_key_file);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->mqtt_ca_file);
    free(cfg->mqtt_cert_file);
    free(cfg->mqtt_key_file);
    string_list_clear(&cfg->anonymous_subscribe);
    string_list_clear(&cfg->allowed_origins);
    json_decref(cfg->api_keys);
    json_decref(cfg->plugins);
    string_list_clear(&cfg->subscribe);
    string_list_clear(&cfg->publish_allow);
    memset(cfg, 0, sizeof(*cfg));
}

static bool check_mqtt_url(struct config *cfg, const char *value, char *why, size_t why_size)
{
    static const char *const schemes[] = {"tcp://", "mqtt://", "ssl://", "mqtts://"};
    const char *rest = NULL;

    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        if (strncmp(value, schemes[i], strlen(schemes[i])) == 0)
            rest = value + strlen(schemes[i]);
    }
    if (rest == NULL) {
        snprintf(why, why_size,
                 "expected tcp://HOST:PORT or mqtt://HOST:PORT (ssl:// or mqtts:// for TLS)");
        return false;
    }
    if (*rest == '\0' || *rest == ':' || strchr(rest, '/') != NULL) {
        snprintf(why, why_size, "expected a host after the scheme, as in tcp://127.0.0.1:1883");
        return false;
    }
    return true;
}

static bool check_durability(struct config *cfg, const char *value, char *why, size_t why_size)
{
    if (strcmp(value, "commit") == 0 || strcmp(value, "batched") == 0)
        return true;
    snprintf(why, why_size, "expected commit or batched");
    return false;
}

static bool check_db(struct config *cfg, const char *value, char *why, size_t why_size)
{
    if (value[0] != '\0')
        return true;
    snprintf(why, why_size, "expected the path of a SQLite file");
    return false;
}

/* Parses 90, 90s, 15m, 24h or 7d into seconds. */
static bool parse_duration(const char *text, long long *out)
{
    char *end;
    long long n;
    long long unit = 1;

    errno = 0;
    n = strtoll(text, &end, 10);
    if (errno != 0 || end == text || n < 0)
        return false;
    if (*end != '\0') {
        switch (*end) {
        case 's':
            unit = 1;
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        default:
            return false;
        }
        if (end[1] != '\0')
            return false;
    }
    if (n > LLONG_MAX / unit)
        return false;
    *out = n * unit;
    return true;
}

static bool check_client_id(struct config *cfg, const char *value, char *why, size_t why_size)
{
    size_t len = strlen(value);

    if (len == 0 || len > 256) {
        snprintf(why, why_size, "expected 1 to 256 characters");
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isgraph((unsigned char)value[i])) {
            snprintf(why, why_size, "expected printable ASCII characters without spaces");
            return false;
        }
    }
    return true;
}

static bool check_listen(struct config *cfg, const char *value, char *why, size_t why_size)
{
    const char *colon = strrchr(value, ':');
    const char *host = value;
    size_t host_len;
    char *end;
    long port;

    if (colon == NULL || colon == value)
        goto bad;
    host_len = (size_t)(colon - value);
    if (host[0] == '[') {
        if (host_len < 3 || host[host_len - 1] != ']')
            goto bad;
        host++;
        host_len -= 2;
    }
    if (host_len >= sizeof(cfg->listen_host))
        goto bad;

    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || colon[1] == '\0' || port < 1 || port > 65535)
        goto bad;

    memcpy(cfg->listen_host, host, host_len);
    cfg->listen_host[host_len] = '\0';
    cfg->listen_port = (uint16_t)port;
    return true;

bad:
    snprintf(why, why_size, "expected HOST:PORT with a port from 1 to 65535, such as 127.0.0.1:8080");
    return false;
}

static const struct setting *find_setting(const char *key)
{
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        if (strcmp(settings[i].key, key) == 0)
            return &settings[i];
    }
    return NULL;
}

static bool apply_string(struct config *cfg, const struct setting *s, const char *value,
                         const char *source, char *err, size_t err_size)
{
    char why[160];

    if (s->check != NULL && !s->check(cfg, value, why, sizeof(why)))
        FAIL("invalid value '%s' for %s (from %s): %s", value, s->key, source, why);
    set_string((char **)((char *)cfg + s->offset), value);
    return true;
}

/* Checks an origin: scheme http or https, a host, an optional port, no path. */
static bool origin_valid(const char *value)
{
    const char *host;

    if (strncmp(value, "https://", 8) == 0)
        host = value + 8;
    else if (strncmp(value, "http://", 7) == 0)
        host = value + 7;
    else
        return false;
    return host[0] != '\0' && strpbrk(host, "/?# ") == NULL;
}

static bool apply_list_item(struct config *cfg, const struct setting *s, const char *value,
                            const char *source, char *err, size_t err_size)
{
    struct string_list *list = (struct string_list *)((char *)cfg + s->offset);
    const char *why;

    if (s->type == SETTING_ORIGIN_LIST) {
        if (!origin_valid(value))
            FAIL("invalid origin '%s' for %s (from %s): expected scheme://host[:port] such as "
                 "https://dash.example.com, with no path",
                 value, s->key, source);
        if (!string_list_add(list, value))
            FAIL("out of memory");
        return true;
    }

    why = topic_check_filter(value, strlen(value));
    if (why != NULL)
        FAIL("invalid topic filter '%s' for %s (from %s): the filter %s", value, s->key, source,
             why);
    if (!string_list_add(list, value))
        FAIL("out of memory");
    return true;
}

static bool apply_int(struct config *cfg, const struct setting *s, long long value,
                      const char *text, const char *source, char *err, size_t err_size)
{
    if (value < s->min || value > s->max)
        FAIL("invalid value '%s' for %s (from %s): expected an integer from %lld to %lld", text,
             s->key, source, s->min, s->max);
    *(int *)((char *)cfg + s->offset) = (int)value;
    return true;
}

static bool apply_log_level(struct config *cfg, const struct setting *s, const char *value,
                            const char *source, char *err, size_t err_size)
{
    enum log_level level;

    if (!log_parse_level(value, &level))
        FAIL("invalid value '%s' for %s (from %s): expected error, warn, info or debug", value,
             s->key, source);
    cfg->log_level = level;
    return true;
}

bool config_apply_text(struct config *cfg, const char *key, const char *value,
                       const char *source, char *err, size_t err_size)
{
    const struct setting *s = find_setting(key);
    char *end;
    long long number;

    if (s == NULL)
        FAIL("unknown setting '%s' (from %s)", key, source);

    switch (s->type) {
    case SETTING_STRING:
        return apply_string(cfg, s, value, source, err, err_size);
    case SETTING_STRING_LIST:
    case SETTING_ORIGIN_LIST:
        return apply_list_item(cfg, s, value, source, err, err_size);
    case SETTING_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0 || strcmp(value, "yes") == 0) {
            *(bool *)((char *)cfg + s->offset) = true;
            return true;
        }
        if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0 || strcmp(value, "no") == 0) {
            *(bool *)((char *)cfg + s->offset) = false;
            return true;
        }
        FAIL("invalid value '%s' for %s (from %s): expected true or false", value, s->key,
             source);
    case SETTING_LOG_LEVEL:
        return apply_log_level(cfg, s, value, source, err, err_size);
    case SETTING_DURATION:
        if (!parse_duration(value, &number))
            FAIL("invalid value '%s' for %s (from %s): expected a duration such as 90s, 15m, "
                 "24h or 7d",
                 value, s->key, source);
        return apply_int(cfg, s, number, value, source, err, err_size);
    case SETTING_INT:
        errno = 0;
        number = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0')
            FAIL("invalid value '%s' for %s (from %s): expected an integer from %lld to %lld",
                 value, s->key, source, s->min, s->max);
        return apply_int(cfg, s, number, value, source, err, err_size);
    }
    return true;
}

/* Writes @value as compact JSON into @out, cut to fit, for error messages. */
static void describe_value(json_t *value, char *out, size_t size)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);

    snprintf(out, size, "%s", text ? text : "?");
    free(text);
}

static bool apply_json_value(struct config *cfg, const struct setting *s, json_t *value,
                             const char *source, char *err, size_t err_size)
{
    char text[64];
    char shown[64];

    describe_value(value, shown, sizeof(shown));

    switch (s->type) {
    case SETTING_STRING:
        if (!json_is_string(value))
            FAIL("invalid value %s for %s (in %s): expected a string", shown, s->key, source);
        return apply_string(cfg, s, json_string_value(value), source, err, err_size);
    case SETTING_LOG_LEVEL:
        if (!json_is_string(value))
            FAIL("invalid value %s for %s (in %s): expected one of \"error\", \"warn\", "
                 "\"info\", \"debug\"",
                 shown, s->key, source);
        return apply_log_level(cfg, s, json_string_value(value), source, err, err_size);
    case SETTING_DURATION:
        if (json_is_string(value))
            return config_apply_text(cfg, s->key, json_string_value(value), source, err,
                                     err_size);
        if (!json_is_integer(value))
            FAIL("invalid value %s for %s (in %s): expected a duration such as \"15m\" or a "
                 "number of seconds",
                 shown, s->key, source);
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(value));
        return apply_int(cfg, s, json_integer_value(value), text, source, err, err_size);
    case SETTING_INT:
        if (!json_is_integer(value))
            FAIL("invalid value %s for %s (in %s): expected an integer from %lld to %lld", shown,
                 s->key, source, s->min, s->max);
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(value));
        return apply_int(cfg, s, json_integer_value(value), text, source, err, err_size);
    case SETTING_BOOL:
        if (!json_is_boolean(value))
            FAIL("invalid value %s for %s (in %s): expected true or false", shown, s->key,
                 source);
        *(bool *)((char *)cfg + s->offset) = json_is_true(value);
        return true;
    case SETTING_STRING_LIST:
    case SETTING_ORIGIN_LIST: {
        size_t i;
        json_t *item;
        if (!json_is_array(value))
            FAIL("invalid value %s for %s (in %s): expected an array of topic filters", shown,
                 s->key, source);
        string_list_clear((struct string_list *)((char *)cfg + s->offset));
        json_array_foreach(value, i, item)
        {
            if (!json_is_string(item))
                FAIL("invalid value for %s[%zu] (in %s): expected a string", s->key, i,
                     source);
            if (!apply_list_item(cfg, s, json_string_value(item), source, err, err_size))
                return false;
        }
        return true;
    }
    }
    return true;
}

bool config_apply_json(struct config *cfg, json_t *root, const char *source, char *err,
                       size_t err_size)
{
    const char *key;
    json_t *value;

    if (!json_is_object(root))
        FAIL("%s: the config file must contain a JSON object", source);

    json_object_foreach(root, key, value)
    {
        const struct setting *s = find_setting(key);

        /* API keys are only set in a file; the auth module checks them. */
        if (strcmp(key, "api_keys") == 0) {
            if (!json_is_array(value))
                FAIL("invalid value for api_keys (in %s): expected an array of "
                     "{\"name\", \"sha256\", \"subscribe\", \"publish\"}",
                     source);
            json_decref(cfg->api_keys);
            cfg->api_keys = json_deep_copy(value);
            continue;
        }

        /* Plugin instances are only set in a file; the chain checks them. */
        if (strcmp(key, "plugins") == 0) {
            if (!json_is_array(value))
                FAIL("invalid value for plugins (in %s): expected an array of plugin instances",
                     source);
            json_decref(cfg->plugins);
            cfg->plugins = json_deep_copy(value);
            continue;
        }
        if (s == NULL)
            FAIL("unknown key '%s' in %s: see 'tidegate --help' for the settings", key, source);
        if (!apply_json_value(cfg, s, value, source, err, err_size))
            return false;
    }
    return true;
}

/* True for 127.0.0.0/8, ::1 and localhost: addresses only this machine reaches. */
static bool listen_is_loopback(const struct config *cfg)
{
    const char *host = cfg->listen_host;

    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0;
}

bool config_validate(struct config *cfg, char *err, size_t err_size)
{
    if (cfg->ws_idle_timeout <= cfg->ws_ping_interval)
        FAIL("invalid value %d for ws_idle_timeout: it must be greater than ws_ping_interval "
             "(%d) so a ping can be answered in time",
             cfg->ws_idle_timeout, cfg->ws_ping_interval);
    if (cfg->mqtt_reconnect_max_ms < cfg->mqtt_reconnect_min_ms)
        FAIL("invalid value %d for mqtt_reconnect_max_ms: it must be at least "
             "mqtt_reconnect_min_ms (%d)",
             cfg->mqtt_reconnect_max_ms, cfg->mqtt_reconnect_min_ms);
    if ((cfg->tls_cert[0] == '\0') != (cfg->tls_key[0] == '\0'))
        FAIL("tls_cert and tls_key go together: give both files to serve https and wss, or "
             "neither");
    if (!listen_is_loopback(cfg) && !cfg->allow_anonymous && cfg->auth_jwt_algorithm[0] == '\0' &&
        cfg->api_keys == NULL)
        FAIL("refusing to listen on %s without authentication: configure tokens "
             "(auth_jwt_algorithm and auth_jwt_key_file) or api_keys, or allow anonymous "
             "clients explicitly with --allow-anonymous",
             cfg->listen);
    if (cfg->subscribe.count == 0)
        FAIL("subscribe is empty: give at least one topic filter, such as \"#\"");
    if (cfg->subscribe.count > CONFIG_MAX_SUBSCRIBE)
        FAIL("subscribe has %zu filters: at most %d are supported; merge some with wildcards",
             cfg->subscribe.count, CONFIG_MAX_SUBSCRIBE);
    return true;
}

json_t *config_to_json(const struct config *cfg)
{
    json_t *root = json_object();

    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const struct setting *s = &settings[i];
        const void *field = (const char *)cfg + s->offset;
        json_t *value = NULL;

        switch (s->type) {
        case SETTING_STRING:
            value = json_string(*(char *const *)field);
            break;
        case SETTING_INT:
        case SETTING_DURATION:
            value = json_integer(*(const int *)field);
            break;
        case SETTING_LOG_LEVEL:
            value = json_string(log_level_name(*(const enum log_level *)field));
            break;
        case SETTING_BOOL:
            value = json_boolean(*(const bool *)field);
            break;
        case SETTING_STRING_LIST:
        case SETTING_ORIGIN_LIST: {
            const struct string_list *list = field;
            value = json_array();
            for (size_t j = 0; j < list->count; j++)
                json_array_append_new(value, json_string(list->items[j]));
            break;
        }
        }
        json_object_set_new(root, s->key, value);
    }
    json_object_set_new(root, "plugins", cfg->plugins ? json_incref(cfg->plugins) : json_array());
    /* Only the names: the hashes stay out of printed output. */
    json_t *keys = json_array();
    size_t i;
    json_t *entry;
    json_array_foreach(cfg->api_keys, i, entry)
    {
        json_t *name = json_object_get(entry, "name");
        json_array_append_new(keys, json_pack("{s:O}", "name", name ? name : json_null()));
    }
    json_object_set_new(root, "api_keys", keys);
    return root;
}

bool config_read_plugins(const char *path, json_t **plugins, char **plugin_dir, char *err,
                         size_t err_size)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    json_t *list;
    json_t *dir;

    if (root == NULL)
        FAIL("cannot read config file %s: %s (line %d, column %d)", path, jerr.text, jerr.line,
             jerr.column);
    list = json_object_get(root, "plugins");
    dir = json_object_get(root, "plugin_dir");
    if (!json_is_object(root) || (list != NULL && !json_is_array(list)) ||
        (dir != NULL && !json_is_string(dir))) {
        json_decref(root);
        FAIL("%s: plugins must be an array and plugin_dir a string", path);
    }
    *plugins = list ? json_incref(list) : NULL;
    *plugin_dir = dir ? strdup(json_string_value(dir)) : NULL;
    json_decref(root);
    return true;
}

/* ---- sources: file, environment, command line ---- */

static void print_help(void)
{
    printf("Usage: tidegate [OPTION]...\n"
           "Bridges MQTT topics to browsers over WebSocket and HTTP.\n\n"
           "  --config FILE          read settings from a JSON config file\n"
           "  --check-config FILE    validate a config file and exit (0 valid, 2 invalid)\n"
           "  --print-config         print the effective settings as JSON and exit\n"
           "  --version              print the version and exit\n"
           "  --help                 print this help and exit\n\n"
           "Settings: option, then the config file key in brackets; the environment variable\n"
           "is TIDEGATE_ and the key in upper case (--mqtt-url: mqtt_url, TIDEGATE_MQTT_URL).\n");
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        char option[64];
        snprintf(option, sizeof(option), "--%s", settings[i].key);
        for (char *p = option; *p; p++) {
            if (*p == '_')
                *p = '-';
        }
        snprintf(option + strlen(option), sizeof(option) - strlen(option), " [%s]",
                 settings[i].key);
        printf("  %-30s %s\n", option, settings[i].help);
    }
    printf("\nList settings take a comma-separated list in the environment.\n"
           "Precedence: command line, then environment, then config file, then defaults.\n");
}

static bool load_file(struct config *cfg, const char *path, char *err, size_t err_size)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    bool ok;

    if (root == NULL && jerr.line < 0)
        FAIL("cannot read config file %s: %s", path, jerr.text);
    if (root == NULL)
        FAIL("cannot read config file %s: %s (line %d, column %d)", path, jerr.text, jerr.line,
             jerr.column);
    ok = config_apply_json(cfg, root, path, err, err_size);
    json_decref(root);
    return ok;
}

/* Applies TIDEGATE_<KEY> variables. List values are comma-separated. */
static bool load_environment(struct config *cfg, char **envp, char *err, size_t err_size)
{
    for (char **e = envp; e != NULL && *e != NULL; e++) {
        char key[64];
        const char *eq;
        const struct setting *s;
        size_t len;
        char source[96];

        if (strncmp(*e, "TIDEGATE_", 9) != 0)
            continue;
        eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        len = (size_t)(eq - (*e + 9));
        if (len == 0 || len >= sizeof(key))
            continue;
        for (size_t i = 0; i < len; i++)
            key[i] = (char)tolower((unsigned char)(*e)[9 + i]);
        key[len] = '\0';
        if (strcmp(key, "config") == 0)
            continue;

        s = find_setting(key);
        snprintf(source, sizeof(source), "environment variable TIDEGATE_%.*s", (int)len, *e + 9);
        if (s == NULL) {
            /* Other tools may share the prefix, so this is not fatal. */
            fprintf(stderr, "tidegate: ignoring %s: no such setting (see 'tidegate --help')\n",
                    source);
            continue;
        }

        if (s->type != SETTING_STRING_LIST && s->type != SETTING_ORIGIN_LIST) {
            if (!config_apply_text(cfg, key, eq + 1, source, err, err_size))
                return false;
            continue;
        }

        struct string_list *list = (struct string_list *)((char *)cfg + s->offset);
        char *copy = strdup(eq + 1);
        char *save = NULL;
        if (copy == NULL)
            FAIL("out of memory");
        string_list_clear(list);
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (!config_apply_text(cfg, key, tok, source, err, err_size)) {
                free(copy);
                return false;
            }
        }
        free(copy);
    }
    return true;
}

enum { OPT_CONFIG = 1000, OPT_CHECK, OPT_PRINT, OPT_VERSION, OPT_HELP, OPT_SETTING_BASE };

static void build_long_options(struct option *opts, char names[][64])
{
    static const struct option fixed[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"check-config", required_argument, NULL, OPT_CHECK},
        {"print-config", no_argument, NULL, OPT_PRINT},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
    };
    size_t n = sizeof(fixed) / sizeof(fixed[0]);

    memcpy(opts, fixed, sizeof(fixed));
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        snprintf(names[i], 64, "%s", settings[i].key);
        for (char *p = names[i]; *p; p++) {
            if (*p == '_')
                *p = '-';
        }
        /* A boolean given alone on the command line means true. */
        opts[n + i] = (struct option){names[i],
                                      settings[i].type == SETTING_BOOL ? optional_argument
                                                                       : required_argument,
                                      NULL, OPT_SETTING_BASE + (int)i};
    }
    opts[n + SETTING_COUNT] = (struct option){NULL, 0, NULL, 0};
}

static enum config_action report(const char *err)
{
    fprintf(stderr, "tidegate: %s\n", err);
    return CONFIG_EXIT_ERROR;
}

enum config_action config_load(struct config *cfg, int argc, char **argv, char **envp)
{
    struct option opts[SETTING_COUNT + 8];
    char names[SETTING_COUNT][64];
    char err[512];
    const char *config_file = NULL;
    const char *check_file = NULL;
    bool print = false;
    int c;

    build_long_options(opts, names);

    /* First pass: find the file and the print-only options. */
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_CONFIG:
            config_file = optarg;
            break;
        case OPT_CHECK:
            check_file = optarg;
            break;
        case OPT_PRINT:
            print = true;
            break;
        case OPT_VERSION:
            printf("tidegate %s\n", TIDEGATE_VERSION);
            return CONFIG_EXIT_OK;
        case OPT_HELP:
            print_help();
            return CONFIG_EXIT_OK;
        case '?':
            snprintf(err, sizeof(err), "unknown option or missing value: '%s'; see 'tidegate --help'",
                     argv[optind - 1]);
            return report(err);
        default:
            break;
        }
    }
    if (optind < argc) {
        snprintf(err, sizeof(err), "unexpected argument '%s'; see 'tidegate --help'", argv[optind]);
        return report(err);
    }

    if (check_file != NULL) {
        if (!load_file(cfg, check_file, err, sizeof(err)) ||
            !config_validate(cfg, err, sizeof(err)))
            return report(err);
        printf("%s: valid\n", check_file);
        return CONFIG_EXIT_OK;
    }

    if (config_file == NULL) {
        for (char **e = envp; e != NULL && *e != NULL; e++) {
            if (strncmp(*e, "TIDEGATE_CONFIG=", 16) == 0 && (*e)[16] != '\0')
                config_file = *e + 16;
        }
    }
    if (config_file != NULL) {
        set_string(&cfg->config_file, config_file);
        if (!load_file(cfg, config_file, err, sizeof(err)))
            return report(err);
    }
    if (!load_environment(cfg, envp, err, sizeof(err)))
        return report(err);

    /* Second pass: settings on the command line. A list option given on the
     * command line replaces the list from the file or environment. */
    bool list_reset[SETTING_COUNT] = {false};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c < OPT_SETTING_BASE)
            continue;
        size_t index = (size_t)(c - OPT_SETTING_BASE);
        const struct setting *s = &settings[index];
        char source[80];
        snprintf(source, sizeof(source), "--%s", names[index]);
        if ((s->type == SETTING_STRING_LIST || s->type == SETTING_ORIGIN_LIST) &&
            !list_reset[index]) {
            string_list_clear((struct string_list *)((char *)cfg + s->offset));
            list_reset[index] = true;
        }
        if (!config_apply_text(cfg, s->key, optarg ? optarg : "true", source, err, sizeof(err)))
            return report(err);
    }

    if (!config_validate(cfg, err, sizeof(err)))
        return report(err);

    if (print) {
        json_t *root = config_to_json(cfg);
        json_dumpf(root, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(root);
        return CONFIG_EXIT_OK;
    }
    return CONFIG_RUN;
}
