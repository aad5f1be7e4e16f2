/*
 * The pipeline between ingest and the hub: it runs the plugin chain, gives
 * each message its seq and arrival time, commits it to the window store,
 * and then hands it to the event loop for fan-out, so the loop never waits
 * for the disk. In commit mode this work runs on Paho's thread, whose
 * PUBACK waits for the commit anyway; in batched mode on the pipeline's
 * own thread, in group commits of everything queued.
 *
 * Delivery guarantee: in the default "commit" mode pipeline_submit returns
 * only after the message is committed, and Paho sends the PUBACK after the
 * message-arrived callback returns, so the broker keeps (and redelivers)
 * anything a killed gateway had not stored. In "batched" mode it returns
 * at once: faster, but messages queued at a crash are lost.
 *
 * While the store fails (disk full, I/O error, locked file) messages still
 * flow live, unstored, and every batch retries the store.
 */
#ifndef TIDEGATE_PIPELINE_H
#define TIDEGATE_PIPELINE_H

#include "config.h"
#include "mailbox.h"
#include "msg.h"
#include "sequencer.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct pipeline;

/*
 * Opens the store named in @cfg and starts the thread. Returns NULL with
 * the reason logged (the store could not be opened). Borrows @cfg and @mb.
 */
struct pipeline *pipeline_create(const struct config *cfg, struct mailbox *mb);

/* Starts the pipeline's thread. Returns false when it could not start. */
bool pipeline_start(struct pipeline *p);

/* Stops taking messages, commits what is queued, closes the store. */
void pipeline_destroy(struct pipeline *p);

/*
 * Adopts @m. Called on Paho's thread. In commit mode, blocks until @m is
 * committed (or the store failed on it and it went out live).
 */
void pipeline_submit(struct pipeline *p, struct msg *m);

/* The epoch and the last seq handed out before any new message; read once
 * at start-up by the loop. */
void pipeline_initial_state(const struct pipeline *p, struct sequencer *out);

bool pipeline_store_healthy(const struct pipeline *p);

/*
 * Builds a new plugin chain from @plugins (borrowed) and hands it to the
 * pipeline thread, which swaps it in between two batches, so no message is
 * lost or runs through half a chain. On failure the old chain keeps running and
 * the reason is logged; returns false.
 */
bool pipeline_reload_plugins(struct pipeline *p, json_t *plugins, const char *plugin_dir);

#endif
