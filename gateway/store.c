#include "store.h"
#include "topic.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Seqs handed out ahead of the newest stored message and recorded first, so
 * after a crash the next start skips past any seq already sent to clients. */
#define STORE_SEQ_RESERVE 1000

/* How many of the newest rows a redelivered message is compared with. */
#define STORE_DUP_WINDOW 10000

/* Above this many matching topics a history query scans by seq instead of
 * looking each topic up in the (topic, seq) index. */
#define STORE_INDEX_TOPICS_MAX 64

struct topic_entry {
    char *name;
    int64_t id;
    struct topic_entry *next;
};

/* name -> id, for both writer and readers. */
struct topic_map {
    struct topic_entry **buckets;
    size_t bucket_count;
    size_t count;
    struct topic_entry **by_index; /* every entry, in id order of loading */
    size_t by_index_cap;
    int64_t max_id;
};

struct store {
    sqlite3 *db;
    char *path;
    struct store_options opts;
    char epoch[SEQUENCER_EPOCH_LEN + 1];
    uint64_t seq_reserved;  /* seqs below this may have been handed out */
    uint64_t max_seq;       /* newest stored seq */
    int64_t max_ts;
    struct topic_map topics;
    char error[512];

    sqlite3_stmt *insert_message;
    sqlite3_stmt *insert_topic;
    sqlite3_stmt *upsert_latest;
    sqlite3_stmt *delete_latest;
    sqlite3_stmt *trim_count;
    sqlite3_stmt *trim_age;
    sqlite3_stmt *find_dup;
    sqlite3_stmt *set_meta;
    sqlite3_stmt *begin;
    sqlite3_stmt *commit;
    int64_t last_trim_ms;   /* ts of the newest message at the last age trim */
    uint64_t count_floor;   /* seqs up to this one are gone (or never existed) */
};

struct store_reader {
    sqlite3 *db;
    char epoch[SEQUENCER_EPOCH_LEN + 1];
    struct topic_map topics;
    char error[512];
};

static const char schema_v1[] =
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "CREATE TABLE topics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
    "CREATE TABLE messages ("
    "  seq INTEGER PRIMARY KEY,"
    "  ts INTEGER NOT NULL,"
    "  topic_id INTEGER NOT NULL,"
    "  qos INTEGER NOT NULL,"
    "  retain INTEGER NOT NULL,"
    "  encoding INTEGER NOT NULL,"
    "  mqtt_id INTEGER NOT NULL,"
    "  payload BLOB NOT NULL);"
    /* Age trimming and since_ms queries seek on ts instead of scanning. */
    "CREATE INDEX messages_ts ON messages (ts);"
    "CREATE INDEX messages_topic_seq ON messages (topic_id, seq);"
    "CREATE TABLE latest ("
    "  topic_id INTEGER PRIMARY KEY,"
    "  seq INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  qos INTEGER NOT NULL,"
    "  retain INTEGER NOT NULL,"
    "  encoding INTEGER NOT NULL,"
    "  payload BLOB NOT NULL);";

/* ---- topic map ---- */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
    return h;
}

static void topic_map_cleanup(struct topic_map *map)
{
    for (size_t i = 0; i < map->count; i++) {
        free(map->by_index[i]->name);
        free(map->by_index[i]);
    }
    free(map->by_index);
    free(map->buckets);
    memset(map, 0, sizeof(*map));
}

static int64_t topic_map_find(const struct topic_map *map, const char *name)
{
    struct topic_entry *e;

    if (map->bucket_count == 0)
        return 0;
    for (e = map->buckets[hash_name(name) & (map->bucket_count - 1)]; e; e = e->next) {
        if (strcmp(e->name, name) == 0)
            return e->id;
    }
    return 0;
}

