/* Unit tests for the window store, on real SQLite files in a temporary folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

struct fixture {
    char dir[64];
    char path[128];
    struct store *st;
    struct sequencer seq;
    struct store_options opts;
};

static char err[512];

static struct store *open_store(struct fixture *f)
{
    f->st = store_open(&f->opts, err, sizeof(err));
    if (f->st == NULL)
        fail_msg("store_open failed: %s", err);
    store_sequencer_state(f->st, &f->seq);
    return f->st;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/tidegate-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/window.db", f->dir);
    f->opts.path = f->path;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];

    store_close(f->st, f->seq.last_seq);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* Appends one message with @ts_ms (0: now) and returns its seq. */
static uint64_t append(struct fixture *f, const char *topic, const char *payload, bool retain,
                       int64_t ts_ms)
{
    struct msg *m = msg_create(topic, strlen(topic), payload, strlen(payload), 1, retain);

    sequencer_assign(&f->seq, m);
    if (ts_ms != 0)
        m->ts_ms = ts_ms;
    assert_int_equal(store_append(f->st, &m, 1), STORE_OK);
    uint64_t seq = m->seq;
    msg_unref(m);
    return seq;
}

static struct store_reader *reader(struct fixture *f)
{
    struct store_reader *r = store_reader_open(f->path, err, sizeof(err));

    if (r == NULL)
        fail_msg("store_reader_open failed: %s", err);
    return r;
}

static void history(struct store_reader *r, const char *filter, struct history_request req,
                    uint64_t upto, size_t limit, struct store_history *out)
{
    assert_int_equal(store_reader_history(r, filter, &req, upto, limit, out), STORE_OK);
}

static void test_insert_and_query_by_filter(void **state)
{
    struct fixture *f = *state;
    struct store_history h;
    struct store_reader *r;

    open_store(f);
    append(f, "site/a/temp", "1", false, 0);
    append(f, "site/b/temp", "2", false, 0);
    append(f, "site/a/hum", "3", false, 0);
    append(f, "other", "4", false, 0);
    r = reader(f);

    history(r, "site/+/temp", (struct history_request){.kind = HISTORY_LAST, .last = 10}, 100,
            100, &h);
    assert_int_equal(h.count, 2);
    assert_string_equal(h.msgs[0]->topic, "site/a/temp");
    assert_string_equal(h.msgs[1]->topic, "site/b/temp");
    assert_true(h.msgs[0]->seq < h.msgs[1]->seq);
    assert_true(h.recovered);
    store_history_cleanup(&h);

    history(r, "site/#", (struct history_request){.kind = HISTORY_LAST, .last = 2}, 100, 100, &h);
    assert_int_equal(h.count, 2);
    assert_string_equal(h.msgs[0]->topic, "site/b/temp"); /* the newest two, in order */
    assert_string_equal(h.msgs[1]->topic, "site/a/hum");
    assert_false(h.truncated);
    store_history_cleanup(&h);

    /* upto_seq hides what the loop has not delivered yet. */
    history(r, "#", (struct history_request){.kind = HISTORY_LAST, .last = 10}, 2, 100, &h);
    assert_int_equal(h.count, 2);
    assert_int_equal(h.msgs[1]->seq, 2);
    store_history_cleanup(&h);

    store_reader_close(r);
}

static void test_since_seq_resume(void **state)
{
    struct fixture *f = *state;
    struct history_request req = {.kind = HISTORY_SINCE_SEQ};
    struct store_history h;
    struct store_reader *r;

    open_store(f);
    for (int i = 0; i < 10; i++)
        append(f, i % 2 ? "odd" : "even", "x", false, 0);
    r = reader(f);

    snprintf(req.epoch, sizeof(req.epoch), "%s", store_epoch(f->st));
    req.seq = 4;
    history(r, "#", req, 10, 100, &h);
    assert_int_equal(h.count, 6);
    assert_int_equal(h.first_seq, 5);
    for (size_t i = 0; i < h.count; i++)
        assert_int_equal(h.msgs[i]->seq, 5 + i);
    assert_true(h.recovered);
    store_history_cleanup(&h);

    /* Another epoch's cursor is not recovered; the whole window is sent. */
    snprintf(req.epoch, sizeof(req.epoch), "0000");
    history(r, "#", req, 10, 100, &h);
    assert_false(h.recovered);
    assert_int_equal(h.count, 10);
    store_history_cleanup(&h);

    /* The limit keeps the newest messages and says it cut. */
    snprintf(req.epoch, sizeof(req.epoch), "%s", store_epoch(f->st));
    req.seq = 0;
    history(r, "#", req, 10, 3, &h);
    assert_int_equal(h.count, 3);
    assert_int_equal(h.first_seq, 8);
    assert_true(h.truncated);
    assert_false(h.recovered);
    store_history_cleanup(&h);

    store_reader_close(r);
}

static void test_retention_by_count(void **state)
{
    struct fixture *f = *state;
    struct history_request req = {.kind = HISTORY_SINCE_SEQ};
    struct store_history h;
    struct store_reader *r;

    f->opts.max_messages = 5;
    open_store(f);
    for (int i = 0; i < 12; i++)
        append(f, "t", "x", false, 0);
    r = reader(f);

    snprintf(req.epoch, sizeof(req.epoch), "%s", store_epoch(f->st));
    req.seq = 2;
    history(r, "t", req, 100, 100, &h);
    assert_int_equal(h.count, 5);
    assert_int_equal(h.oldest_seq, 8);
    assert_false(h.recovered); /* seqs 3 to 7 are gone */
    store_history_cleanup(&h);

    req.seq = 7;
    history(r, "t", req, 100, 100, &h);
    assert_true(h.recovered);
    assert_int_equal(h.count, 5);
    store_history_cleanup(&h);
    store_reader_close(r);
}

static void test_retention_by_age_keeps_latest(void **state)
{
    struct fixture *f = *state;
    struct store_history h;
    struct store_reader *r;
    int64_t base = 1700000000000;

    f->opts.window_ms = 60000;
    open_store(f);
    append(f, "old/topic", "old", false, base);
    append(f, "t", "a", false, base + 1000);
    append(f, "t", "b", false, base + 120000); /* trims the first two */
    r = reader(f);

    history(r, "#", (struct history_request){.kind = HISTORY_LAST, .last = 10}, 100, 100, &h);
    assert_int_equal(h.count, 1);
    assert_int_equal(h.msgs[0]->payload_len, 1);
    assert_memory_equal(h.msgs[0]->payload, "b", 1);
    store_history_cleanup(&h);

    history(r, "#", (struct history_request){.kind = HISTORY_SINCE_MS, .since_ms = base}, 100,
            100, &h);
    assert_false(h.recovered);
    store_history_cleanup(&h);

    /* The latest value of a topic outlives the window. */
    assert_int_equal(store_reader_latest(r, "#", 100, &h), STORE_OK);
    assert_int_equal(h.count, 2);
    assert_string_equal(h.msgs[0]->topic, "old/topic");
    assert_string_equal(h.msgs[1]->topic, "t");
    assert_int_equal(h.msgs[1]->payload_len, 1);
    assert_memory_equal(h.msgs[1]->payload, "b", 1);
    store_history_cleanup(&h);
    store_reader_close(r);
}

static void test_empty_retained_clears_latest(void **state)
{
    struct fixture *f = *state;
    struct store_history h;
    struct store_reader *r;

    open_store(f);
    append(f, "dev/state", "on", true, 0);
    append(f, "dev/other", "1", false, 0);
    append(f, "dev/state", "", true, 0);
    r = reader(f);

    assert_int_equal(store_reader_latest(r, "dev/#", 100, &h), STORE_OK);
    assert_int_equal(h.count, 1);
    assert_string_equal(h.msgs[0]->topic, "dev/other");
    store_history_cleanup(&h);
    store_reader_close(r);
}

/* Appends @count messages in one transaction, as the batched pipeline does. */
static void append_batch(struct fixture *f, const char *const *topics, const char *const *payloads,
                         const bool *retain, size_t count)
{
    struct msg *batch[16];

    assert_true(count <= 16);
    for (size_t i = 0; i < count; i++) {
        batch[i] = msg_create(topics[i], strlen(topics[i]), payloads[i], strlen(payloads[i]), 1,
                              retain[i]);
        sequencer_assign(&f->seq, batch[i]);
    }
    assert_int_equal(store_append(f->st, batch, count), STORE_OK);
    for (size_t i = 0; i < count; i++)
        msg_unref(batch[i]);
}

static void test_batch_latest_is_newest_per_topic(void **state)
{
    static const char *const topics[] = {"a", "b", "a", "c", "a", "b", "c"};
    static const char *const payloads[] = {"a1", "b1", "", "c1", "a3", "", "c2"};
    static const bool retain[] = {false, true, true, false, false, true, false};
    struct fixture *f = *state;
    struct store_history h;
    struct store_reader *r;

    open_store(f);
    append(f, "b", "b0", true, 0);
    append_batch(f, topics, payloads, retain, 7);
    r = reader(f);

    /* a is cleared in the middle, then set again. b is cleared last. c ends
     * on c2. */
    assert_int_equal(store_reader_latest(r, "#", 100, &h), STORE_OK);
    assert_int_equal(h.count, 2);
    assert_string_equal(h.msgs[0]->topic, "a");
    assert_memory_equal(h.msgs[0]->payload, "a3", 2);
    assert_string_equal(h.msgs[1]->topic, "c");
    assert_memory_equal(h.msgs[1]->payload, "c2", 2);
    store_history_cleanup(&h);

    /* Every message of the batch is in the window. */
    history(r, "#", (struct history_request){.kind = HISTORY_LAST, .last = 100}, 100, 100, &h);
    assert_int_equal(h.count, 8);
    store_history_cleanup(&h);
    store_reader_close(r);
}

static void test_restart_keeps_epoch_and_seq(void **state)
{
    struct fixture *f = *state;
    char epoch[SEQUENCER_EPOCH_LEN + 1];
    uint64_t last;

    open_store(f);
    snprintf(epoch, sizeof(epoch), "%s", store_epoch(f->st));
    append(f, "t", "1", false, 0);
    last = append(f, "t", "2", false, 0);
    store_close(f->st, f->seq.last_seq);

    open_store(f);
    assert_string_equal(store_epoch(f->st), epoch);
    assert_int_equal(f->seq.last_seq, last); /* a clean stop continues without a gap */
    assert_int_equal(append(f, "t", "3", false, 0), last + 1);
}

static void test_crash_never_reuses_seq(void **state)
{
    struct fixture *f = *state;
    uint64_t stored;

    open_store(f);
    stored = append(f, "t", "1", false, 0);
    /* Seqs handed out after the last commit were never stored; a crash
     * (no clean close) must not hand them out again. */
    for (int i = 0; i < 5; i++) {
        struct msg *m = msg_create("t", 1, "x", 1, 0, false);
        sequencer_assign(&f->seq, m);
        msg_unref(m);
    }
    store_close(f->st, 0); /* as after a crash: the reservation stays */

    open_store(f);
    assert_true(f->seq.last_seq >= stored + 5);
}

static void test_new_file_new_epoch(void **state)
{
    struct fixture *f = *state;
    char first[SEQUENCER_EPOCH_LEN + 1];

    open_store(f);
    snprintf(first, sizeof(first), "%s", store_epoch(f->st));
    assert_int_equal(strlen(first), SEQUENCER_EPOCH_LEN);
    store_close(f->st, 0);
    f->st = NULL;

    assert_int_equal(unlink(f->path), 0);
    unlink(f->path); /* WAL and SHM files may remain; the database is new */
    open_store(f);
    assert_string_not_equal(store_epoch(f->st), first);
    assert_int_equal(f->seq.last_seq, 0);
}

