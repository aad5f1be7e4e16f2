/* A test plugin built for a future ABI version: the loader must reject it. */
#include <tidegate/plugin.h>

#include <stddef.h>

static const struct tg_plugin descriptor = {
    .abi_version = TIDEGATE_PLUGIN_ABI_VERSION + 1,
    .struct_size = sizeof(struct tg_plugin),
    .name = "wrong_abi",
};

const struct tg_plugin *tidegate_plugin_entry(void);

const struct tg_plugin *tidegate_plugin_entry(void)
{
    return &descriptor;
}
