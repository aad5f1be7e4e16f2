/* Unit tests for the wrapper around libjwt: every sharp edge of libjwt 1.10
 * that the gateway guards, and API keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"

#define SECRET "unit-test-secret-0123456789abcdef0123456789"
#define NOW_S 1700000000LL

static char key_path[64];
static char err[512];

static void set(char **field, const char *value)
{
    free(*field);
    *field = strdup(value);
}

static struct auth *make_auth(struct config *cfg, const char *secret, const char *api_keys)
{
    FILE *f;

    snprintf(key_path, sizeof(key_path), "/tmp/tidegate-auth-XXXXXX");
    close(mkstemp(key_path));
    f = fopen(key_path, "w");
    fputs(secret, f);
    fclose(f);

    config_init_defaults(cfg);
    set(&cfg->auth_jwt_algorithm, "HS256");
    set(&cfg->auth_jwt_key_file, key_path);
    cfg->auth_jwt_leeway = 0;
    if (api_keys != NULL)
        cfg->api_keys = json_loads(api_keys, 0, NULL);
    return auth_create(cfg, err, sizeof(err));
}

/* Signs @claims_json with HS256 (or @alg) and the test secret. */
static char *sign(const char *claims_json, jwt_alg_t alg)
{
    jwt_t *jwt = NULL;
    char *token;

    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims_json), 0);
    if (alg == JWT_ALG_NONE)
        assert_int_equal(jwt_set_alg(jwt, alg, NULL, 0), 0);
    else
        assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)SECRET, strlen(SECRET)), 0);
    token = jwt_encode_str(jwt);
    jwt_free(jwt);
    assert_non_null(token);
    return token;
}

static bool check(struct auth *auth, const char *token, struct principal *who)
{
    err[0] = '\0';
    return auth_authenticate(auth, token, NOW_S * 1000, who, err, sizeof(err));
}

static void assert_err_contains(const char *needle)
{
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' does not contain '%s'", err, needle);
}

static void test_valid_token_gives_permissions(void **state)
{
    struct config cfg;
    struct auth *auth = make_auth(&cfg, SECRET, NULL);
    char *token = sign("{\"sub\":\"alice\",\"exp\":1700000600,\"subscribe\":[\"site/a/#\"],"
                       "\"publish\":[\"chat/+\"]}",
                       JWT_ALG_HS256);
    struct principal who;

    assert_non_null(auth);
    assert_true(check(auth, token, &who));
    assert_string_equal(who.name, "alice");
    assert_int_equal(who.expires_ms, 1700000600000LL);
    assert_true(principal_may_subscribe(&who, "site/a/+/temp"));
    assert_false(principal_may_subscribe(&who, "site/#"));
    assert_true(principal_may_publish(&who, "chat/room"));
    assert_false(principal_may_publish(&who, "chat/room/x"));
    assert_true(principal_may_read_topic(&who, "site/a/b"));
    assert_false(principal_may_read_topic(&who, "site/b"));
    principal_cleanup(&who);
    free(token);
    auth_destroy(auth);
    config_cleanup(&cfg);
    unlink(key_path);
}

static void test_sharp_edges_rejected(void **state)
{
    static const struct {
        const char *claims;
        jwt_alg_t alg;
        const char *expect;
    } cases[] = {
        {"{\"sub\":\"a\",\"exp\":1699999999}", JWT_ALG_HS256, "expired"},
        {"{\"sub\":\"a\",\"exp\":1700000600.5}", JWT_ALG_HS256, "'exp' must be an integer"},
        {"{\"sub\":\"a\",\"exp\":\"1700000600\"}", JWT_ALG_HS256, "'exp' must be an integer"},
        {"{\"sub\":\"a\"}", JWT_ALG_HS256, "'exp' must be an integer"},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"nbf\":1700000500}", JWT_ALG_HS256, "not valid yet"},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"nbf\":\"x\"}", JWT_ALG_HS256, "'nbf'"},
        {"{\"exp\":1700000600}", JWT_ALG_HS256, "'sub'"},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"subscribe\":[\"a/#\",3]}", JWT_ALG_HS256,
         "element 1"},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"subscribe\":\"a/#\"}", JWT_ALG_HS256,
         "must be an array"},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"publish\":[\"a/#/b\"]}", JWT_ALG_HS256,
         "not a valid topic filter"},
        {"{\"sub\":\"a\",\"exp\":1700000600}", JWT_ALG_HS384, "requires HS256"},
        {"{\"sub\":\"a\",\"exp\":1700000600}", JWT_ALG_NONE, "invalid token"},
    };
    struct config cfg;
    struct auth *auth = make_auth(&cfg, SECRET, NULL);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *token = sign(cases[i].claims, cases[i].alg);
        struct principal who;
        if (check(auth, token, &who))
            fail_msg("case %zu was accepted: %s", i, cases[i].claims);
        assert_err_contains(cases[i].expect);
        assert_null(strstr(err, token)); /* never echo the credential */
        free(token);
    }
    auth_destroy(auth);
    config_cleanup(&cfg);
    unlink(key_path);
}

