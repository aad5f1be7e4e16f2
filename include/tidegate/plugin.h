/*
 * Tidegate transform plugins: the public interface.
 *
 * A plugin is a shared object that exports one function,
 * tidegate_plugin_entry, returning a descriptor (struct tg_plugin). The
 * gateway loads it, checks the descriptor's ABI version before it touches
 * anything else, and calls init once per configured instance. Each
 * instance then transforms the messages whose topic matches its filters,
 * between ingest and the message window, in the order of the chain.
 *
 * Build a plugin against this header alone; it links against nothing of
 * the gateway:
 *
 *     cc -shared -fPIC $(pkg-config --cflags tidegate-plugin) -o my.so my.c
 *
 * Threads: the calls for one instance never overlap: init, then
 * transforms, then cleanup. Transforms of the whole chain run one message
 * at a time, on the thread that commits messages (the MQTT client's thread
 * in commit mode, the pipeline thread in batched mode). Other instances may
 * be created on another thread while messages flow (at start-up and when
 * SIGHUP reloads the chain), so keep
 * all state in the instance (the state pointer init returns), never in
 * globals; that also lets one plugin be configured twice with different
 * settings. A transform sits on the path of every message: it must not
 * block (no network, no sleeping, no waiting on locks held elsewhere) and
 * should finish in microseconds.
 *
 * Buffer ownership:
 *  1. Everything the host passes in (the config text, the message, its
 *     topic and payload) is borrowed for the duration of that call only.
 *     Copy what you need to keep.
 *  2. tg_host.replace and tg_host.emit copy their arguments before they
 *     return. The plugin keeps ownership of what it passed and may free or
 *     reuse it at once.
 *  3. The state returned by init belongs to the plugin. The host passes it
 *     back to every call and to cleanup, where the plugin frees it.
 *  4. Strings the plugin returns through the descriptor (name, version,
 *     description) must stay valid while the shared object is loaded:
 *     string literals are the usual choice.
 *  5. The error text passed to tg_host.fail is copied by the host.
 *
 * Compatibility: TIDEGATE_PLUGIN_ABI_VERSION changes only when an existing
 * field or function changes meaning or place. Structs grow only at the end,
 * and carry their size so each side can tell which fields the other has.
 * Enum values are never renumbered; new ones are appended.
 */
#ifndef TIDEGATE_PLUGIN_H
#define TIDEGATE_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes. The loader rejects a plugin built for
 * another version, naming both. */
#define TIDEGATE_PLUGIN_ABI_VERSION 1

/* The name of the function every plugin exports. */
#define TIDEGATE_PLUGIN_ENTRY "tidegate_plugin_entry"

/* Log levels for tg_host.log, the gateway's own. */
enum tg_log_level {
    TG_LOG_ERROR = 0,
    TG_LOG_WARN = 1,
    TG_LOG_INFO = 2,
    TG_LOG_DEBUG = 3,
};

/* The result of a transform. */
enum tg_result {
    /* Keep the message: unchanged, or as changed by tg_host.replace. */
    TG_PASS = 0,
    /* Drop the message. Messages emitted during the call still go out. */
    TG_DROP = 1,
    /* The transform failed: the instance's on_error policy decides
     * between passing the message on unchanged and dropping it. Give the
     * reason with tg_host.fail. */
    TG_ERROR = 2,
};

/* The message passed to a transform (borrowed, see rule 1). */
struct tg_message {
    size_t struct_size;     /* sizeof(struct tg_message) of the host */
    const char *topic;      /* NUL-terminated, valid UTF-8, no wildcards */
    size_t topic_len;
    const uint8_t *payload; /* not NUL-terminated; may be empty */
    size_t payload_len;
    int qos;                /* 0, 1 or 2 */
    bool retain;
    int64_t received_ms;    /* arrival time, ms since the Unix epoch */
};

/* Opaque handles: an instance (for logging at any time) and one transform
 * call (for replacing, emitting and failing during that call). */
struct tg_instance;
struct tg_call;

/* Functions the host offers. Appended to only; check struct_size before
 * using a field added after TIDEGATE_PLUGIN_ABI_VERSION 1. */
struct tg_host {
    size_t struct_size;
    uint32_t abi_version;

    /* Memory for anything the plugin likes; released with mem_free. */
    void *(*mem_alloc)(size_t size);
    void (*mem_free)(void *ptr);

    /* Logs one line with the instance's name. Never pass secrets. */
    void (*log)(struct tg_instance *instance, enum tg_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

    /*
     * Replaces the topic and/or payload of the message being transformed.
     * @topic NULL keeps the topic; @payload NULL keeps the payload. Copies
     * both (rule 2). Returns 0, or -1 when @topic is not a valid topic name
     * or a size limit is passed (the call then counts as failed).
     */
    int (*replace)(struct tg_call *call, const char *topic, const void *payload, size_t len);

    /*
     * Emits an extra message (an alert, a derived value) after the one
     * being transformed. Copies its arguments (rule 2). Emitted messages
     * do not pass through the rest of the chain. Returns 0, or -1 when the
     * topic is invalid or the per-call limits are passed.
     */
    int (*emit)(struct tg_call *call, const char *topic, const void *payload, size_t len,
                int qos, bool retain);

    /* Records why the call failed; use before returning TG_ERROR. */
    void (*fail)(struct tg_call *call, const char *message);
};

/* The descriptor a plugin returns from tidegate_plugin_entry. */
struct tg_plugin {
    /* First, so the loader can check it before reading anything else. */
    uint32_t abi_version;   /* set to TIDEGATE_PLUGIN_ABI_VERSION */
    uint32_t struct_size;   /* set to sizeof(struct tg_plugin) */

    const char *name;        /* short, such as "deadband" */
    const char *version;     /* the plugin's own version, such as "1.0.0" */
    const char *description; /* one sentence */

    /*
     * Creates one instance. @config_json is the instance's "config" object
     * from the gateway's config file, as JSON text ("{}" when absent).
     * Stores the instance's state in *@state and returns 0, or writes a
     * reason into @err (at most @err_size bytes, NUL-terminated) and
     * returns -1. Unknown or invalid settings must fail here, naming the
     * setting. @instance stays valid until cleanup.
     */
    int (*init)(const struct tg_host *host, struct tg_instance *instance,
                const char *config_json, void **state, char *err, size_t err_size);

    /* Transforms one message; see enum tg_result and tg_host. */
    enum tg_result (*transform)(void *state, const struct tg_message *message,
                                struct tg_call *call);

    /* Frees the instance. Called also after a failed init, with whatever
     * *state init left (NULL if it set none), so it must accept NULL. */
    void (*cleanup)(void *state);
};

/* The entry point, with C linkage and default visibility. */
typedef const struct tg_plugin *(*tg_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif
