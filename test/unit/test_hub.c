/* Unit tests for the subscription tree: it must agree with topic_matches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "topic.h"

#define CLIENTS 8

struct client {
    struct hub_subscriber subscriber;
    int index;
    int deliveries;
};

static struct client clients[CLIENTS];
static uint64_t next_seq;

static void count_delivery(struct hub_subscriber *subscriber, void *arg)
{
    struct client *c = (struct client *)subscriber;
    int *total = arg;

    c->deliveries++;
    (*total)++;
}

static void count_delivery_any(struct hub_subscriber *subscriber, void *arg)
{
    (*(int *)arg)++;
}

static int publish(struct hub *hub, const char *topic)
{
    int total = 0;

    for (int i = 0; i < CLIENTS; i++)
        clients[i].deliveries = 0;
    size_t reported = hub_match(hub, topic, ++next_seq, count_delivery, &total);
    assert_int_equal(reported, (size_t)total);
    return total;
}

static int setup(void **state)
{
    memset(clients, 0, sizeof(clients));
    for (int i = 0; i < CLIENTS; i++)
        clients[i].index = i;
    *state = hub_create();
    return *state == NULL;
}

static int teardown(void **state)
{
    hub_destroy(*state);
    return 0;
}

static void test_exact_and_wildcards(void **state)
{
    struct hub *hub = *state;

    assert_non_null(hub_subscribe(hub, &clients[0].subscriber, "a/b"));
    assert_non_null(hub_subscribe(hub, &clients[1].subscriber, "a/+"));
    assert_non_null(hub_subscribe(hub, &clients[2].subscriber, "a/#"));
    assert_non_null(hub_subscribe(hub, &clients[3].subscriber, "#"));
    assert_non_null(hub_subscribe(hub, &clients[4].subscriber, "+/b"));

    assert_int_equal(publish(hub, "a/b"), 5);
    assert_int_equal(publish(hub, "a/c"), 3);
    assert_int_equal(clients[0].deliveries, 0);
    assert_int_equal(publish(hub, "a"), 2); /* a/# and # */
    assert_int_equal(clients[2].deliveries, 1);
    assert_int_equal(publish(hub, "a/b/c"), 2);
    assert_int_equal(publish(hub, "x/b"), 2); /* # and +/b */
}

static void test_empty_levels(void **state)
{
    struct hub *hub = *state;

    hub_subscribe(hub, &clients[0].subscriber, "/a");
    hub_subscribe(hub, &clients[1].subscriber, "a");
    hub_subscribe(hub, &clients[2].subscriber, "+/a");
    hub_subscribe(hub, &clients[3].subscriber, "a/+");

    assert_int_equal(publish(hub, "/a"), 2);
    assert_int_equal(clients[0].deliveries, 1);
    assert_int_equal(clients[2].deliveries, 1);
    assert_int_equal(publish(hub, "a"), 1);
    assert_int_equal(clients[1].deliveries, 1);
    assert_int_equal(publish(hub, "a/"), 1);
    assert_int_equal(clients[3].deliveries, 1);
}

static void test_dollar_topics(void **state)
{
    struct hub *hub = *state;

    hub_subscribe(hub, &clients[0].subscriber, "#");
    hub_subscribe(hub, &clients[1].subscriber, "+/broker");
    hub_subscribe(hub, &clients[2].subscriber, "$SYS/#");

    assert_int_equal(publish(hub, "$SYS/broker"), 1);
    assert_int_equal(clients[2].deliveries, 1);
    assert_int_equal(publish(hub, "x/broker"), 2);
}

static void test_overlapping_filters_once(void **state)
{
    struct hub *hub = *state;

    hub_subscribe(hub, &clients[0].subscriber, "a/#");
    hub_subscribe(hub, &clients[0].subscriber, "a/+/c");
    hub_subscribe(hub, &clients[0].subscriber, "a/b/c");
    hub_subscribe(hub, &clients[0].subscriber, "#");

    assert_int_equal(publish(hub, "a/b/c"), 1);
    assert_int_equal(clients[0].deliveries, 1);
}