static bool topic_map_add(struct topic_map *map, const char *name, int64_t id)
{
    struct topic_entry *e;

    if (map->count + 1 > map->bucket_count) {
        size_t count = map->bucket_count ? map->bucket_count * 2 : 256;
        struct topic_entry **buckets = calloc(count, sizeof(*buckets));
        if (buckets == NULL)
            return false;
        for (size_t i = 0; i < map->count; i++) {
            struct topic_entry *old = map->by_index[i];
            size_t slot = hash_name(old->name) & (count - 1);
            old->next = buckets[slot];
            buckets[slot] = old;
        }
        free(map->buckets);
        map->buckets = buckets;
        map->bucket_count = count;
    }
    if (map->count == map->by_index_cap) {
        size_t cap = map->by_index_cap ? map->by_index_cap * 2 : 256;
        struct topic_entry **all = realloc(map->by_index, cap * sizeof(*all));
        if (all == NULL)
            return false;
        map->by_index = all;
        map->by_index_cap = cap;
    }

    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->name = strdup(name)) == NULL) {
        free(e);
        return false;
    }
    e->id = id;
    size_t slot = hash_name(name) & (map->bucket_count - 1);
    e->next = map->buckets[slot];
    map->buckets[slot] = e;
    map->by_index[map->count++] = e;
    if (id > map->max_id)
        map->max_id = id;
    return true;
}

