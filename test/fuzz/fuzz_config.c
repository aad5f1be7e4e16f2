/* libFuzzer target: config files through the JSON config loader. */
#include "config.h"

#include <jansson.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config cfg;
    char err[512];
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);

    config_init_defaults(&cfg);
    if (root != NULL && config_apply_json(&cfg, root, "fuzz.json", err, sizeof(err)))
        config_validate(&cfg, err, sizeof(err));
    json_decref(root);
    config_cleanup(&cfg);
    return 0;
}
