/* tidegate: bridges MQTT topics to browsers over WebSocket and HTTP. */
#include "config.h"
#include "gateway.h"
#include "log.h"

#include <stdio.h>
#include <sys/resource.h>

extern char **environ;

/* Each client holds a socket, so allow as many descriptors as permitted. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct config cfg;
    struct gateway gw;
    enum config_action action;
    int status = 1;

    config_init_defaults(&cfg);
    action = config_load(&cfg, argc, argv, environ);
    if (action != CONFIG_RUN) {
        config_cleanup(&cfg);
        return action == CONFIG_EXIT_OK ? 0 : 2;
    }

    log_set_level(cfg.log_level);
    raise_fd_limit();

    if (gateway_start(&gw, &cfg))
        status = gateway_run(&gw);
    else
        log_error("gateway", "start-up failed; see the errors above");

    gateway_cleanup(&gw);
    config_cleanup(&cfg);
    return status;
}
