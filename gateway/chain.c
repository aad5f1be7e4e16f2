#include "chain.h"
#include "clock.h"
#include "log.h"
#include "topic.h"

#include <tidegate/plugin.h>

#include <dlfcn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct instance_counters {
    atomic_uint_fast64_t calls;
    atomic_uint_fast64_t passes;
    atomic_uint_fast64_t drops;
    atomic_uint_fast64_t errors;
    atomic_uint_fast64_t emitted;
    atomic_uint_fast64_t time_ns;
};

/* struct tg_instance is this: the handle a plugin logs with. */
struct tg_instance {
    char *name;
    char *path;
    char component[80]; /* "plugin:<name>" for log lines */
    void *handle;       /* from dlopen */
    const struct tg_plugin *desc;
    void *state;
    bool initialized;
    char **filters;
    size_t filter_count;
    bool drop_on_error;
    struct instance_counters counters;
    struct log_ratelimit error_rl;
};

/* One transform call: what the plugin replaced or emitted during it. */
struct tg_call {
    struct tg_instance *instance;
    char *topic;         /* replacement topic, or NULL */
    uint8_t *payload;    /* replacement payload, or NULL */
    size_t payload_len;
    bool replaced_payload;
    struct msg_list emitted;
    char error[256];
    bool host_error;     /* replace or emit was refused */
};

struct chain {
    struct tg_instance *instances;
    size_t count;
};

/* ---- message lists ---- */

void msg_list_cleanup(struct msg_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        msg_unref(list->items[i]);
    free(list->items);
    memset(list, 0, sizeof(*list));
}

bool msg_list_push(struct msg_list *list, struct msg *m)
{
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 8;
        struct msg **items = realloc(list->items, cap * sizeof(*items));
        if (items == NULL)
            return false;
        list->items = items;
        list->cap = cap;
    }
    list->items[list->count++] = m;
    return true;
}

/* ---- host functions ---- */

static void *host_alloc(size_t size)
{
    return malloc(size);
}

static void host_free(void *ptr)
{
    free(ptr);
}