static void test_duplicate_detection(void **state)
{
    struct fixture *f = *state;
    struct msg *m = msg_create("dev/1", 5, "payload", 7, 1, false);
    struct msg *other = msg_create("dev/1", 5, "different", 9, 1, false);

    open_store(f);
    m->mqtt_id = 17;
    sequencer_assign(&f->seq, m);
    assert_int_equal(store_append(f->st, &m, 1), STORE_OK);

    m->dup = true;
    assert_true(store_is_duplicate(f->st, m));
    other->mqtt_id = 17;
    other->dup = true;
    assert_false(store_is_duplicate(f->st, other));
    msg_unref(m);
    msg_unref(other);
}

static void test_quotes_and_wildcard_characters_exact(void **state)
{
    struct fixture *f = *state;
    static const char *const topics[] = {"a'b\"c", "100%/x_y", "it's; DROP TABLE messages;--",
                                         "\xc3\xa9t\xc3\xa9/%_"};
    struct store_history h;
    struct store_reader *r;

    open_store(f);
    for (size_t i = 0; i < 4; i++)
        append(f, topics[i], topics[i], false, 0);
    r = reader(f);
    for (size_t i = 0; i < 4; i++) {
        history(r, topics[i], (struct history_request){.kind = HISTORY_LAST, .last = 5}, 100,
                100, &h);
        assert_int_equal(h.count, 1);
        assert_string_equal(h.msgs[0]->topic, topics[i]);
        assert_memory_equal(h.msgs[0]->payload, topics[i], strlen(topics[i]));
        store_history_cleanup(&h);
    }
    store_reader_close(r);
}

static void test_many_topics_use_seq_scan(void **state)
{
    struct fixture *f = *state;
    struct store_history h;
    struct store_reader *r;
    char topic[32];

    open_store(f);
    for (int i = 0; i < 300; i++) {
        snprintf(topic, sizeof(topic), "dev/%d/temp", i);
        append(f, topic, "1", false, 0);
        snprintf(topic, sizeof(topic), "dev/%d/hum", i);
        append(f, topic, "2", false, 0);
    }
    r = reader(f);
    history(r, "dev/+/temp", (struct history_request){.kind = HISTORY_LAST, .last = 1000}, 10000,
            1000, &h);
    assert_int_equal(h.count, 300);
    for (size_t i = 0; i < h.count; i++)
        assert_non_null(strstr(h.msgs[i]->topic, "/temp"));
    store_history_cleanup(&h);

    history(r, "dev/7/+", (struct history_request){.kind = HISTORY_LAST, .last = 1000}, 10000,
            1000, &h);
    assert_int_equal(h.count, 2);
    store_history_cleanup(&h);
    store_reader_close(r);
}

static void test_disk_full_then_recovers(void **state)
{
    struct fixture *f = *state;
    char big[4096];
    int failures = 0;

    open_store(f);
    append(f, "t", "small", false, 0);

    /* PRAGMA max_page_count makes SQLite report a full disk. */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(store_set_max_pages(f->st, 1), STORE_OK);
    for (int i = 0; i < 50; i++) {
        struct msg *m = msg_create("t", 1, big, strlen(big), 0, false);
        sequencer_assign(&f->seq, m);
        if (store_append(f->st, &m, 1) != STORE_OK)
            failures++;
        msg_unref(m);
    }
    assert_true(failures > 0);
    assert_non_null(strstr(store_error(f->st), "full"));

    assert_int_equal(store_set_max_pages(f->st, 1000000), STORE_OK);
    uint64_t seq = append(f, "t", "after", false, 0);
    assert_true(seq > 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_insert_and_query_by_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_since_seq_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_by_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_by_age_keeps_latest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_retained_clears_latest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_latest_is_newest_per_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_epoch_and_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_never_reuses_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_file_new_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_detection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quotes_and_wildcard_characters_exact, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_topics_use_seq_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full_then_recovers, setup, teardown),
    };

    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
