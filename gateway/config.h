/*
 * Configuration: one table of settings, each reachable as a key in a JSON
 * config file, an environment variable TIDEGATE_<KEY> and a command-line
 * option --<key-with-dashes>. Later sources win: defaults, then the file,
 * then the environment, then the command line.
 */
#ifndef TIDEGATE_CONFIG_H
#define TIDEGATE_CONFIG_H

#include "log.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Maximum number of filters in "subscribe": they go to the broker in one
 * SUBSCRIBE. */
#define CONFIG_MAX_SUBSCRIBE 64

struct string_list {
    char **items;
    size_t count;
};

struct config {
    char *config_file;
    char *mqtt_url;
    char *mqtt_client_id;
    int mqtt_qos;
    int mqtt_keepalive;           /* seconds */
    int mqtt_session_expiry;      /* seconds the broker keeps the session */
    int mqtt_reconnect_min_ms;
    int mqtt_reconnect_max_ms;
    struct string_list subscribe;
    struct string_list publish_allow;
    char *listen;                 /* HOST:PORT as given */
    char listen_host[256];        /* parsed from listen */
    uint16_t listen_port;
    enum log_level log_level;
    int max_message_bytes;
    int send_queue_bytes;
    int max_connections;
    int ws_ping_interval;         /* seconds */
    int ws_idle_timeout;          /* seconds */
    char *db;                     /* SQLite file of the window store */
    int window_seconds;           /* keep messages this long; 0: no age limit */
    int window_max_messages;      /* keep at most this many; 0: no count limit */
    char *durability;             /* "commit" or "batched" */
    int history_max_messages;     /* most history messages in one reply */
    char *plugin_dir;             /* where plugins named without a path are found */
    char *www;                    /* serve web assets from this folder; "" for built-in */
    char *dashboards;             /* dashboards file; "" for none */
    char *auth_jwt_algorithm;     /* "", "HS256", "RS256" or "ES256" */
    char *auth_jwt_key_file;      /* HS256 secret or PEM public key */
    int auth_jwt_leeway;          /* seconds of clock skew allowed on exp and nbf */
    bool allow_anonymous;         /* anonymous clients even with auth, or on non-loopback */
    struct string_list anonymous_subscribe; /* what anonymous clients may read */
    struct string_list allowed_origins;     /* WebSocket Origins; empty: same origin only */
    json_t *api_keys;             /* the "api_keys" array of the config file, or NULL */
    char *tls_cert;               /* PEM certificate chain for https and wss; "" for none */
    char *tls_key;                /* PEM private key for tls_cert */
    char *mqtt_ca_file;           /* CA certificates to verify the broker (ssl:// URLs) */
    char *mqtt_cert_file;         /* client certificate for the broker */
    char *mqtt_key_file;          /* client key for the broker */
    int max_subscriptions_per_client;
    int publish_rate;             /* client publishes per second, burst of twice that */
    int max_connections_per_address;
    int max_sse_streams;
    json_t *plugins;              /* the "plugins" array of the config file, or NULL */
};

enum config_action {
    CONFIG_RUN = 0,
    CONFIG_EXIT_OK = 1,    /* --help, --version, --check-config, --print-config done */
    CONFIG_EXIT_ERROR = 2, /* an error was printed */
};

void config_init_defaults(struct config *cfg);
void config_cleanup(struct config *cfg);

/*
 * Builds the configuration from the file, the environment @envp and @argv,
 * and handles the options that only print. Errors are printed to stderr
 * with the key, the value and what is accepted.
 */
enum config_action config_load(struct config *cfg, int argc, char **argv, char **envp);

/*
 * Applies the JSON object @root (a config file's content) to @cfg. @source
 * names it in errors. Returns false with the error in @err.
 */
bool config_apply_json(struct config *cfg, json_t *root, const char *source, char *err,
                       size_t err_size);

/* Applies one setting given as text (an option or environment value). */
bool config_apply_text(struct config *cfg, const char *key, const char *value,
                       const char *source, char *err, size_t err_size);

/* Checks the settings against each other after all sources are applied. */
bool config_validate(struct config *cfg, char *err, size_t err_size);

/*
 * Reads only the "plugins" array (and "plugin_dir", when present) from the
 * config file @path, for a reload. Returns false with the error in @err;
 * @plugins and @plugin_dir are then untouched. The caller owns *@plugins
 * (a new reference, NULL when the file has none) and *@plugin_dir (NULL
 * when the file sets none).
 */
bool config_read_plugins(const char *path, json_t **plugins, char **plugin_dir, char *err,
                         size_t err_size);

/* Returns the effective configuration as a JSON object (new reference). */
json_t *config_to_json(const struct config *cfg);

#endif