static void host_log(struct tg_instance *instance, enum tg_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void host_log(struct tg_instance *instance, enum tg_log_level level, const char *fmt, ...)
{
    char text[1024];
    enum log_level mapped = level <= TG_LOG_DEBUG ? (enum log_level)level : LOG_DEBUG;
    va_list ap;

    if (instance == NULL || !log_enabled(mapped))
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    log_write(mapped, instance->component, "%s", text);
}

static void call_error(struct tg_call *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void call_error(struct tg_call *call, const char *fmt, ...)
{
    va_list ap;

    call->host_error = true;
    va_start(ap, fmt);
    vsnprintf(call->error, sizeof(call->error), fmt, ap);
    va_end(ap);
}

static int host_replace(struct tg_call *call, const char *topic, const void *payload, size_t len)
{
    if (topic != NULL) {
        const char *why = topic_check_name(topic, strlen(topic));
        char *copy;
        if (why != NULL) {
            call_error(call, "replace: invalid topic name: the topic name %s", why);
            return -1;
        }
        copy = strdup(topic);
        if (copy == NULL) {
            call_error(call, "replace: out of memory");
            return -1;
        }
        free(call->topic);
        call->topic = copy;
    }
    if (payload != NULL) {
        uint8_t *copy;
        if (len > CHAIN_MAX_PAYLOAD_BYTES) {
            call_error(call, "replace: payload of %zu bytes is over the %d-byte limit", len,
                       CHAIN_MAX_PAYLOAD_BYTES);
            return -1;
        }
        copy = malloc(len ? len : 1);
        if (copy == NULL) {
            call_error(call, "replace: out of memory");
            return -1;
        }
        memcpy(copy, payload, len);
        free(call->payload);
        call->payload = copy;
        call->payload_len = len;
        call->replaced_payload = true;
    }
    return 0;
}

static int host_emit(struct tg_call *call, const char *topic, const void *payload, size_t len,
                     int qos, bool retain)
{
    const char *why = topic ? topic_check_name(topic, strlen(topic)) : "is missing";
    struct msg *m;

    if (why != NULL) {
        call_error(call, "emit: invalid topic name: the topic name %s", why);
        return -1;
    }
    if (call->emitted.count >= CHAIN_MAX_EMITS_PER_CALL) {
        call_error(call, "emit: more than %d messages in one call", CHAIN_MAX_EMITS_PER_CALL);
        return -1;
    }
    if (len > CHAIN_MAX_PAYLOAD_BYTES || (payload == NULL && len > 0)) {
        call_error(call, "emit: payload of %zu bytes is over the %d-byte limit", len,
                   CHAIN_MAX_PAYLOAD_BYTES);
        return -1;
    }
    if (qos < 0 || qos > 2)
        qos = 0;
    m = msg_create(topic, strlen(topic), payload ? payload : "", len, (uint8_t)qos, retain);
    if (m == NULL || !msg_list_push(&call->emitted, m)) {
        msg_unref(m);
        call_error(call, "emit: out of memory");
        return -1;
    }
    return 0;
}

static void host_fail(struct tg_call *call, const char *message)
{
    snprintf(call->error, sizeof(call->error), "%s", message ? message : "failed");
}

static const struct tg_host host = {
    .struct_size = sizeof(struct tg_host),
    .abi_version = TIDEGATE_PLUGIN_ABI_VERSION,
    .mem_alloc = host_alloc,
    .mem_free = host_free,
    .log = host_log,
    .replace = host_replace,
    .emit = host_emit,
    .fail = host_fail,
};

/* ---- loading ---- */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

static bool file_exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Finds the shared object for @plugin: a path, or a name in @plugin_dir. */
static bool resolve_path(const char *plugin, const char *plugin_dir, char *out, size_t size)
{
    if (strchr(plugin, '/') != NULL) {
        snprintf(out, size, "%s", plugin);
        return file_exists(out);
    }
    snprintf(out, size, "%s/%s.so", plugin_dir, plugin);
    if (file_exists(out))
        return true;
    snprintf(out, size, "%s/%s/%s.so", plugin_dir, plugin, plugin);
    return file_exists(out);
}

static bool load_descriptor(struct tg_instance *in, const char *where, char *err, size_t err_size)
{
    tg_plugin_entry_fn entry;
    const struct tg_plugin *desc;

    dlerror();
    in->handle = dlopen(in->path, RTLD_NOW | RTLD_LOCAL);
    if (in->handle == NULL)
        FAIL("%s.plugin: cannot load %s: %s", where, in->path, dlerror());

    *(void **)&entry = dlsym(in->handle, TIDEGATE_PLUGIN_ENTRY);
    if (entry == NULL)
        FAIL("%s.plugin: %s has no entry point %s(); is it a Tidegate plugin?", where, in->path,
             TIDEGATE_PLUGIN_ENTRY);

    desc = entry();
    if (desc == NULL)
        FAIL("%s.plugin: %s() in %s returned NULL", where, TIDEGATE_PLUGIN_ENTRY, in->path);
    /* The version comes first and is read before any other field. */
    if (desc->abi_version != TIDEGATE_PLUGIN_ABI_VERSION)
        FAIL("%s.plugin: %s was built for plugin ABI version %u, but this gateway has version "
             "%d: rebuild it against this gateway's tidegate/plugin.h",
             where, in->path, desc->abi_version, TIDEGATE_PLUGIN_ABI_VERSION);
    if (desc->struct_size < offsetof(struct tg_plugin, cleanup) + sizeof(desc->cleanup))
        FAIL("%s.plugin: %s has a descriptor of %u bytes, smaller than ABI version %d needs",
             where, in->path, desc->struct_size, TIDEGATE_PLUGIN_ABI_VERSION);
    if (desc->name == NULL || desc->init == NULL || desc->transform == NULL ||
        desc->cleanup == NULL)
        FAIL("%s.plugin: %s leaves name, init, transform or cleanup unset", where, in->path);
    in->desc = desc;
    return true;
}

static bool parse_filters(struct tg_instance *in, json_t *filters, const char *where, char *err,
                          size_t err_size)
{
    size_t i;
    json_t *item;

    if (filters == NULL) {
        in->filters = calloc(1, sizeof(char *));
        if (in->filters == NULL || (in->filters[0] = strdup("#")) == NULL)
            FAIL("out of memory");
        in->filter_count = 1;
        return true;
    }
    if (!json_is_array(filters) || json_array_size(filters) == 0)
        FAIL("%s.filters: expected a non-empty array of topic filters", where);

    in->filters = calloc(json_array_size(filters), sizeof(char *));
    if (in->filters == NULL)
        FAIL("out of memory");
    json_array_foreach(filters, i, item)
    {
        const char *why;
        if (!json_is_string(item))
            FAIL("%s.filters[%zu]: expected a string", where, i);
        why = topic_check_filter(json_string_value(item), json_string_length(item));
        if (why != NULL)
            FAIL("%s.filters[%zu]: invalid topic filter '%s': the filter %s", where, i,
                 json_string_value(item), why);
        in->filters[i] = strdup(json_string_value(item));
        if (in->filters[i] == NULL)
            FAIL("out of memory");
        in->filter_count = i + 1;
    }
    return true;
}

static bool check_instance_keys(json_t *entry, const char *where, char *err, size_t err_size)
{
    static const char *const known[] = {"name", "plugin", "filters", "on_error", "config"};
    const char *key;
    json_t *value;

    json_object_foreach(entry, key, value)
    {
        bool found = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            found = found || strcmp(key, known[i]) == 0;
        if (!found)
            FAIL("%s: unknown key '%s'; expected name, plugin, filters, on_error, config", where,
                 key);
    }
    return true;
}

static bool create_instance(struct chain *chain, struct tg_instance *in, json_t *entry,
                            size_t index, const char *plugin_dir, char *err, size_t err_size)
{
    json_t *name = json_object_get(entry, "name");
    json_t *plugin = json_object_get(entry, "plugin");
    json_t *on_error = json_object_get(entry, "on_error");
    json_t *config = json_object_get(entry, "config");
    char where[160];
    char path[1024];
    char init_err[512] = "";
    char *config_text;
    int rc;

    snprintf(where, sizeof(where), "plugins[%zu]", index);
    if (!json_is_object(entry))
        FAIL("%s: expected an object with name, plugin, filters, on_error and config", where);
    if (!check_instance_keys(entry, where, err, err_size))
        return false;
    if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 64 ||
        strspn(json_string_value(name), "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                        "0123456789_.-") != json_string_length(name))
        FAIL("%s.name: expected 1 to 64 letters, digits, '_', '.' or '-' naming the instance",
             where);
    for (size_t i = 0; i < index; i++) {
        if (strcmp(chain->instances[i].name, json_string_value(name)) == 0)
            FAIL("%s.name: '%s' is used by plugins[%zu] too; instance names must be unique",
                 where, json_string_value(name), i);
    }
    in->name = strdup(json_string_value(name));
    snprintf(where, sizeof(where), "plugins[%zu] (instance '%s')", index, in->name);
    snprintf(in->component, sizeof(in->component), "plugin:%s", in->name);

    if (!json_is_string(plugin))
        FAIL("%s.plugin: expected a path to a shared object or a plugin name", where);
    if (!resolve_path(json_string_value(plugin), plugin_dir, path, sizeof(path)))
        FAIL("%s.plugin: '%s' not found (looked for %s%s); check the path or plugin_dir", where,
             json_string_value(plugin), path,
             strchr(json_string_value(plugin), '/') ? "" : " and NAME.so in plugin_dir");
    in->path = strdup(path);

    if (on_error != NULL && !(json_is_string(on_error) &&
                              (strcmp(json_string_value(on_error), "pass") == 0 ||
                               strcmp(json_string_value(on_error), "drop") == 0)))
        FAIL("%s.on_error: expected \"pass\" or \"drop\"", where);
    in->drop_on_error = on_error != NULL && strcmp(json_string_value(on_error), "drop") == 0;

    if (config != NULL && !json_is_object(config))
        FAIL("%s.config: expected an object with the plugin's settings", where);
    if (!parse_filters(in, json_object_get(entry, "filters"), where, err, err_size))
        return false;
    if (!load_descriptor(in, where, err, err_size))
        return false;

    config_text = config ? json_dumps(config, JSON_COMPACT) : strdup("{}");
    if (config_text == NULL)
        FAIL("out of memory");
    rc = in->desc->init(&host, in, config_text, &in->state, init_err, sizeof(init_err));
    free(config_text);
    in->initialized = true; /* cleanup runs even after a failed init */
    if (rc != 0)
        FAIL("%s.config: plugin %s failed to start: %s", where, in->desc->name,
             init_err[0] ? init_err : "no reason given");
    return true;
}

static void destroy_instance(struct tg_instance *in)
{
    if (in->initialized && in->desc != NULL)
        in->desc->cleanup(in->state);
    if (in->handle != NULL)
        dlclose(in->handle);
    for (size_t i = 0; i < in->filter_count; i++)
        free(in->filters[i]);
    free(in->filters);
    free(in->name);
    free(in->path);
}

struct chain *chain_create(json_t *plugins, const char *plugin_dir, char *err, size_t err_size)
{
    struct chain *chain = calloc(1, sizeof(*chain));
    size_t count;

    if (chain == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    if (plugins == NULL || json_is_null(plugins))
        return chain;
    if (!json_is_array(plugins)) {
        snprintf(err, err_size, "plugins: expected an array of plugin instances");
        free(chain);
        return NULL;
    }

    count = json_array_size(plugins);
    chain->instances = calloc(count ? count : 1, sizeof(*chain->instances));
    if (chain->instances == NULL) {
        snprintf(err, err_size, "out of memory");
        free(chain);
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        chain->count = i + 1;
        if (!create_instance(chain, &chain->instances[i], json_array_get(plugins, i), i,
                             plugin_dir, err, err_size)) {
            chain_destroy(chain);
            return NULL;
        }
        log_info("plugin", "loaded instance '%s': %s %s from %s", chain->instances[i].name,
                 chain->instances[i].desc->name,
                 chain->instances[i].desc->version ? chain->instances[i].desc->version : "",
                 chain->instances[i].path);
    }
    return chain;
}

void chain_destroy(struct chain *chain)
{
    if (chain == NULL)
        return;
    for (size_t i = chain->count; i > 0; i--)
        destroy_instance(&chain->instances[i - 1]);
    free(chain->instances);
    free(chain);
}

size_t chain_instance_count(const struct chain *chain)
{
    return chain ? chain->count : 0;
}

/* ---- running ---- */

static bool instance_matches(const struct tg_instance *in, const char *topic)
{
    for (size_t i = 0; i < in->filter_count; i++) {
        if (topic_matches(in->filters[i], topic))
            return true;
    }
    return false;
}

static void call_cleanup(struct tg_call *call)
{
    free(call->topic);
    free(call->payload);
    msg_list_cleanup(&call->emitted);
}

/* Builds the replaced message, or returns NULL when out of memory. */
static struct msg *apply_replacement(struct msg *m, struct tg_call *call)
{
    const char *topic = call->topic ? call->topic : m->topic;
    const void *payload = call->replaced_payload ? call->payload : m->payload;
    size_t len = call->replaced_payload ? call->payload_len : m->payload_len;
    struct msg *out = msg_create(topic, strlen(topic), payload, len, m->qos, m->retain);

    if (out != NULL) {
        out->dup = m->dup;
        out->mqtt_id = m->mqtt_id;
        out->ts_ms = m->ts_ms;
    }
    return out;
}

static void move_emitted(struct tg_instance *in, struct tg_call *call, struct msg_list *out)
{
    for (size_t i = 0; i < call->emitted.count; i++) {
        if (msg_list_push(out, call->emitted.items[i]))
            atomic_fetch_add(&in->counters.emitted, 1);
        else
            msg_unref(call->emitted.items[i]);
    }
    call->emitted.count = 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool chain_run(struct chain *chain, struct msg *m, struct msg_list *out)
{
    struct msg_list emitted = {0};
    bool kept;

    for (size_t i = 0; chain != NULL && m != NULL && i < chain->count; i++) {
        struct tg_instance *in = &chain->instances[i];
        struct tg_call call = {.instance = in};
        struct tg_message view = {
            .struct_size = sizeof(view),
            .topic = m->topic,
            .topic_len = m->topic_len,
            .payload = m->payload,
            .payload_len = m->payload_len,
            .qos = m->qos,
            .retain = m->retain,
            .received_ms = m->ts_ms,
        };
        enum tg_result result;
        int64_t started;

        if (!instance_matches(in, m->topic))
            continue;

        started = now_ns();
        result = in->desc->transform(in->state, &view, &call);
        atomic_fetch_add(&in->counters.time_ns, (uint64_t)(now_ns() - started));
        atomic_fetch_add(&in->counters.calls, 1);

        if (call.host_error || (result != TG_PASS && result != TG_DROP)) {
            /* A failed call's replacement and emitted messages are void. */
            atomic_fetch_add(&in->counters.errors, 1);
            log_limited(&in->error_rl, LOG_WARN, in->component,
                        "transform failed on '%s': %s; %s the message", m->topic,
                        call.error[0] ? call.error
                                      : (result == TG_ERROR ? "no reason given"
                                                            : "unknown result code"),
                        in->drop_on_error ? "dropping" : "passing on");
            call_cleanup(&call);
            if (in->drop_on_error) {
                atomic_fetch_add(&in->counters.drops, 1);
                msg_unref(m);
                m = NULL;
            }
            continue;
        }

        move_emitted(in, &call, &emitted);
        if (result == TG_DROP) {
            atomic_fetch_add(&in->counters.drops, 1);
            msg_unref(m);
            m = NULL;
        } else {
            atomic_fetch_add(&in->counters.passes, 1);
            if (call.topic != NULL || call.replaced_payload) {
                struct msg *replaced = apply_replacement(m, &call);
                if (replaced != NULL) {
                    msg_unref(m);
                    m = replaced;
                }
            }
        }
        call_cleanup(&call);
    }

    kept = m != NULL && msg_list_push(out, m);
    if (m != NULL && !kept)
        msg_unref(m);
    for (size_t i = 0; i < emitted.count; i++) {
        if (!msg_list_push(out, emitted.items[i]))
            msg_unref(emitted.items[i]);
    }
    free(emitted.items);
    return kept;
}

void chain_render_metrics(const struct chain *chain, struct buf *out)
{
    static const struct {
        const char *name;
        const char *help;
        size_t offset;
    } series[] = {
        {"tidegate_plugin_calls_total", "Transform calls per plugin instance.",
         offsetof(struct instance_counters, calls)},
        {"tidegate_plugin_passes_total", "Messages an instance passed on.",
         offsetof(struct instance_counters, passes)},
        {"tidegate_plugin_drops_total", "Messages an instance dropped.",
         offsetof(struct instance_counters, drops)},
        {"tidegate_plugin_errors_total", "Failed transform calls per instance.",
         offsetof(struct instance_counters, errors)},
        {"tidegate_plugin_emitted_total", "Extra messages an instance emitted.",
         offsetof(struct instance_counters, emitted)},
        {"tidegate_plugin_time_seconds_total", "Time spent in an instance's transform.",
         offsetof(struct instance_counters, time_ns)},
    };

    if (chain == NULL || chain->count == 0)
        return;
    for (size_t k = 0; k < sizeof(series) / sizeof(series[0]); k++) {
        char line[512];
        int n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s counter\n", series[k].name,
                         series[k].help, series[k].name);
        buf_append(out, line, (size_t)n);
        for (size_t i = 0; i < chain->count; i++) {
            const struct tg_instance *in = &chain->instances[i];
            const atomic_uint_fast64_t *value =
                (const atomic_uint_fast64_t *)((const char *)&in->counters + series[k].offset);
            uint64_t v = atomic_load(value);
            if (series[k].offset == offsetof(struct instance_counters, time_ns))
                n = snprintf(line, sizeof(line), "%s{instance=\"%s\",plugin=\"%s\"} %.9f\n",
                             series[k].name, in->name, in->desc->name, (double)v / 1e9);
            else
                n = snprintf(line, sizeof(line), "%s{instance=\"%s\",plugin=\"%s\"} %llu\n",
                             series[k].name, in->name, in->desc->name, (unsigned long long)v);
            buf_append(out, line, (size_t)n);
        }
    }
}
