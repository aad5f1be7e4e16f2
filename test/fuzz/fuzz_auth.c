/* libFuzzer target: credentials (JWTs and API keys) through the auth
 * wrapper around libjwt, with an HS256 secret and one API key. */
#include "auth.h"
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct auth *fuzz_auth;
static struct config fuzz_cfg;

static void setup(void)
{
    char path[] = "/tmp/tidegate-fuzz-secret-XXXXXX";
    char err[512];
    int fd = mkstemp(path);

    if (fd < 0 || write(fd, "fuzz-secret-0123456789abcdef0123456789", 38) != 38)
        abort();
    close(fd);
    config_init_defaults(&fuzz_cfg);
    free(fuzz_cfg.auth_jwt_algorithm);
    fuzz_cfg.auth_jwt_algorithm = strdup("HS256");
    free(fuzz_cfg.auth_jwt_key_file);
    fuzz_cfg.auth_jwt_key_file = strdup(path);
    fuzz_cfg.api_keys = json_loads(
        "[{\"name\":\"k\",\"sha256\":"
        "\"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\","
        "\"subscribe\":[\"a/#\"]}]",
        0, NULL);
    fuzz_auth = auth_create(&fuzz_cfg, err, sizeof(err));
    unlink(path);
    if (fuzz_auth == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct principal who;
    char err[256];
    char *text;

    if (fuzz_auth == NULL)
        setup();
    text = strndup((const char *)data, size);
    if (text == NULL)
        return 0;
    if (auth_authenticate(fuzz_auth, text, 1700000000000, &who, err, sizeof(err))) {
        /* Whatever passed must hold only valid filters. */
        for (size_t i = 0; i < who.subscribe_count; i++)
            principal_may_subscribe(&who, who.subscribe[i]) ? (void)0 : abort();
        principal_cleanup(&who);
    } else if (strlen(text) > 8 && strstr(err, text) != NULL) {
        abort(); /* a credential must never appear in an error message */
    }
    free(text);
    return 0;
}
