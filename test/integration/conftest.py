"""Fixtures for the integration tests: a Mosquitto broker and a gateway factory.

Run from the repository root with
    /usr/bin/python3 -m pytest -p no:cacheprovider test/integration
The gateway binary comes from $TIDEGATE_BIN, default build/gateway/tidegate.
"""

import itertools
import os
import subprocess

import pytest

from support import (
    TIDEGATE_BIN,
    Broker,
    Gateway,
    clean_env,
    free_port,
    require_binary,
    sync_with_subscription,
)

_client_ids = itertools.count(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the gateway and broker logs to the report of a failed test phase."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    logs = list(getattr(item, "tidegate_logs", []))
    broker = getattr(item, "funcargs", {}).get("broker")
    if broker is not None:
        logs += [(f"mosquitto log {path.name}", path) for path in broker.log_paths]
    for title, path in logs:
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            text = f"(could not read {path}: {exc})"
        report.sections.append((f"Captured stderr {title}", text[-20000:]))


def _register_log(request, title, path):
    if not hasattr(request.node, "tidegate_logs"):
        request.node.tidegate_logs = []
    request.node.tidegate_logs.append((title, path))


@pytest.fixture
def broker(request, tmp_path):
    """A Mosquitto broker on a free 127.0.0.1 port, stopped by PID at teardown."""
    instance = Broker(tmp_path)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def gateway_factory(request, tmp_path, broker):
    """Start gateways against the broker fixture.

    gateway_factory(*extra_args, ready=True, sync=True, env=None) starts the
    binary, waits for /healthz, then (with ready) for /readyz 200, then (with
    sync) until a probe message reaches a WebSocket client. At teardown each
    gateway still running gets SIGTERM and must exit 0 within 10 s.
    """
    require_binary()
    started = []

    def start(*extra_args, ready=True, sync=True, env=None):
        port = free_port()
        client_id = f"tidegate-it-{os.getpid()}-{next(_client_ids)}"
        log_path = tmp_path / f"tidegate-{len(started) + 1}.log"
        argv = [
            str(TIDEGATE_BIN),
            "--mqtt-url", broker.url,
            "--listen", f"127.0.0.1:{port}",
            "--mqtt-client-id", client_id,
            *extra_args,
        ]
        if not any(arg.startswith("--db") for arg in extra_args):
            argv += ["--db", str(tmp_path / f"tidegate-{len(started) + 1}.db")]
        log = open(log_path, "wb")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=clean_env(env), cwd=tmp_path)
        log.close()
        gateway = Gateway(proc, port, log_path, argv)
        started.append(gateway)
        _register_log(request, f"tidegate stderr ({' '.join(argv[1:])})", log_path)
        gateway.wait_healthy()
        if ready:
            gateway.wait_readyz(200)
            if sync:
                sync_with_subscription(gateway, broker)
        return gateway

    yield start

    failures = []
    for gateway in started:
        if gateway.exit_checked:
            continue
        status = gateway.terminate()
        if status != 0:
            failures.append(f"gateway {gateway.argv} exited with {status} after SIGTERM:\n{gateway.log()}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def gateway(gateway_factory):
    """A gateway with default options, ready and subscribed."""
    return gateway_factory()
