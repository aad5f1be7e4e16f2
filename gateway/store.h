/*
 * The window store: a rolling window of recent messages in one SQLite file
 * (WAL mode), the latest message of every topic, and the store's epoch.
 *
 * One writer (struct store) appends sequenced messages in batches, one
 * transaction per batch, and trims the window by age and count in the same
 * transaction. Readers (struct store_reader) have their own connections and
 * never block the writer: WAL lets them read a snapshot while it writes.
 *
 * Threads: a struct store or struct store_reader is used by one thread at a
 * time. Errors return STORE_ERR and leave the SQLite message in the object,
 * for store_error() / store_reader_error().
 */
#ifndef TIDEGATE_STORE_H
#define TIDEGATE_STORE_H

#include "msg.h"
#include "protocol.h"
#include "sequencer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_OK 0
#define STORE_ERR (-1)

/* The schema version in PRAGMA user_version. */
#define STORE_SCHEMA_VERSION 1

struct store_options {
    const char *path;
    int64_t window_ms;    /* keep messages this long; 0 keeps them regardless of age */
    int64_t max_messages; /* keep at most this many; 0 for no count limit */
};

struct store;
struct store_reader;

/*
 * Opens (creating and migrating as needed) the database at @opts->path.
 * Returns NULL with the reason in @err. @opts->path is copied.
 */
struct store *store_open(const struct store_options *opts, char *err, size_t err_size);

/* Records the last seq used, so a clean restart continues without a gap,
 * and closes the database. Accepts NULL. */
void store_close(struct store *st, uint64_t last_seq);

const char *store_error(const struct store *st);
const char *store_epoch(const struct store *st);

/*
 * Returns the sequencer state to continue from: the store's epoch, and a
 * seq past every seq this file ever handed out, including ones a crash
 * kept from being recorded.
 */
void store_sequencer_state(const struct store *st, struct sequencer *out);

/*
 * Returns true when a message the broker redelivered (MQTT DUP flag) is
 * already in the window: same MQTT packet id, topic and payload among the
 * newest rows. Such a message was committed but its PUBACK was lost.
 */
bool store_is_duplicate(struct store *st, const struct msg *m);

/*
 * Appends @count sequenced messages, updates the latest value of their
 * topics and trims the window, all in one transaction. On failure nothing
 * of the batch is stored.
 */
int store_append(struct store *st, struct msg *const *msgs, size_t count);

/*
 * Caps the database at @pages pages (PRAGMA max_page_count), so inserts fail
 * as on a full disk once it is reached. Returns STORE_ERR if the pragma
 * failed.
 */
int store_set_max_pages(struct store *st, long pages);

/* Sets how long a write waits for a lock held by another process. */
void store_set_busy_timeout(struct store *st, int ms);

/* ---- readers ---- */

struct store_reader *store_reader_open(const char *path, char *err, size_t err_size);
void store_reader_close(struct store_reader *r);
const char *store_reader_error(const struct store_reader *r);

struct store_history {
    struct msg **msgs;   /* in seq order; each holds one reference owned here */
    size_t count;
    bool recovered;      /* everything the request asked for is in msgs */
    bool truncated;      /* the request limit cut older messages off */
    uint64_t first_seq;  /* seq of msgs[0], or 0 when empty */
    uint64_t oldest_seq; /* oldest seq still in the window, or 0 when empty */
    char epoch[SEQUENCER_EPOCH_LEN + 1];
};

void store_history_cleanup(struct store_history *h);

/*
 * Reads the history that @req requests on @filter, only messages with
 * seq <= @upto_seq, at most @limit of them (the newest, when cut).
 */
int store_reader_history(struct store_reader *r, const char *filter,
                         const struct history_request *req, uint64_t upto_seq, size_t limit,
                         struct store_history *out);

/*
 * Reads the latest message of every topic that matches @filter, in topic
 * order, at most @limit. Topics whose value was cleared by an empty
 * retained message are left out.
 */
int store_reader_latest(struct store_reader *r, const char *filter, size_t limit,
                        struct store_history *out);

#endif
