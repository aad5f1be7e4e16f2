/* Unit tests for topic name and filter validation and matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "topic.h"

static bool name_ok(const char *s)
{
    return topic_check_name(s, strlen(s)) == NULL;
}

static bool filter_ok(const char *s)
{
    return topic_check_filter(s, strlen(s)) == NULL;
}

static void test_name_validation(void **state)
{
    assert_true(name_ok("a"));
    assert_true(name_ok("a/b/c"));
    assert_true(name_ok("/a"));
    assert_true(name_ok("a//b"));
    assert_true(name_ok("/"));
    assert_true(name_ok("$SYS/broker"));
    assert_true(name_ok("caf\xc3\xa9/temp"));

    assert_false(name_ok(""));
    assert_false(name_ok("a/+/b"));
    assert_false(name_ok("a/#"));
    assert_false(name_ok("a+b"));
    assert_false(name_ok("bad\xff"));
    assert_false(topic_check_name("a\0b", 3) == NULL);
}

static void test_filter_validation(void **state)
{
    assert_true(filter_ok("#"));
    assert_true(filter_ok("+"));
    assert_true(filter_ok("a/#"));
    assert_true(filter_ok("a/+/c"));
    assert_true(filter_ok("+/+"));
    assert_true(filter_ok("/#"));
    assert_true(filter_ok("a//+"));

    assert_false(filter_ok(""));
    assert_false(filter_ok("a/#/b"));
    assert_false(filter_ok("a#"));
    assert_false(filter_ok("a/b#"));
    assert_false(filter_ok("a+"));
    assert_false(filter_ok("a/+b/c"));
    assert_false(filter_ok("##"));
    assert_false(filter_ok("bad\xc0\xaf"));
}

static void test_filter_reason_text(void **state)
{
    const char *why = topic_check_filter("a/#/b", 5);

    assert_non_null(why);
    assert_non_null(strstr(why, "last level"));
    why = topic_check_filter("a+", 2);
    assert_non_null(strstr(why, "whole level"));
}

static void test_matching_plain(void **state)
{
    assert_true(topic_matches("a/b", "a/b"));
    assert_false(topic_matches("a/b", "a/c"));
    assert_false(topic_matches("a/b", "a/b/c"));
    assert_false(topic_matches("a/b/c", "a/b"));
    assert_false(topic_matches("a", "/a"));
    assert_false(topic_matches("/a", "a"));
    assert_true(topic_matches("/a", "/a"));
}

static void test_matching_plus(void **state)
{
    assert_true(topic_matches("a/+/c", "a/b/c"));
    assert_true(topic_matches("a/+/c", "a//c"));
    assert_false(topic_matches("a/+/c", "a/b/d"));
    assert_false(topic_matches("a/+", "a"));
    assert_true(topic_matches("a/+", "a/"));
    assert_false(topic_matches("a/+", "a/b/c"));
    assert_true(topic_matches("+", "a"));
    assert_false(topic_matches("+", "/a"));
    assert_true(topic_matches("+/+", "/a"));
    assert_true(topic_matches("+/a", "/a"));
}

static void test_matching_hash(void **state)
{
    assert_true(topic_matches("#", "a"));
    assert_true(topic_matches("#", "a/b/c"));
    assert_true(topic_matches("#", "/"));
    assert_true(topic_matches("a/#", "a"));
    assert_true(topic_matches("a/#", "a/b"));
    assert_true(topic_matches("a/#", "a/b/c"));
    assert_false(topic_matches("a/#", "ab"));
    assert_false(topic_matches("a/#", "b/a"));
    assert_true(topic_matches("a/+/#", "a/b"));
    assert_true(topic_matches("a/+/#", "a/b/c/d"));
    assert_false(topic_matches("a/+/#", "a"));
}

static void test_matching_dollar_topics(void **state)
{
    assert_false(topic_matches("#", "$SYS/broker/load"));
    assert_false(topic_matches("+/broker/load", "$SYS/broker/load"));
    assert_true(topic_matches("$SYS/#", "$SYS/broker/load"));
    assert_true(topic_matches("$SYS/+/load", "$SYS/broker/load"));
    assert_true(topic_matches("a/#", "a/$b"));
    assert_true(topic_matches("a/+", "a/$b"));
}

static void test_filter_covers(void **state)
{
    static const struct {
        const char *allowed;
        const char *requested;
        bool covered;
    } cases[] = {
        {"site/a/#", "site/a/+/temp", true},
        {"site/a/#", "site/a", true},
        {"site/a/#", "site/a/#", true},
        {"site/a/#", "site/#", false},
        {"site/a/#", "site/+/x", false},
        {"site/+/temp", "site/a/temp", true},
        {"site/+/temp", "site/+/temp", true},
        {"site/+/temp", "site/#", false},
        {"site/+/temp", "site/a/temp/x", false},
        {"a/b", "a/b", true},
        {"a/b", "a/+", false},
        {"a/b", "a/b/c", false},
        {"#", "anything/+/#", true},
        {"#", "$SYS/#", false},
        {"+/x", "$SYS/x", false},
        {"$SYS/#", "$SYS/broker/+", true},
        {"a/+/#", "a", false},
        {"a/+/#", "a/b", true},
        {"+", "/", false},
        {"+/+", "/", true},
        {"/#", "/a/b", true},
        {"/#", "a", false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (topic_filter_covers(cases[i].allowed, cases[i].requested) != cases[i].covered)
            fail_msg("'%s' covering '%s': expected %s", cases[i].allowed, cases[i].requested,
                     cases[i].covered ? "true" : "false");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_validation),
        cmocka_unit_test(test_filter_validation),
        cmocka_unit_test(test_filter_reason_text),
        cmocka_unit_test(test_matching_plain),
        cmocka_unit_test(test_matching_plus),
        cmocka_unit_test(test_matching_hash),
        cmocka_unit_test(test_matching_dollar_topics),
        cmocka_unit_test(test_filter_covers),
    };

    return cmocka_run_group_tests_name("topic", tests, NULL, NULL);
}