static void test_tampered_signature_rejected(void **state)
{
    struct config cfg;
    struct auth *auth = make_auth(&cfg, SECRET, NULL);
    char *token = sign("{\"sub\":\"a\",\"exp\":1700000600}", JWT_ALG_HS256);
    struct principal who;

    token[strlen(token) - 2] = token[strlen(token) - 2] == 'A' ? 'B' : 'A';
    assert_false(check(auth, token, &who));
    assert_err_contains("signature");
    free(token);
    auth_destroy(auth);
    config_cleanup(&cfg);
    unlink(key_path);
}

static void test_short_or_missing_secret_refused(void **state)
{
    struct config cfg;
    struct auth *auth = make_auth(&cfg, "short\n", NULL);

    assert_null(auth);
    assert_err_contains("at least 32");
    assert_null(strstr(err, "short\n"));
    config_cleanup(&cfg);
    unlink(key_path);

    auth = make_auth(&cfg, "", NULL);
    assert_null(auth);
    config_cleanup(&cfg);
    unlink(key_path);

    config_init_defaults(&cfg);
    set(&cfg.auth_jwt_algorithm, "HS256");
    assert_null(auth_create(&cfg, err, sizeof(err)));
    assert_err_contains("auth_jwt_key_file is empty");
    set(&cfg.auth_jwt_algorithm, "none");
    assert_null(auth_create(&cfg, err, sizeof(err)));
    assert_err_contains("HS256, RS256 or ES256");
    config_cleanup(&cfg);
}

static void test_api_keys(void **state)
{
    /* SHA-256 of "foo". */
    struct config cfg;
    struct auth *auth = make_auth(
        &cfg, SECRET,
        "[{\"name\":\"bot\",\"sha256\":"
        "\"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\","
        "\"subscribe\":[\"lab/#\"],\"publish\":[\"cmd/+\"]}]");
    struct principal who;

    assert_non_null(auth);
    assert_true(check(auth, "foo", &who));
    assert_string_equal(who.name, "key:bot");
    assert_int_equal(who.expires_ms, 0);
    assert_true(principal_may_subscribe(&who, "lab/1"));
    assert_true(principal_may_publish(&who, "cmd/x"));
    principal_cleanup(&who);
    assert_false(check(auth, "bar", &who));
    assert_err_contains("unknown API key");
    auth_destroy(auth);
    config_cleanup(&cfg);
    unlink(key_path);

    auth = make_auth(&cfg, SECRET, "[{\"name\":\"bot\",\"sha256\":\"abc\"}]");
    assert_null(auth);
    assert_err_contains("api_keys[0].sha256");
    config_cleanup(&cfg);
    unlink(key_path);
}

static void test_anonymous_roles(void **state)
{
    struct config cfg;
    struct auth *auth;
    struct principal who;

    /* No authentication: anonymous reads everything, "$" topics too. */
    config_init_defaults(&cfg);
    auth = auth_create(&cfg, err, sizeof(err));
    assert_non_null(auth);
    assert_true(auth_anonymous(auth, &who));
    assert_true(principal_may_subscribe(&who, "$SYS/#"));
    assert_false(principal_may_publish(&who, "chat/x")); /* publish_allow is empty */
    principal_cleanup(&who);
    auth_destroy(auth);
    config_cleanup(&cfg);

    /* With tokens configured, anonymous clients are refused... */
    auth = make_auth(&cfg, SECRET, NULL);
    assert_false(auth_anonymous(auth, &who));
    auth_destroy(auth);
    /* ...unless allowed, and then "#" does not reach "$" topics. */
    cfg.allow_anonymous = true;
    auth = auth_create(&cfg, err, sizeof(err));
    assert_true(auth_anonymous(auth, &who));
    assert_true(principal_may_subscribe(&who, "a/#"));
    assert_false(principal_may_subscribe(&who, "$SYS/#"));
    principal_cleanup(&who);
    auth_destroy(auth);
    config_cleanup(&cfg);
    unlink(key_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_token_gives_permissions),
        cmocka_unit_test(test_sharp_edges_rejected),
        cmocka_unit_test(test_tampered_signature_rejected),
        cmocka_unit_test(test_short_or_missing_secret_refused),
        cmocka_unit_test(test_api_keys),
        cmocka_unit_test(test_anonymous_roles),
    };

    return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
