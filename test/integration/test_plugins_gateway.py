"""Plugins in the running gateway: the chain on live traffic, per-instance
metrics, start-up errors, and SIGHUP reloads that keep every client."""

import json
import signal
import subprocess
import time

from support import TIDEGATE_BIN, PahoClient, WsClient, clean_env, free_port, run

TEST_PLUGINS = TIDEGATE_BIN.parent.parent / "test" / "plugins"
WAIT_S = 10.0


def write_config(path, modes):
    plugins = [
        {"name": name, "plugin": str(TEST_PLUGINS / "misbehave.so"), "filters": ["plug/#"],
         "on_error": on_error, "config": {"mode": mode}}
        for name, mode, on_error in modes
    ]
    path.write_text(json.dumps({"plugins": plugins}))


def wait_for(predicate, what, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_chain_transforms_live_messages(gateway_factory, broker, tmp_path):
    config = tmp_path / "tidegate.json"
    write_config(config, [("up", "uppercase", "pass")])
    gateway = gateway_factory("--config", str(config))
    publisher = PahoClient(broker.port)

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send({"type": "subscribe", "id": 1, "filter": "plug/#"})
        await client.expect("subscribed")
        publisher.publish("plug/a", b"quiet", qos=1)
        first = await client.expect("message")
        second = await client.expect("message")
        assert (first["topic"], first["payload"]) == ("plug/a", "QUIET")
        assert (second["topic"], second["payload"]) == ("plug/a/copy", "QUIET")
        assert second["seq"] == first["seq"] + 1

    try:
        run(body())
    finally:
        publisher.close()
    wait_for(lambda: gateway.metrics().get(
        'tidegate_plugin_emitted_total{instance="up",plugin="misbehave"}') == 1, "emitted metric")
    metrics = gateway.metrics()
    assert metrics['tidegate_plugin_calls_total{instance="up",plugin="misbehave"}'] == 1
    assert metrics['tidegate_plugin_errors_total{instance="up",plugin="misbehave"}'] == 0


def test_failing_plugin_never_stops_gateway(gateway_factory, broker, tmp_path):
    config = tmp_path / "tidegate.json"
    write_config(config, [("bad", "error", "drop")])
    gateway = gateway_factory("--config", str(config))
    publisher = PahoClient(broker.port)

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send({"type": "subscribe", "id": 1, "filter": "#"})
        await client.expect("subscribed")
        for i in range(5):
            publisher.publish("plug/x", f"{i}".encode(), qos=1)
        publisher.publish("other/x", b"untouched", qos=1)
        message = await client.expect("message")
        assert (message["topic"], message["payload"]) == ("other/x", "untouched")

    try:
        run(body())
    finally:
        publisher.close()
    wait_for(lambda: gateway.metrics().get(
        'tidegate_plugin_errors_total{instance="bad",plugin="misbehave"}') == 5, "error metric")
    log = gateway.log()
    assert "[plugin:bad]" in log
    assert "failing on purpose" in log


def test_bad_plugin_stops_startup(broker, tmp_path):
    config = tmp_path / "tidegate.json"
    config.write_text(json.dumps({"plugins": [
        {"name": "future", "plugin": str(TEST_PLUGINS / "wrong_abi.so")}]}))
    proc = subprocess.run(
        [str(TIDEGATE_BIN), "--config", str(config), "--mqtt-url", broker.url,
         "--listen", f"127.0.0.1:{free_port()}", "--db", str(tmp_path / "t.db")],
        capture_output=True, text=True, timeout=WAIT_S, env=clean_env(None), cwd=tmp_path)
    assert proc.returncode != 0
    assert "plugins[0] (instance 'future').plugin" in proc.stderr
    assert "ABI version 2" in proc.stderr
    assert "this gateway has version 1" in proc.stderr


def test_sighup_reload_keeps_clients_and_messages(gateway_factory, broker, tmp_path):
    config = tmp_path / "tidegate.json"
    write_config(config, [("step", "pass", "pass")])
    gateway = gateway_factory("--config", str(config))
    publisher = PahoClient(broker.port)

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send({"type": "subscribe", "id": 1, "filter": "plug/+"})
        await client.expect("subscribed")

        publisher.publish("plug/a", b"before", qos=1)
        assert (await client.expect("message"))["payload"] == "before"

        # A broken config is rejected and the old chain keeps running.
        config.write_text("{ not json")
        gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "the old chain keeps running" in gateway.log(), "failed reload logged")
        publisher.publish("plug/a", b"still", qos=1)
        assert (await client.expect("message"))["payload"] == "still"

        write_config(config, [("step", "uppercase", "pass")])
        gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded the plugin chain: 1 instance(s)" in gateway.log(), "reload")
        publisher.publish("plug/a", b"after", qos=1)
        message = await client.expect("message")
        assert message["payload"] == "AFTER"
        await client.send({"type": "ping", "id": 9})
        await client.expect("pong")

    try:
        run(body())
    finally:
        publisher.close()
