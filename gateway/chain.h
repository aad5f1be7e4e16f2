/*
 * The plugin chain: loads transform plugins (include/tidegate/plugin.h),
 * creates the configured instances in order and runs each message through
 * the instances whose topic filters match it.
 *
 * A chain is built from the "plugins" array of the config file. Loading
 * fails, with a message naming the instance and the config key, on any of
 * these: a missing file, a file that is not a shared object, a missing
 * entry point, an ABI version mismatch, an invalid instance entry, or an
 * init that fails (the message then carries the plugin's own reason). At run time a failing plugin is
 * logged (rate-limited), counted and handled by its instance's on_error
 * policy; it never stops the gateway.
 *
 * Threads: chain_run is called by one thread at a time (the pipeline
 * serialises it). Counters are
 * atomics, so chain_render_metrics may run on another thread while the
 * chain is not being destroyed.
 */
#ifndef TIDEGATE_CHAIN_H
#define TIDEGATE_CHAIN_H

#include "buf.h"
#include "msg.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Largest payload a plugin may produce, and most messages one call may
 * emit: a runaway plugin cannot flood the window. */
#define CHAIN_MAX_PAYLOAD_BYTES (1024 * 1024)
#define CHAIN_MAX_EMITS_PER_CALL 16

struct chain;

struct msg_list {
    struct msg **items; /* each holds one reference owned by the list */
    size_t count;
    size_t cap;
};

void msg_list_cleanup(struct msg_list *list);
bool msg_list_push(struct msg_list *list, struct msg *m);

/*
 * Builds a chain from @plugins (a JSON array, or NULL for an empty chain).
 * A plugin named without a '/' is looked up in @plugin_dir as NAME.so or
 * NAME/NAME.so. Returns NULL with the reason in @err.
 */
struct chain *chain_create(json_t *plugins, const char *plugin_dir, char *err, size_t err_size);

/* Calls every instance's cleanup and unloads the plugins. Accepts NULL. */
void chain_destroy(struct chain *chain);

size_t chain_instance_count(const struct chain *chain);

/*
 * Runs @m (adopted) through the chain and appends what comes out to @out:
 * the message, possibly replaced, unless it was dropped, then every message
 * the plugins emitted, in order. Returns true when the message itself came
 * out (as the first item appended).
 */
bool chain_run(struct chain *chain, struct msg *m, struct msg_list *out);

/* Appends the per-instance counters in the Prometheus text format. */
void chain_render_metrics(const struct chain *chain, struct buf *out);

#endif