/* Loads topics with ids above the ones already known. */
static int topic_map_refresh(struct topic_map *map, sqlite3 *db)
{
    sqlite3_stmt *stmt;
    int rc;

    rc = sqlite3_prepare_v2(db, "SELECT id, name FROM topics WHERE id > ? ORDER BY id", -1,
                            &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_int64(stmt, 1, map->max_id);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (!topic_map_add(map, (const char *)sqlite3_column_text(stmt, 1),
                           sqlite3_column_int64(stmt, 0))) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static const char *topic_map_name(const struct topic_map *map, int64_t id)
{
    /* Ids are loaded in order, so by_index is sorted by id. */
    size_t lo = 0, hi = map->count;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (map->by_index[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < map->count && map->by_index[lo]->id == id)
        return map->by_index[lo]->name;
    return NULL;
}

/* ---- helpers ---- */

static void set_error(char *buf, size_t size, sqlite3 *db, const char *what)
{
    snprintf(buf, size, "%s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static int configure_connection(sqlite3 *db)
{
    int rc;

    sqlite3_busy_timeout(db, 5000);
    /* WAL lets readers run beside the writer. synchronous=NORMAL makes a
     * commit survive a killed process (the WAL is written before COMMIT
     * returns) but not a power loss; FULL would fsync on every commit. */
    /* A commit writes each page it changed to the WAL, and a single-message
     * commit changes a few rows in four B-trees. 1 KiB pages write about a
     * quarter of the bytes of the default 4 KiB. Only a new file takes it. */
    rc = exec(db, "PRAGMA page_size=1024");
    if (rc == SQLITE_OK)
        rc = exec(db, "PRAGMA journal_mode=WAL");
    if (rc == SQLITE_OK)
        rc = exec(db, "PRAGMA synchronous=NORMAL");
    return rc;
}

static bool random_epoch(char out[SEQUENCER_EPOCH_LEN + 1])
{
    unsigned char bytes[SEQUENCER_EPOCH_LEN / 2];

    if (getrandom(bytes, sizeof(bytes), 0) != (ssize_t)sizeof(bytes))
        return false;
    for (size_t i = 0; i < sizeof(bytes); i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
    return true;
}

static int read_meta_text(sqlite3 *db, const char *key, char *out, size_t size)
{
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?", -1, &stmt, NULL);

    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        snprintf(out, size, "%s", (const char *)sqlite3_column_text(stmt, 0));
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        out[0] = '\0';
        rc = SQLITE_OK;
    }
    sqlite3_finalize(stmt);
    return rc;
}

static int64_t query_int(sqlite3 *db, const char *sql, int *rc_out)
{
    sqlite3_stmt *stmt;
    int64_t value = 0;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            value = sqlite3_column_int64(stmt, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
        }
        sqlite3_finalize(stmt);
    }
    *rc_out = rc;
    return value;
}

/* Creates the schema in a new file, or checks the version of an old one. */
static int migrate(struct store *st)
{
    int rc;
    int64_t version = query_int(st->db, "PRAGMA user_version", &rc);
    char sql[256];

    if (rc != SQLITE_OK)
        return rc;
    if (version == STORE_SCHEMA_VERSION)
        return SQLITE_OK;
    if (version > STORE_SCHEMA_VERSION) {
        snprintf(st->error, sizeof(st->error),
                 "%s has schema version %lld, newer than this tidegate's %d: use a newer "
                 "tidegate or another --db file",
                 st->path, (long long)version, STORE_SCHEMA_VERSION);
        return SQLITE_ERROR;
    }

    /* Version 0: a new file. Create everything and a new epoch at once. */
    if (!random_epoch(st->epoch)) {
        snprintf(st->error, sizeof(st->error), "cannot read random bytes for the epoch");
        return SQLITE_ERROR;
    }
    rc = exec(st->db, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
        rc = exec(st->db, schema_v1);
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO meta VALUES ('epoch', '%s'), ('seq_reserved', 0);"
                 "PRAGMA user_version = %d;",
                 st->epoch, STORE_SCHEMA_VERSION);
        rc = exec(st->db, sql);
    }
    if (rc == SQLITE_OK)
        rc = exec(st->db, "COMMIT");
    else
        exec(st->db, "ROLLBACK");
    return rc;
}

static int prepare_statements(struct store *st)
{
    static const struct {
        size_t offset;
        const char *sql;
    } statements[] = {
        {offsetof(struct store, insert_message),
         "INSERT INTO messages (seq, ts, topic_id, qos, retain, encoding, mqtt_id, payload) "
         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"},
        {offsetof(struct store, insert_topic), "INSERT INTO topics (name) VALUES (?)"},
        {offsetof(struct store, upsert_latest),
         "INSERT INTO latest (topic_id, seq, ts, qos, retain, encoding, payload) "
         "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (topic_id) DO UPDATE SET "
         "seq = excluded.seq, ts = excluded.ts, qos = excluded.qos, retain = excluded.retain, "
         "encoding = excluded.encoding, payload = excluded.payload"},
        {offsetof(struct store, delete_latest), "DELETE FROM latest WHERE topic_id = ?"},
        {offsetof(struct store, trim_count), "DELETE FROM messages WHERE seq <= ?"},
        {offsetof(struct store, trim_age), "DELETE FROM messages WHERE ts < ?"},
        {offsetof(struct store, find_dup),
         "SELECT 1 FROM messages WHERE seq > ? AND mqtt_id = ? AND topic_id = ? "
         "AND payload = ? LIMIT 1"},
        {offsetof(struct store, set_meta), "INSERT OR REPLACE INTO meta VALUES (?, ?)"},
        {offsetof(struct store, begin), "BEGIN IMMEDIATE"},
        {offsetof(struct store, commit), "COMMIT"},
    };

    for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++) {
        sqlite3_stmt **slot = (sqlite3_stmt **)((char *)st + statements[i].offset);
        int rc = sqlite3_prepare_v3(st->db, statements[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                                    slot, NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static int load_state(struct store *st)
{
    char text[64];
    int rc = read_meta_text(st->db, "epoch", st->epoch, sizeof(st->epoch));

    if (rc == SQLITE_OK && strlen(st->epoch) != SEQUENCER_EPOCH_LEN) {
        snprintf(st->error, sizeof(st->error), "%s has no valid epoch in its meta table",
                 st->path);
        return SQLITE_CORRUPT;
    }
    if (rc == SQLITE_OK)
        rc = read_meta_text(st->db, "seq_reserved", text, sizeof(text));
    if (rc == SQLITE_OK)
        st->seq_reserved = strtoull(text, NULL, 10);
    if (rc == SQLITE_OK)
        st->max_seq = (uint64_t)query_int(st->db, "SELECT max(seq) FROM messages", &rc);
    if (rc == SQLITE_OK)
        st->max_ts = query_int(st->db, "SELECT max(ts) FROM messages", &rc);
    if (rc == SQLITE_OK) {
        int64_t oldest = query_int(st->db, "SELECT min(seq) FROM messages", &rc);
        st->count_floor = oldest > 0 ? (uint64_t)oldest - 1 : st->max_seq;
    }
    if (rc == SQLITE_OK) {
        int64_t latest_seq = query_int(st->db, "SELECT max(seq) FROM latest", &rc);
        int64_t latest_ts = query_int(st->db, "SELECT max(ts) FROM latest", &rc);
        if ((uint64_t)latest_seq > st->max_seq)
            st->max_seq = (uint64_t)latest_seq;
        if (latest_ts > st->max_ts)
            st->max_ts = latest_ts;
    }
    if (rc == SQLITE_OK)
        rc = topic_map_refresh(&st->topics, st->db);
    return rc;
}

struct store *store_open(const struct store_options *opts, char *err, size_t err_size)
{
    struct store *st = calloc(1, sizeof(*st));
    int rc;

    if (st == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    st->opts = *opts;
    st->path = strdup(opts->path);
    st->opts.path = st->path;

    rc = sqlite3_open_v2(opts->path, &st->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = configure_connection(st->db);
    if (rc == SQLITE_OK)
        rc = migrate(st);
    if (rc == SQLITE_OK)
        rc = load_state(st);
    if (rc == SQLITE_OK)
        rc = prepare_statements(st);
    if (rc != SQLITE_OK) {
        if (st->error[0] == '\0')
            set_error(st->error, sizeof(st->error), st->db, opts->path);
        snprintf(err, err_size, "%s", st->error);
        store_close(st, 0);
        return NULL;
    }
    return st;
}

static void finalize_all(struct store *st)
{
    sqlite3_finalize(st->insert_message);
    sqlite3_finalize(st->insert_topic);
    sqlite3_finalize(st->upsert_latest);
    sqlite3_finalize(st->delete_latest);
    sqlite3_finalize(st->trim_count);
    sqlite3_finalize(st->trim_age);
    sqlite3_finalize(st->find_dup);
    sqlite3_finalize(st->set_meta);
    sqlite3_finalize(st->begin);
    sqlite3_finalize(st->commit);
}

static int write_seq_reserved(struct store *st, uint64_t value)
{
    int rc;

    sqlite3_reset(st->set_meta);
    sqlite3_bind_text(st->set_meta, 1, "seq_reserved", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st->set_meta, 2, (sqlite3_int64)value);
    rc = sqlite3_step(st->set_meta);
    sqlite3_reset(st->set_meta);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

void store_close(struct store *st, uint64_t last_seq)
{
    if (st == NULL)
        return;
    /* A clean stop lowers the reservation to what was really used. */
    if (st->set_meta != NULL && last_seq > 0 && last_seq >= st->max_seq) {
        if (write_seq_reserved(st, last_seq + 1) == SQLITE_OK)
            st->seq_reserved = last_seq + 1;
    }
    finalize_all(st);
    if (st->db != NULL) {
        exec(st->db, "PRAGMA wal_checkpoint(TRUNCATE)");
        sqlite3_close_v2(st->db);
    }
    topic_map_cleanup(&st->topics);
    free(st->path);
    free(st);
}

const char *store_error(const struct store *st)
{
    return st->error;
}

const char *store_epoch(const struct store *st)
{
    return st->epoch;
}

void store_sequencer_state(const struct store *st, struct sequencer *out)
{
    uint64_t next = st->max_seq + 1;

    memset(out, 0, sizeof(*out));
    memcpy(out->epoch, st->epoch, sizeof(out->epoch));
    if (st->seq_reserved > next)
        next = st->seq_reserved;
    out->last_seq = next - 1;
    out->last_ts_ms = st->max_ts;
}

/* Returns the topic's id, adding it when new. 0 on failure. */
static int64_t topic_id_for(struct store *st, const char *name)
{
    int64_t id = topic_map_find(&st->topics, name);
    int rc;

    if (id != 0)
        return id;
    sqlite3_reset(st->insert_topic);
    sqlite3_bind_text(st->insert_topic, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st->insert_topic);
    sqlite3_reset(st->insert_topic);
    if (rc != SQLITE_DONE)
        return 0;
    id = sqlite3_last_insert_rowid(st->db);
    /* NOTE: if the transaction rolls back, this id is forgotten with it:
     * store_append drops the whole map on failure. */
    if (!topic_map_add(&st->topics, name, id))
        return 0;
    return id;
}

bool store_is_duplicate(struct store *st, const struct msg *m)
{
    int64_t topic = topic_map_find(&st->topics, m->topic);
    bool found;

    if (topic == 0)
        return false;
    sqlite3_reset(st->find_dup);
    sqlite3_bind_int64(st->find_dup, 1,
                       st->max_seq > STORE_DUP_WINDOW ? (sqlite3_int64)(st->max_seq -
                                                                        STORE_DUP_WINDOW)
                                                      : 0);
    sqlite3_bind_int(st->find_dup, 2, m->mqtt_id);
    sqlite3_bind_int64(st->find_dup, 3, topic);
    sqlite3_bind_blob(st->find_dup, 4, m->payload, (int)m->payload_len, SQLITE_STATIC);
    found = sqlite3_step(st->find_dup) == SQLITE_ROW;
    sqlite3_reset(st->find_dup);
    return found;
}

static int step_done(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);

    sqlite3_reset(stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int insert_one(struct store *st, const struct msg *m, int64_t topic)
{
    sqlite3_bind_int64(st->insert_message, 1, (sqlite3_int64)m->seq);
    sqlite3_bind_int64(st->insert_message, 2, m->ts_ms);
    sqlite3_bind_int64(st->insert_message, 3, topic);
    sqlite3_bind_int(st->insert_message, 4, m->qos);
    sqlite3_bind_int(st->insert_message, 5, m->retain);
    sqlite3_bind_int(st->insert_message, 6, (int)m->encoding);
    sqlite3_bind_int(st->insert_message, 7, m->mqtt_id);
    sqlite3_bind_blob(st->insert_message, 8, m->payload, (int)m->payload_len, SQLITE_STATIC);
    return step_done(st->insert_message);
}

/* Makes @m, the newest message of its topic, the topic's latest value. */
static int set_latest(struct store *st, const struct msg *m, int64_t topic)
{
    /* An empty retained payload clears the topic's value, as in MQTT. */
    if (m->retain && m->payload_len == 0) {
        sqlite3_bind_int64(st->delete_latest, 1, topic);
        return step_done(st->delete_latest);
    }
    sqlite3_bind_int64(st->upsert_latest, 1, topic);
    sqlite3_bind_int64(st->upsert_latest, 2, (sqlite3_int64)m->seq);
    sqlite3_bind_int64(st->upsert_latest, 3, m->ts_ms);
    sqlite3_bind_int(st->upsert_latest, 4, m->qos);
    sqlite3_bind_int(st->upsert_latest, 5, m->retain);
    sqlite3_bind_int(st->upsert_latest, 6, (int)m->encoding);
    sqlite3_bind_blob(st->upsert_latest, 7, m->payload, (int)m->payload_len, SQLITE_STATIC);
    return step_done(st->upsert_latest);
}

/* The age limit is applied at most once per this many ms of message time,
 * because a DELETE in every single-message transaction would cost more
 * than the insert. Messages may stay up to this much past the window. */
#define STORE_TRIM_INTERVAL_MS 1000

static int trim(struct store *st, uint64_t max_seq, int64_t max_ts)
{
    int rc = SQLITE_OK;

    /* The count limit is exact: a DELETE only runs once the window is full. */
    if (st->opts.max_messages > 0 && max_seq > st->count_floor + (uint64_t)st->opts.max_messages) {
        uint64_t floor = max_seq - (uint64_t)st->opts.max_messages;
        sqlite3_bind_int64(st->trim_count, 1, (sqlite3_int64)floor);
        rc = step_done(st->trim_count);
        if (rc == SQLITE_OK)
            st->count_floor = floor;
    }
    if (rc == SQLITE_OK && st->opts.window_ms > 0 &&
        max_ts - st->last_trim_ms >= STORE_TRIM_INTERVAL_MS) {
        sqlite3_bind_int64(st->trim_age, 1, max_ts - st->opts.window_ms);
        rc = step_done(st->trim_age);
        if (rc == SQLITE_OK)
            st->last_trim_ms = max_ts;
    }
    return rc;
}

/*
 * Sets the latest value of each topic in the batch from its newest message
 * only, since the rows older messages would write are overwritten in the
 * same transaction anyway. @topics contains each message's topic id.
 */
static int set_latest_values(struct store *st, struct msg *const *msgs, const int64_t *topics,
                             size_t count)
{
    size_t cap = 16;
    int64_t *seen;
    int rc = SQLITE_OK;

    if (count == 1)
        return set_latest(st, msgs[0], topics[0]);

    /* An open-addressing set of the topic ids already done. Topic ids are
     * above 0, so 0 marks a free slot. */
    while (cap < 2 * count)
        cap *= 2;
    seen = calloc(cap, sizeof(*seen));
    if (seen == NULL)
        return SQLITE_NOMEM;

    for (size_t i = count; i-- > 0 && rc == SQLITE_OK;) {
        size_t slot = (size_t)topics[i] * 0x9E3779B97F4A7C15ULL & (cap - 1);
        while (seen[slot] != 0 && seen[slot] != topics[i])
            slot = (slot + 1) & (cap - 1);
        if (seen[slot] != 0)
            continue;
        seen[slot] = topics[i];
        rc = set_latest(st, msgs[i], topics[i]);
    }
    free(seen);
    return rc;
}

int store_append(struct store *st, struct msg *const *msgs, size_t count)
{
    uint64_t max_seq = st->max_seq;
    int64_t max_ts = st->max_ts;
    int64_t topics_before = st->topics.max_id;
    size_t topic_count_before = st->topics.count;
    int rc;

    if (count == 0)
        return STORE_OK;

    int64_t *topics = malloc(count * sizeof(*topics));
    if (topics == NULL) {
        snprintf(st->error, sizeof(st->error), "storing messages failed: out of memory");
        return STORE_ERR;
    }

    rc = step_done(st->begin);
    for (size_t i = 0; rc == SQLITE_OK && i < count; i++) {
        topics[i] = topic_id_for(st, msgs[i]->topic);
        rc = topics[i] != 0 ? insert_one(st, msgs[i], topics[i]) : SQLITE_ERROR;
        if (msgs[i]->seq > max_seq)
            max_seq = msgs[i]->seq;
        if (msgs[i]->ts_ms > max_ts)
            max_ts = msgs[i]->ts_ms;
    }
    if (rc == SQLITE_OK)
        rc = set_latest_values(st, msgs, topics, count);
    free(topics);
    if (rc == SQLITE_OK && max_seq + STORE_SEQ_RESERVE / 2 >= st->seq_reserved)
        rc = write_seq_reserved(st, max_seq + STORE_SEQ_RESERVE);
    int64_t trimmed_ms = st->last_trim_ms;
    uint64_t count_floor = st->count_floor;
    if (rc == SQLITE_OK)
        rc = trim(st, max_seq, max_ts);
    if (rc == SQLITE_OK)
        rc = step_done(st->commit);

    if (rc != SQLITE_OK) {
        set_error(st->error, sizeof(st->error), st->db, "storing messages failed");
        exec(st->db, "ROLLBACK");
        st->last_trim_ms = trimmed_ms; /* the trim rolled back with the rest */
        st->count_floor = count_floor;
        /* Topic ids added in the failed transaction do not exist: reload. */
        if (st->topics.max_id != topics_before || st->topics.count != topic_count_before) {
            topic_map_cleanup(&st->topics);
            topic_map_refresh(&st->topics, st->db);
        }
        return STORE_ERR;
    }
    if (max_seq + STORE_SEQ_RESERVE / 2 >= st->seq_reserved)
        st->seq_reserved = max_seq + STORE_SEQ_RESERVE;
    st->max_seq = max_seq;
    st->max_ts = max_ts;
    return STORE_OK;
}

void store_set_busy_timeout(struct store *st, int ms)
{
    sqlite3_busy_timeout(st->db, ms);
}

int store_set_max_pages(struct store *st, long pages)
{
    char sql[64];

    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %ld", pages);
    return exec(st->db, sql) == SQLITE_OK ? STORE_OK : STORE_ERR;
}

/* ---- readers ---- */

struct store_reader *store_reader_open(const char *path, char *err, size_t err_size)
{
    struct store_reader *r = calloc(1, sizeof(*r));
    int rc;

    if (r == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(r->db, 5000);
        rc = read_meta_text(r->db, "epoch", r->epoch, sizeof(r->epoch));
    }
    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "%s: %s", path, r->db ? sqlite3_errmsg(r->db) : "out of memory");
        store_reader_close(r);
        return NULL;
    }
    return r;
}

void store_reader_close(struct store_reader *r)
{
    if (r == NULL)
        return;
    sqlite3_close_v2(r->db);
    topic_map_cleanup(&r->topics);
    free(r);
}

const char *store_reader_error(const struct store_reader *r)
{
    return r->error;
}

void store_history_cleanup(struct store_history *h)
{
    for (size_t i = 0; i < h->count; i++)
        msg_unref(h->msgs[i]);
    free(h->msgs);
    memset(h, 0, sizeof(*h));
}

static bool history_push(struct store_history *h, struct msg *m, size_t *cap)
{
    if (h->count == *cap) {
        size_t next = *cap ? *cap * 2 : 64;
        struct msg **msgs = realloc(h->msgs, next * sizeof(*msgs));
        if (msgs == NULL)
            return false;
        h->msgs = msgs;
        *cap = next;
    }
    h->msgs[h->count++] = m;
    return true;
}

/* Builds a message from a row: seq, ts, topic_id, qos, retain, payload. */
static struct msg *row_to_msg(struct store_reader *r, sqlite3_stmt *stmt)
{
    const char *topic = topic_map_name(&r->topics, sqlite3_column_int64(stmt, 2));
    const void *payload = sqlite3_column_blob(stmt, 5);
    size_t len = (size_t)sqlite3_column_bytes(stmt, 5);
    struct msg *m;

    if (topic == NULL)
        return NULL;
    m = msg_create(topic, strlen(topic), payload, len, (uint8_t)sqlite3_column_int(stmt, 3),
                   sqlite3_column_int(stmt, 4) != 0);
    if (m != NULL) {
        m->seq = (uint64_t)sqlite3_column_int64(stmt, 0);
        m->ts_ms = sqlite3_column_int64(stmt, 1);
    }
    return m;
}

/* Marks the ids of the topics matching @filter; returns how many match. */
static size_t match_topics(struct store_reader *r, const char *filter, uint8_t *marks,
                           json_t *ids)
{
    size_t matched = 0;

    for (size_t i = 0; i < r->topics.count; i++) {
        if (topic_matches(filter, r->topics.by_index[i]->name)) {
            marks[i] = 1;
            matched++;
            json_array_append_new(ids, json_integer(r->topics.by_index[i]->id));
        }
    }
    return matched;
}

static bool topic_marked(const struct store_reader *r, const uint8_t *marks, int64_t id)
{
    size_t lo = 0, hi = r->topics.count;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->topics.by_index[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->topics.count && r->topics.by_index[lo]->id == id && marks[lo];
}

/*
 * Reads, newest first, up to @want rows with seq in (@after, @upto] and
 * ts >= @since_ts on the marked topics, then puts them in seq order.
 */
static int read_range(struct store_reader *r, const uint8_t *marks, size_t matched, json_t *ids,
                      uint64_t after, uint64_t upto, int64_t since_ts, size_t want,
                      struct store_history *out)
{
    static const char by_index_sql[] =
        "SELECT seq, ts, topic_id, qos, retain, payload FROM messages "
        "WHERE topic_id IN (SELECT value FROM json_each(?4)) AND seq > ?1 AND seq <= ?2 "
        "AND ts >= ?3 ORDER BY seq DESC";
    static const char by_seq_sql[] = "SELECT seq, ts, topic_id, qos, retain, payload FROM messages "
                                     "WHERE seq > ?1 AND seq <= ?2 AND ts >= ?3 ORDER BY seq DESC";
    bool use_index = matched <= STORE_INDEX_TOPICS_MAX;
    sqlite3_stmt *stmt;
    size_t cap = 0;
    char *ids_text = NULL;
    int rc;

    rc = sqlite3_prepare_v2(r->db, use_index ? by_index_sql : by_seq_sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_int64(stmt, 1, (sqlite3_int64)after);
    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)upto);
    sqlite3_bind_int64(stmt, 3, since_ts);
    if (use_index) {
        ids_text = json_dumps(ids, JSON_COMPACT);
        sqlite3_bind_text(stmt, 4, ids_text ? ids_text : "[]", -1, SQLITE_TRANSIENT);
    }

    while (out->count < want && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct msg *m;
        if (!use_index && !topic_marked(r, marks, sqlite3_column_int64(stmt, 2)))
            continue;
        m = row_to_msg(r, stmt);
        if (m == NULL || !history_push(out, m, &cap)) {
            msg_unref(m);
            rc = SQLITE_NOMEM;
            break;
        }
    }
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        rc = SQLITE_OK;
    sqlite3_finalize(stmt);
    free(ids_text);

    for (size_t i = 0; i < out->count / 2; i++) {
        struct msg *tmp = out->msgs[i];
        out->msgs[i] = out->msgs[out->count - 1 - i];
        out->msgs[out->count - 1 - i] = tmp;
    }
    return rc;
}

int store_reader_history(struct store_reader *r, const char *filter,
                         const struct history_request *req, uint64_t upto_seq, size_t limit,
                         struct store_history *out)
{
    uint8_t *marks = NULL;
    json_t *ids = json_array();
    uint64_t after = 0;
    int64_t since_ts = INT64_MIN;
    size_t want = limit;
    size_t matched;
    int64_t oldest_ts;
    int rc;

    memset(out, 0, sizeof(*out));
    memcpy(out->epoch, r->epoch, sizeof(out->epoch));

    /* One read transaction, so every query below reads the same snapshot. */
    rc = exec(r->db, "BEGIN");
    if (rc == SQLITE_OK)
        rc = topic_map_refresh(&r->topics, r->db);
    if (rc == SQLITE_OK)
        out->oldest_seq = (uint64_t)query_int(r->db, "SELECT min(seq) FROM messages", &rc);
    if (rc == SQLITE_OK)
        oldest_ts = query_int(r->db, "SELECT min(ts) FROM messages", &rc);
    if (rc != SQLITE_OK)
        goto done;

    marks = calloc(r->topics.count + 1, 1);
    if (marks == NULL || ids == NULL) {
        rc = SQLITE_NOMEM;
        goto done;
    }
    matched = match_topics(r, filter, marks, ids);

    /* Recovered means the window still contains every message after the
     * cursor, and the cursor belongs to this store's epoch. */
    out->recovered = true;
    switch (req->kind) {
    case HISTORY_NONE:
        want = 0;
        break;
    case HISTORY_LAST:
        if (req->last < want)
            want = (size_t)req->last;
        break;
    case HISTORY_SINCE_MS:
        since_ts = req->since_ms;
        out->recovered = out->oldest_seq <= 1 || oldest_ts <= req->since_ms;
        break;
    case HISTORY_SINCE_SEQ:
        if (strcmp(req->epoch, r->epoch) != 0 || req->seq > upto_seq) {
            out->recovered = false;
        } else {
            after = req->seq;
            out->recovered = out->oldest_seq == 0 ? true : req->seq + 1 >= out->oldest_seq;
        }
        break;
    }

    if (want > 0 && matched > 0) {
        /* Reading one row more than requested shows whether anything was
         * cut off. A "last N" request within the limit requested no more
         * than N, so its extra row is no loss. */
        rc = read_range(r, marks, matched, ids, after, upto_seq, since_ts, want + 1, out);
        if (rc == SQLITE_OK && out->count > want) {
            msg_unref(out->msgs[0]);
            memmove(out->msgs, out->msgs + 1, (out->count - 1) * sizeof(*out->msgs));
            out->count--;
            out->truncated = req->kind != HISTORY_LAST || req->last > limit;
        }
    }
    if (out->truncated)
        out->recovered = false;
    if (out->count > 0)
        out->first_seq = out->msgs[0]->seq;

done:
    if (rc != SQLITE_OK) {
        set_error(r->error, sizeof(r->error), r->db, "reading history failed");
        store_history_cleanup(out);
    }
    exec(r->db, "COMMIT");
    free(marks);
    json_decref(ids);
    return rc == SQLITE_OK ? STORE_OK : STORE_ERR;
}

int store_reader_latest(struct store_reader *r, const char *filter, size_t limit,
                        struct store_history *out)
{
    sqlite3_stmt *stmt = NULL;
    size_t cap = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    memcpy(out->epoch, r->epoch, sizeof(out->epoch));
    out->recovered = true;

    rc = exec(r->db, "BEGIN");
    if (rc == SQLITE_OK)
        rc = topic_map_refresh(&r->topics, r->db);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(r->db,
                                "SELECT l.seq, l.ts, l.topic_id, l.qos, l.retain, l.payload "
                                "FROM latest l JOIN topics t ON t.id = l.topic_id "
                                "ORDER BY t.name",
                                -1, &stmt, NULL);
    while (rc == SQLITE_OK && out->count < limit) {
        int step = sqlite3_step(stmt);
        const char *name;
        struct msg *m;

        if (step != SQLITE_ROW) {
            rc = step == SQLITE_DONE ? SQLITE_OK : step;
            break;
        }
        name = topic_map_name(&r->topics, sqlite3_column_int64(stmt, 2));
        if (name == NULL || !topic_matches(filter, name))
            continue;
        m = row_to_msg(r, stmt);
        if (m == NULL || !history_push(out, m, &cap)) {
            msg_unref(m);
            rc = SQLITE_NOMEM;
        }
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_OK) {
        set_error(r->error, sizeof(r->error), r->db, "reading latest values failed");
        store_history_cleanup(out);
    }
    exec(r->db, "COMMIT");
    return rc == SQLITE_OK ? STORE_OK : STORE_ERR;
}
