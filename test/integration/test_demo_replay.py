"""Tests of tools/devices/replay.py, the demo's device simulator, against a real Mosquitto.

Only the last test, which runs tools/demo, needs the gateway binary ($TIDEGATE_BIN,
default build/gateway/tidegate), and it is skipped without one. Run from the repository
root with
    /usr/bin/python3 -m pytest -p no:cacheprovider test/integration/test_demo_replay.py
"""

import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import websockets

REPO = Path(__file__).resolve().parents[2]
REPLAY = REPO / "tools" / "devices" / "replay.py"
DATA = REPO / "data"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
WAIT = 15.0

# 2000 s of data per second: in 4 s the replay covers the first 8000 s of each data set.
SPEED = 2000
RUN_SECONDS = 4

TIME_PATTERN = re.compile(r"^2016-08-26 \d\d:\d\d:\d\d(\.\d{1,3})?$")
ZIGBEE_BRIDGE_RETAINED = ("bridge/state", "bridge/info", "bridge/devices", "bridge/groups", "bridge/config")


# ---------------------------------------------------------------- helpers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, proc, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@contextlib.contextmanager
def running_broker(directory):
    """Run a Mosquitto on a free 127.0.0.1 port, yield the port, then stop it by PID."""
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "max_queued_messages 100000\n"
        "persistence false\n"
        "log_dest stderr\n"
    )
    log_path = directory / "mosquitto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_for_port(port, proc):
            pytest.fail(f"mosquitto did not accept connections on port {port}:\n{log_path.read_text()}")
        yield port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=WAIT)


@pytest.fixture
def replay_broker(tmp_path):
    with running_broker(tmp_path) as port:
        yield port