static void test_unsubscribe_and_prune(void **state)
{
    struct hub *hub = *state;
    struct hub_sub *deep = hub_subscribe(hub, &clients[0].subscriber, "a/b/c/d");
    struct hub_sub *plus = hub_subscribe(hub, &clients[1].subscriber, "a/+/c/d");

    assert_int_equal(hub_subscription_count(hub), 2);
    assert_int_equal(publish(hub, "a/b/c/d"), 2);

    hub_unsubscribe(hub, deep);
    assert_int_equal(hub_subscription_count(hub), 1);
    assert_int_equal(publish(hub, "a/b/c/d"), 1);
    assert_int_equal(clients[1].deliveries, 1);

    hub_unsubscribe(hub, plus);
    hub_unsubscribe(hub, NULL);
    assert_int_equal(hub_subscription_count(hub), 0);
    assert_int_equal(publish(hub, "a/b/c/d"), 0);

    /* The pruned path can be used again. */
    assert_non_null(hub_subscribe(hub, &clients[2].subscriber, "a/b/c/d"));
    assert_int_equal(publish(hub, "a/b/c/d"), 1);
}

static void test_many_subscribers_one_filter(void **state)
{
    struct hub *hub = *state;
    enum { N = 5000 };
    struct hub_subscriber *subs = calloc(N, sizeof(*subs));
    struct hub_sub **handles = calloc(N, sizeof(*handles));
    int total = 0;

    for (int i = 0; i < N; i++)
        handles[i] = hub_subscribe(hub, &subs[i], i % 2 ? "dev/+/temp" : "dev/#");
    assert_int_equal(hub_match(hub, "dev/7/temp", ++next_seq, count_delivery_any, &total), N);

    /* Remove every third, in an order that moves entries around. */
    int left = N;
    for (int i = 0; i < N; i += 3) {
        hub_unsubscribe(hub, handles[i]);
        left--;
    }
    assert_int_equal(hub_match(hub, "dev/7/temp", ++next_seq, count_delivery_any, &total), left);
    for (int i = 0; i < N; i++) {
        if (i % 3 != 0)
            hub_unsubscribe(hub, handles[i]);
    }
    assert_int_equal(hub_subscription_count(hub), 0);
    free(handles);
    free(subs);
}

/* Cross-checks the tree against topic_matches on a table of filters and
 * topics, for every pair. */
static void test_agrees_with_topic_matches(void **state)
{
    static const char *const filters[] = {"#", "+", "+/+", "a/#", "a/+", "a/b", "/+", "+/#",
                                          "a/+/#", "$SYS/#", "+/b/+", "/#"};
    static const char *const topics[] = {"a", "a/b", "a/b/c", "/a", "/", "a/", "$SYS/x",
                                         "b/b/b", "//", "x"};
    struct hub *hub = *state;
    enum { F = sizeof(filters) / sizeof(filters[0]) };
    struct client subs[F];

    memset(subs, 0, sizeof(subs));
    for (size_t i = 0; i < F; i++)
        hub_subscribe(hub, &subs[i].subscriber, filters[i]);

    for (size_t t = 0; t < sizeof(topics) / sizeof(topics[0]); t++) {
        int total = 0;
        for (size_t i = 0; i < F; i++)
            subs[i].deliveries = 0;
        hub_match(hub, topics[t], ++next_seq, count_delivery, &total);
        for (size_t i = 0; i < F; i++) {
            int expected = topic_matches(filters[i], topics[t]) ? 1 : 0;
            if (subs[i].deliveries != expected)
                fail_msg("filter '%s' on topic '%s': delivered %d, expected %d", filters[i],
                         topics[t], subs[i].deliveries, expected);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exact_and_wildcards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dollar_topics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlapping_filters_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsubscribe_and_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_subscribers_one_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agrees_with_topic_matches, setup, teardown),
    };

    return cmocka_run_group_tests_name("hub", tests, NULL, NULL);
}