class Recorder:
    """A paho subscriber that records (topic, payload bytes, retain flag) in arrival order."""

    def __init__(self, port, topic_filter="#"):
        self.messages = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(client_id=f"replay-test-{time.monotonic_ns()}", clean_session=True)
        self.client.on_message = self.on_message
        self.client.on_subscribe = lambda client, userdata, mid, granted_qos: self.subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos=1)
        assert self.subscribed.wait(WAIT), "subscriber got no SUBACK"

    def on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def wait_for(self, predicate, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_quiet(recorder, quiet_seconds=0.5, timeout=WAIT):
    """Wait until no new message arrived for quiet_seconds."""
    deadline = time.monotonic() + timeout
    count = len(recorder.snapshot())
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now_count = len(recorder.snapshot())
        if now_count != count:
            count = now_count
            last_change = time.monotonic()
        elif time.monotonic() - last_change >= quiet_seconds:
            return


def retained_messages(port):
    """Return {topic: payload bytes} of the retained messages on the broker."""
    recorder = Recorder(port)
    wait_quiet(recorder)
    recorder.close()
    return {topic: payload for topic, payload, retain in recorder.snapshot() if retain}


def run_replay(*args, timeout=60):
    return subprocess.run(
        [PYTHON, str(REPLAY), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def by_topic(messages, pattern):
    regex = re.compile(pattern)
    found = {}
    for topic, payload, _ in messages:
        if regex.fullmatch(topic):
            found.setdefault(topic, []).append(payload)
    return found


def states_after(messages, start, topic):
    """Return the JSON payloads on `topic` among messages[start:]."""
    return [json.loads(payload) for message_topic, payload, _ in messages[start:] if message_topic == topic]


def load_capture():
    with open(DATA / "zigbee2mqtt-frontend-onConnect.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def capture_payload_matches(expected, payload_bytes):
    if isinstance(expected, str):
        return payload_bytes == expected.encode("utf-8")
    return json.loads(payload_bytes) == expected


# ---------------------------------------------------------------- the replay run


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory):
    """Replay all three families once for RUN_SECONDS.

    Returns (messages, retained, result): every message a '#' subscriber received, the
    retained messages left on the broker afterwards, and the finished process.
    """
    with running_broker(tmp_path_factory.mktemp("replay-run")) as port:
        recorder = Recorder(port)
        try:
            result = run_replay(
                "--mqtt-url", f"tcp://127.0.0.1:{port}",
                "--speed", str(SPEED),
                "--duration", str(RUN_SECONDS),
            )
            wait_quiet(recorder)
        finally:
            recorder.close()
        retained = retained_messages(port)
    return recorder.snapshot(), retained, result


def test_replay_exits_cleanly(replay_run):
    _, _, result = replay_run

    assert result.returncode == 0, result.stderr
    assert "connected to tcp://127.0.0.1:" in result.stderr
    for name in ("mote1", "mote4", "device1", "device8", "zigbee2mqtt"):
        assert re.search(rf"\b{name}: connected to ", result.stderr), f"no connect line for {name}:\n{result.stderr}"
    assert "(0 dropped)" in result.stderr, result.stderr


def test_wsn_telemetry_payloads(replay_run):
    messages, _, _ = replay_run
    telemetry = by_topic(messages, r"lab/mote\d+/telemetry")

    assert sorted(telemetry) == [f"lab/mote{mote}/telemetry" for mote in (1, 2, 3, 4)]
    for topic, payloads in telemetry.items():
        mote = int(topic.split("/")[1][len("mote"):])
        readings = [json.loads(payload) for payload in payloads]
        assert len(readings) > 100, f"{topic}: only {len(readings)} readings"
        assert [r["reading"] for r in readings] == list(range(1, len(readings) + 1)), topic
        for reading in readings:
            assert set(reading) == {"temperature", "humidity", "indoor", "event", "reading"}, reading
            assert isinstance(reading["temperature"], float), reading
            assert isinstance(reading["humidity"], float), reading
            assert 20.0 <= reading["temperature"] <= 60.0, reading
            assert 0.0 <= reading["humidity"] <= 100.0, reading
            assert reading["indoor"] is (mote in (3, 4)), reading
            assert isinstance(reading["event"], bool), reading

    first = json.loads(telemetry["lab/mote1/telemetry"][0])
    assert first == {"temperature": 30.21, "humidity": 43.82, "indoor": False, "event": False, "reading": 1}


def test_gps_position_payloads(replay_run):
    messages, _, _ = replay_run
    positions = by_topic(messages, r"transit/device\d+/position")

    # Devices 1, 2, 3 and 5 report from 09:00, so they appear in the first 8000 s.
    for device in (1, 2, 3, 5):
        assert f"transit/device{device}/position" in positions, sorted(positions)
    previous_time = {}
    for topic, payloads in positions.items():
        for payload in payloads:
            fix = json.loads(payload)
            assert 60.15 <= fix["lat"] <= 60.40, fix
            assert 24.65 <= fix["lon"] <= 25.15, fix
            assert isinstance(fix["accuracy_m"], float) and fix["accuracy_m"] > 0, fix
            assert isinstance(fix["activity"], str) and fix["activity"], fix
            assert TIME_PATTERN.match(fix["time"]), fix
            assert fix["time"] >= previous_time.get(topic, ""), f"{topic}: fixes out of order"
            previous_time[topic] = fix["time"]
            if "line" in fix:
                assert fix["line_type"] in {"BUS", "TRAM", "SUBWAY", "TRAIN", "CAR"}, fix


def test_gps_bus_leg_annotated(replay_run):
    messages, _, _ = replay_run
    fixes = [json.loads(payload) for payload in by_topic(messages, r"transit/device1/position")["transit/device1/position"]]

    # The riders' log has device 1 on bus 154 from 09:07 to 09:23.
    on_bus = [fix for fix in fixes if "2016-08-26 09:08:00" <= fix["time"] <= "2016-08-26 09:22:00"]
    before = [fix for fix in fixes if fix["time"] < "2016-08-26 09:02:00"]
    assert on_bus, "no fixes of device 1 during its bus leg"
    assert before, "no fixes of device 1 before its bus leg"
    for fix in on_bus:
        assert fix.get("line") == "154", fix
        assert fix.get("line_type") == "BUS", fix
    for fix in before:
        assert "line" not in fix, fix
        assert "line_type" not in fix, fix


def test_device_status_online_then_offline(replay_run):
    messages, retained, _ = replay_run
    status_topics = [f"lab/mote{mote}/status" for mote in (1, 2, 3, 4)]
    status_topics += [f"transit/device{device}/status" for device in range(1, 9)]
    statuses = by_topic(messages, r"(lab/mote\d+|transit/device\d+)/status")

    for topic in status_topics:
        assert statuses.get(topic, [])[:1] == [b"online"], f"{topic}: {statuses.get(topic)}"
        assert statuses[topic][-1] == b"offline", f"{topic}: {statuses[topic]}"
        assert retained.get(topic) == b"offline", f"{topic} retained: {retained.get(topic)}"


def test_zigbee_capture_replayed_in_order(replay_run):
    messages, _, _ = replay_run
    capture = load_capture()
    zigbee = [(topic, payload) for topic, payload, _ in messages if topic.startswith("zigbee2mqtt/")]

    assert len(zigbee) >= len(capture)
    for index, line in enumerate(capture):
        topic, payload = zigbee[index]
        assert topic == "zigbee2mqtt/" + line["topic"], f"message {index + 1}"
        assert capture_payload_matches(line["payload"], payload), f"message {index + 1} on {topic}: {payload[:200]!r}"

    empty = [topic for topic, payload in zigbee[: len(capture)] if payload == b""]
    assert empty == ["zigbee2mqtt/0x0017880104292f0a", "zigbee2mqtt/bedroom_2"]
    assert zigbee[0] == ("zigbee2mqtt/bridge/state", b"online")


def test_zigbee_sensor_values_change(replay_run):
    messages, _, _ = replay_run
    capture_size = len(load_capture())
    zigbee = [(topic, payload) for topic, payload, _ in messages if topic.startswith("zigbee2mqtt/")]
    changes = {}
    for topic, payload in zigbee[capture_size:]:
        if topic == "zigbee2mqtt/bridge/state":
            assert payload == b"offline", "only the final offline status may follow the capture"
            continue
        changes.setdefault(topic, []).append(json.loads(payload))

    assert set(changes) == {
        "zigbee2mqtt/0x00158d0003587505",
        "zigbee2mqtt/Dinning room HT sensor",
        "zigbee2mqtt/Living room HTP sensor",
        "zigbee2mqtt/0x00158d000450d0e6",
    }
    htp = changes["zigbee2mqtt/Living room HTP sensor"]
    assert len(htp) >= 5
    assert len({state["temperature"] for state in htp}) > 1, "temperature never changed"
    for state in htp:
        assert abs(state["temperature"] - 28.31) <= 2.0, state
        assert abs(state["humidity"] - 51.42) <= 5.0, state
        assert abs(state["pressure"] - 1007) <= 3, state
        last_seen = datetime.datetime.strptime(state["last_seen"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert last_seen.year >= 2024, state
    for state in changes["zigbee2mqtt/0x00158d000450d0e6"]:
        assert state["illuminance"] == state["illuminance_lux"] >= 0, state


def test_zigbee_retained_as_bridge_does(replay_run):
    _, retained, _ = replay_run
    capture = {line["topic"]: line["payload"] for line in load_capture()}

    assert retained.get("zigbee2mqtt/bridge/state") == b"offline"
    for topic in ZIGBEE_BRIDGE_RETAINED[1:]:
        assert "zigbee2mqtt/" + topic in retained, f"{topic} not retained"
        assert capture_payload_matches(capture[topic], retained["zigbee2mqtt/" + topic]), topic
    # The captured configuration sets device_options.retain, so device states are retained.
    assert "zigbee2mqtt/work_lamp" in retained
    assert "zigbee2mqtt/bridge/logging" not in retained
    assert "zigbee2mqtt/bridge/response/networkmap" not in retained


# ---------------------------------------------------------------- options and signals


def test_replay_only_selects_family(replay_broker):
    recorder = Recorder(replay_broker)
    try:
        result = run_replay(
            "--mqtt-url", f"tcp://127.0.0.1:{replay_broker}",
            "--speed", str(SPEED), "--duration", "1.5", "--only", "wsn",
        )
        wait_quiet(recorder)
    finally:
        recorder.close()

    assert result.returncode == 0, result.stderr
    topics = {topic for topic, _, _ in recorder.snapshot()}
    assert "lab/mote1/telemetry" in topics
    assert not [topic for topic in topics if not topic.startswith("lab/")], sorted(topics)


def test_zigbee_set_command_changes_state(replay_broker):
    recorder = Recorder(replay_broker)
    proc = subprocess.Popen(
        [PYTHON, str(REPLAY), "--mqtt-url", f"tcp://127.0.0.1:{replay_broker}", "--only", "zigbee"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        capture_size = len(load_capture())
        sent = recorder.wait_for(
            lambda messages: sum(1 for t, _, _ in messages if t.startswith("zigbee2mqtt/")) >= capture_size
        )
        assert sent, "the bridge did not send its captured messages"
        recorder.client.publish("zigbee2mqtt/work_lamp/set", "TOGGLE", qos=1)
        recorder.client.publish(
            "zigbee2mqtt/bedroom1/set", json.dumps({"state": "ON", "brightness": 300, "color": {"x": 0.3}}), qos=1
        )

        lamp_changed = recorder.wait_for(lambda messages: states_after(messages, capture_size, "zigbee2mqtt/work_lamp"))
        bulb_changed = recorder.wait_for(lambda messages: states_after(messages, capture_size, "zigbee2mqtt/bedroom1"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=WAIT)
        recorder.close()

    assert lamp_changed, stderr
    assert bulb_changed, stderr
    messages = recorder.snapshot()
    lamp = states_after(messages, capture_size, "zigbee2mqtt/work_lamp")[0]
    bulb = states_after(messages, capture_size, "zigbee2mqtt/bedroom1")[0]
    assert lamp["state"] == "OFF", lamp
    assert bulb["state"] == "ON", bulb
    assert bulb["brightness"] == 254, bulb
    assert bulb["color"]["x"] == 0.3, bulb
    assert bulb["color"]["y"] == 0.404, bulb


def test_replay_only_invalid_exits_2():
    result = run_replay("--only", "nope", timeout=WAIT)

    assert result.returncode == 2
    assert "nope" in result.stderr


@pytest.mark.parametrize(
    "args, named_value",
    [
        (("--speed", "0"), "'0'"),
        (("--speed", "fast"), "'fast'"),
        (("--duration", "-3"), "'-3'"),
        (("--mqtt-url", "http://127.0.0.1:1883"), "'http://127.0.0.1:1883'"),
        (("--mqtt-url", "tcp://127.0.0.1:70000"), "'tcp://127.0.0.1:70000'"),
    ],
)
def test_replay_bad_argument_exits_2(args, named_value):
    result = run_replay(*args, timeout=WAIT)

    assert result.returncode == 2
    assert named_value in result.stderr


def test_replay_missing_data_exits_2(tmp_path):
    result = run_replay("--data-dir", str(tmp_path), "--only", "gps", timeout=WAIT)

    assert result.returncode == 2
    assert str(tmp_path / "aalto-trafficsense-device_data.csv") in result.stderr


def test_replay_sigterm_goes_offline(replay_broker):
    recorder = Recorder(replay_broker)
    proc = subprocess.Popen(
        [PYTHON, str(REPLAY), "--mqtt-url", f"tcp://127.0.0.1:{replay_broker}", "--only", "wsn", "--speed", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        online = recorder.wait_for(
            lambda messages: sum(1 for t, p, _ in messages if t.endswith("/status") and p == b"online") == 4
        )
        assert online, "the motes did not come online"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        recorder.close()

    assert proc.returncode == 0, stderr
    assert "received SIGTERM" in stderr
    retained = retained_messages(replay_broker)
    for mote in (1, 2, 3, 4):
        assert retained.get(f"lab/mote{mote}/status") == b"offline", retained


# ---------------------------------------------------------------- tools/demo with the gateway


def gateway_binary():
    return Path(os.environ.get("TIDEGATE_BIN") or REPO / "build" / "gateway" / "tidegate")


async def collect_ws_messages(port, seconds):
    """Subscribe to '#' on the gateway's WebSocket, toggle work_lamp, and collect frames.

    Returns every frame other than the welcome received within `seconds`. The toggle is
    a publish to zigbee2mqtt/work_lamp/set, which the demo allows. It goes out after the
    first zigbee2mqtt/ message, because the bridge subscribes to the /set topics before
    it sends anything.
    """
    frames = []
    toggled = False
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        await ws.send(json.dumps({"type": "subscribe", "id": 1, "filter": "#"}))
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                text = await asyncio.wait_for(ws.recv(), timeout=remaining)
            except asyncio.TimeoutError:
                break
            frame = json.loads(text)
            frames.append(frame)
            if not toggled and frame.get("topic", "").startswith("zigbee2mqtt/"):
                toggled = True
                await ws.send(json.dumps({
                    "type": "publish", "id": 2, "topic": "zigbee2mqtt/work_lamp/set",
                    "payload": {"state": "TOGGLE"}, "qos": 1,
                }))
    return frames


def http_status(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def test_demo_delivers_all_families(tmp_path):
    binary = gateway_binary()
    if not os.access(binary, os.X_OK):
        pytest.skip(f"gateway binary {binary} not built")
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp_path), TIDEGATE_BIN=str(binary))
    proc = subprocess.Popen(
        [str(REPO / "tools" / "demo"), "--no-build", "--port", str(port), "--speed", "60", "--duration", "15"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while http_status(port, "/readyz") != 200:
            assert proc.poll() is None, f"tools/demo exited early:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "the demo gateway never became ready"
            time.sleep(0.2)
        frames = asyncio.run(collect_ws_messages(port, 8))
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=WAIT)

    assert proc.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output
    replies = [frame for frame in frames if frame.get("id") == 2]
    assert replies == [{"type": "published", "id": 2}], replies
    messages = [frame for frame in frames if frame["type"] == "message"]
    lamp_states = [m["payload"]["state"] for m in messages if m["topic"] == "zigbee2mqtt/work_lamp"]
    assert "OFF" in lamp_states, f"the toggle did not switch work_lamp off: {lamp_states}"
    by_family = {}
    for frame in messages:
        by_family.setdefault(frame["topic"].split("/")[0], []).append(frame)
    assert set(by_family) >= {"lab", "transit", "zigbee2mqtt"}, sorted(by_family)
    telemetry = [f for f in by_family["lab"] if f["topic"].endswith("/telemetry")]
    assert telemetry, "no telemetry reached the WebSocket"
    assert telemetry[0]["encoding"] == "json"
    assert set(telemetry[0]["payload"]) == {"temperature", "humidity", "indoor", "event", "reading"}
    positions = [f for f in by_family["transit"] if f["topic"].endswith("/position")]
    assert positions, "no GPS position reached the WebSocket"
    assert {"lat", "lon", "time"} <= set(positions[0]["payload"])
    assert not list(tmp_path.glob("tidegate-demo.*")), "tools/demo left its temporary directory"
