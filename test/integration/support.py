"""Helpers for the integration tests: schemas, processes, clients and publishers.

Every server started here listens on a free 127.0.0.1 port and is ended by PID.
"""

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import jsonschema
import paho.mqtt.client as paho
import pytest
import websockets

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
TIDEGATE_BIN = Path(os.environ.get("TIDEGATE_BIN", REPO / "build" / "gateway" / "tidegate"))
MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"

# Seconds to wait for one expected event. Long enough for a loaded 2-core
# machine, short enough that a missing message fails the test instead of
# hanging it.
WAIT = 10.0

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------------------
# Schemas


def _load_schema_store():
    store = {}
    for path in SCHEMAS.rglob("*.json"):
        store[path.resolve().as_uri()] = json.loads(path.read_text())
    return store


_STORE = None


def schema_validator(relative_path):
    """Return a Draft 2020-12 validator for a file under schemas/, with its $refs resolved from disk."""
    global _STORE
    if _STORE is None:
        _STORE = _load_schema_store()
    uri = (SCHEMAS / relative_path).resolve().as_uri()
    schema = _STORE[uri]
    resolver = jsonschema.RefResolver(base_uri=uri, referrer=schema, store=_STORE)
    return jsonschema.Draft202012Validator(schema, resolver=resolver)


_SERVER_VALIDATOR = None


def validate_server_message(obj, raw=None):
    """Fail the test unless obj is a valid gateway-to-client WebSocket message."""
    global _SERVER_VALIDATOR
    if _SERVER_VALIDATOR is None:
        _SERVER_VALIDATOR = schema_validator("ws/server.json")
    errors = list(_SERVER_VALIDATOR.iter_errors(obj))
    if not errors:
        return
    # The oneOf error of the union schema hides the cause, so report the
    # errors of the schema that the message's type selects.
    details = [e.message for e in errors]
    kind = obj.get("type") if isinstance(obj, dict) else None
    if isinstance(kind, str) and (SCHEMAS / "ws" / "server" / f"{kind}.json").exists():
        specific = schema_validator(f"ws/server/{kind}.json")
        details = [f"{list(e.absolute_path)}: {e.message}" for e in specific.iter_errors(obj)] or details
    pytest.fail(f"gateway sent a message that violates schemas/ws/server.json: {raw or obj!r}: {details}")


def parse_server_text(text):
    """Parse one text frame from the gateway and validate it against the server schema."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        pytest.fail(f"gateway sent a text frame that is not JSON: {text!r}: {exc}")
    validate_server_message(obj, raw=text)
    return obj


# ---------------------------------------------------------------------------
# Ports and HTTP


def free_port():
    """Return a TCP port on 127.0.0.1 that was free when this function ran."""
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


def http_get(port, path, timeout=WAIT, headers=None):
    """Send GET path to 127.0.0.1:port and return (status, headers dict with lower-case names, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, headers, body
    finally:
        conn.close()


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\S+)?$")


def parse_metrics(text):
    """Parse Prometheus text exposition into {name or name{labels}: float}."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = METRIC_LINE.match(line)
        assert match, f"malformed metrics line: {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        values[name + labels] = float(value)
    return values


# ---------------------------------------------------------------------------
# Mosquitto


class Broker:
    """A Mosquitto process on 127.0.0.1 with its config and log in a tmp dir."""

    def __init__(self, workdir, port=None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc = None
        self.starts = 0
        self.log_paths = []

    def start(self):
        self.starts += 1
        conf = self.workdir / f"mosquitto-{self.starts}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "max_queued_messages 100000\n"
            "persistence false\n"
            "log_dest stderr\n"
        )
        log_path = self.workdir / f"mosquitto-{self.starts}.log"
        self.log_paths.append(log_path)
        log = open(log_path, "wb")
        deadline = time.monotonic() + WAIT
        # After a stop the port can stay busy for a moment, so retry the start.
        while True:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
            if wait_for_port(self.port, self.proc, timeout=max(deadline - time.monotonic(), 0.1)):
                break
            self.proc.poll()
            if self.proc.returncode is None:
                self._end()
            if time.monotonic() >= deadline:
                log.close()
                pytest.fail(f"mosquitto did not accept connections on port {self.port}:\n{log_path.read_text()}")
            time.sleep(0.2)
        log.close()
        return self

    def _end(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)

    def stop(self):
        self._end()
        self.proc = None

    @property
    def url(self):
        return f"tcp://127.0.0.1:{self.port}"


# ---------------------------------------------------------------------------
# Gateway


def clean_env(extra=None):
    """Return os.environ without TIDEGATE_* variables (except TIDEGATE_BIN), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_") or k == "TIDEGATE_BIN"}
    env.update(extra or {})
    return env


def require_binary():
    if not TIDEGATE_BIN.exists():
        pytest.fail(f"gateway binary not found: {TIDEGATE_BIN} (build it, or set TIDEGATE_BIN)")


def run_cli(*args, env=None, timeout=WAIT):
    """Run the gateway with args, return CompletedProcess with text stdout and stderr.

    Every call passes a free --listen port and an unused broker port unless args
    set them, so a gateway that wrongly starts never touches a well-known port.
    """
    require_binary()
    argv = [str(TIDEGATE_BIN)]
    if not any(a.startswith("--listen") for a in args):
        argv += ["--listen", f"127.0.0.1:{free_port()}"]
    if not any(a.startswith("--mqtt-url") for a in args):
        argv += ["--mqtt-url", f"tcp://127.0.0.1:{free_port()}"]
    argv += list(args)
    # A temporary working directory keeps files that a wrongly started
    # gateway creates, such as its default database, out of the repository.
    with tempfile.TemporaryDirectory(prefix="tidegate-cli-") as workdir:
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=clean_env(env), timeout=timeout, cwd=workdir)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{argv} did not exit within {timeout} s; stderr: {exc.stderr!r}")


class Gateway:
    """A running gateway process with its HTTP port and stderr log file."""

    def __init__(self, proc, port, log_path, argv):
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.argv = argv
        self.exit_checked = False

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self):
        return self.log_path.read_text(errors="replace")

    def get(self, path):
        return http_get(self.port, path)

    def metrics(self):
        status, _, body = self.get("/metrics")
        assert status == 200, f"/metrics returned {status}"
        return parse_metrics(body.decode())

    def wait_metric(self, name, expected, timeout=WAIT):
        """Poll /metrics until name has the expected value; return the last value seen."""
        deadline = time.monotonic() + timeout
        value = self.metrics().get(name)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.1)
            value = self.metrics().get(name)
        return value

    def wait_healthy(self):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode} before /healthz answered:\n{self.log()}")
            try:
                status, _, _ = self.get("/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail(f"/healthz did not return 200 within {WAIT} s:\n{self.log()}")

    def wait_readyz(self, expected_status, timeout=WAIT):
        """Poll /readyz until it returns expected_status; return the parsed body."""
        validator = schema_validator("readyz.json")
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, _, body = self.get("/readyz")
            try:
                obj = json.loads(body)
            except ValueError:
                pytest.fail(f"/readyz body is not JSON: {body!r}")
            errors = [e.message for e in validator.iter_errors(obj)]
            assert not errors, f"/readyz body {body!r} violates schemas/readyz.json: {errors}"
            if status == expected_status:
                return obj
            last = (status, body)
            time.sleep(0.1)
        pytest.fail(f"/readyz did not return {expected_status} within {timeout} s, last {last}")

    def terminate(self, timeout=WAIT):
        """Send SIGTERM and return the exit status, failing if the gateway does not exit in time."""
        self.exit_checked = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
            pytest.fail(f"gateway did not exit within {timeout} s of SIGTERM:\n{self.log()}")


def readyz_summary(body):
    """Return (ready, broker, store) from a /readyz body, with store "ok" when the gateway does not report it."""
    return body["ready"], body["broker"], body.get("store", "ok")


def sync_with_subscription(gateway, broker, topic_prefix="tidegate-test/probe"):
    """Wait until a message published now reaches WebSocket clients.

    /readyz reports the broker connection, which can come before the broker
    has acknowledged the gateway's subscriptions. This publishes probe
    messages until one arrives at a temporary WebSocket client.
    """
    raw = RawWebSocket(gateway.port)
    try:
        raw.recv_json()  # welcome
        raw.send_text(json.dumps({"type": "subscribe", "id": "probe", "filter": topic_prefix + "/#"}))
        reply = raw.recv_json()
        assert reply["type"] == "subscribed", f"probe subscribe failed: {reply}"
        publisher = PahoClient(broker.port)
        try:
            deadline = time.monotonic() + WAIT
            count = 0
            while time.monotonic() < deadline:
                count += 1
                publisher.publish(f"{topic_prefix}/{count}", b"probe", qos=1)
                try:
                    msg = raw.recv_json(timeout=0.5)
                except socket.timeout:
                    continue
                assert msg["type"] == "message", f"unexpected probe reply: {msg}"
                raw.send_text(json.dumps({"type": "unsubscribe", "filter": topic_prefix + "/#"}))
                return
            pytest.fail(f"no probe message reached a WebSocket client within {WAIT} s:\n{gateway.log()}")
        finally:
            publisher.close()
    finally:
        raw.close()


# ---------------------------------------------------------------------------
# Publishers


class PahoClient:
    """A paho-mqtt 1.6 client with its network loop in a thread; collects received messages."""

    def __init__(self, port, client_id=""):
        self.received = []
        self.acknowledged = set()
        self.client = paho.Client(client_id=client_id, clean_session=True)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        deadline = time.monotonic() + WAIT
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                self.close()
                pytest.fail(f"paho client did not connect to 127.0.0.1:{port}")
            time.sleep(0.02)

    def _on_message(self, client, userdata, message):
        self.received.append((message.topic, bytes(message.payload), message.retain))

    def _on_subscribe(self, client, userdata, mid, granted_qos):
        self.acknowledged.add(mid)

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"paho publish to {topic} was not acknowledged"

    def subscribe(self, topic_filter, qos=1):
        """Subscribe and wait for the broker's SUBACK."""
        result, mid = self.client.subscribe(topic_filter, qos=qos)
        assert result == paho.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + WAIT
        while mid not in self.acknowledged:
            assert time.monotonic() < deadline, f"no SUBACK for {topic_filter} within {WAIT} s"
            time.sleep(0.02)

    def wait_received(self, count, timeout=WAIT):
        """Wait until at least count messages arrived and return the list of (topic, payload, retain)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def mosquitto_pub(port, topic, message=None, file=None, retain=False, null=False, qos=1):
    """Publish one message with the mosquitto_pub command-line client."""
    argv = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-q", str(qos), "-t", topic]
    if retain:
        argv.append("-r")
    if null:
        argv.append("-n")
    elif file is not None:
        argv += ["-f", str(file)]
    else:
        argv += ["-m", message]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 0, f"mosquitto_pub failed: {result.stderr}"


# ---------------------------------------------------------------------------
# WebSocket clients


class WsClient:
    """An asyncio WebSocket client (websockets 10.4) that validates every frame it receives."""

    def __init__(self, ws):
        self.ws = ws
        self.welcome = None

    @classmethod
    async def connect(cls, url, **kwargs):
        kwargs.setdefault("ping_interval", None)
        # An unbounded receive queue keeps this client reading from the socket
        # while the test is busy, so the gateway never closes it as a slow client.
        kwargs.setdefault("max_queue", None)
        ws = await asyncio.wait_for(websockets.connect(url, **kwargs), WAIT)
        client = cls(ws)
        _open_clients.append(client)
        client.welcome = await client.expect("welcome")
        return client

    async def recv(self, timeout=WAIT):
        """Receive one message, fail unless it is a valid JSON text frame, return it parsed."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
        except asyncio.TimeoutError:
            pytest.fail(f"no message from the gateway within {timeout} s")
        except websockets.ConnectionClosed as exc:
            pytest.fail(f"connection closed while waiting for a message: code {close_code_of(exc)}")
        assert isinstance(frame, str), f"gateway sent a binary frame: {frame!r}"
        return parse_server_text(frame)

    async def expect(self, kind, timeout=WAIT):
        msg = await self.recv(timeout)
        assert msg["type"] == kind, f"expected a {kind} message, got {msg}"
        return msg

    async def send(self, obj):
        await self.ws.send(json.dumps(obj, separators=(",", ":")))

    async def send_raw(self, data):
        await self.ws.send(data)

    async def subscribe(self, topic_filter, id=None, **extra):
        request = {"type": "subscribe", "filter": topic_filter, **extra}
        if id is not None:
            request["id"] = id
        await self.send(request)
        reply = await self.expect("subscribed")
        assert reply["filter"] == topic_filter
        if id is not None:
            assert reply["id"] == id
        return reply

    async def ping(self, id):
        await self.send({"type": "ping", "id": id})
        reply = await self.expect("pong")
        assert reply["id"] == id

    async def messages_until(self, topic, limit=100000):
        """Collect message frames up to and including the first one on topic."""
        collected = []
        while len(collected) < limit:
            msg = await self.expect("message")
            collected.append(msg)
            if msg["topic"] == topic:
                return collected
        pytest.fail(f"no message on {topic} among the first {limit} messages")

    async def close_code(self, timeout=WAIT):
        """Wait for the gateway to close the connection and return the close code it sent.

        Text frames that arrive before the close are validated and dropped.
        """
        try:
            while True:
                frame = await asyncio.wait_for(self.ws.recv(), timeout)
                if isinstance(frame, str):
                    parse_server_text(frame)
        except asyncio.TimeoutError:
            pytest.fail(f"gateway did not close the connection within {timeout} s")
        except websockets.ConnectionClosed as exc:
            return close_code_of(exc)

    async def close(self):
        if self in _open_clients:
            _open_clients.remove(self)
        await self.ws.close()


def close_code_of(exc):
    """Return the close code the peer sent, or None when no close frame arrived (websockets 10.4)."""
    return exc.rcvd.code if exc.rcvd is not None else None


class RawWebSocket:
    """A blocking WebSocket client on a plain socket, for frames a library refuses to send and for clients that stop reading."""

    OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

    def __init__(self, port, path="/ws", rcvbuf=None, timeout=WAIT):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connect so the advertised TCP window stays small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))

        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed during the handshake: {self.buffer!r}"
            self.buffer += chunk

        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].split(" ")[1] == "101", f"handshake failed: {lines[0]!r}"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers.get("sec-websocket-accept") == expected, f"bad Sec-WebSocket-Accept in {headers}"

    def send_frame(self, opcode, payload, fin=True):
        mask = os.urandom(4)
        first = (0x80 if fin else 0) | opcode
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_text(self, text):
        self.send_frame(self.OP_TEXT, text.encode() if isinstance(text, str) else text)

    def _fill(self, count):
        """Read until the buffer contains count bytes, so a timeout never splits a frame."""
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by the gateway")
            self.buffer += chunk

    def recv_frame(self):
        """Return (fin, opcode, payload) of the next frame; server frames must not be masked."""
        self._fill(2)
        first, second = self.buffer[0], self.buffer[1]
        assert not second & 0x80, "gateway sent a masked frame"
        length = second & 0x7F
        offset = 2
        if length == 126:
            self._fill(4)
            (length,) = struct.unpack("!H", self.buffer[2:4])
            offset = 4
        elif length == 127:
            self._fill(10)
            (length,) = struct.unpack("!Q", self.buffer[2:10])
            offset = 10
        self._fill(offset + length)
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return bool(first & 0x80), first & 0x0F, payload

    def recv_message(self):
        """Return (opcode, payload) of the next data or close frame; reply to pings and join fragments."""
        parts = []
        opcode = None
        while True:
            fin, op, payload = self.recv_frame()
            if op == self.OP_PING:
                self.send_frame(self.OP_PONG, payload)
                continue
            if op == self.OP_PONG:
                continue
            if op == self.OP_CLOSE:
                return op, payload
            if op != self.OP_CONT:
                opcode = op
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)

    def recv_json(self, timeout=WAIT):
        self.sock.settimeout(timeout)
        opcode, payload = self.recv_message()
        assert opcode == self.OP_TEXT, f"expected a text frame, got opcode {opcode} payload {payload[:80]!r}"
        return parse_server_text(payload.decode("utf-8"))

    def read_until_close(self, timeout=WAIT):
        """Read until a close frame or EOF; return (list of parsed messages, close code or None)."""
        self.sock.settimeout(timeout)
        messages = []
        try:
            while True:
                opcode, payload = self.recv_message()
                if opcode == self.OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return messages, code
                assert opcode == self.OP_TEXT, f"gateway sent opcode {opcode}"
                messages.append(parse_server_text(payload.decode("utf-8")))
        except (EOFError, ConnectionResetError):
            return messages, None

    def close(self):
        try:
            self.send_frame(self.OP_CLOSE, struct.pack("!H", 1000))
            self.read_until_close(timeout=2)
        except (OSError, EOFError, socket.timeout):
            pass
        self.sock.close()


_open_clients = []


async def _run_then_close(coro):
    try:
        return await coro
    finally:
        # Close cleanly: an open connection left to asyncio.run's shutdown
        # waits out the websockets close_timeout of 10 s.
        while _open_clients:
            client = _open_clients.pop()
            try:
                await asyncio.wait_for(client.ws.close(), WAIT)
            except (asyncio.TimeoutError, OSError):
                client.ws.transport.abort()


def run(coro):
    """Run an async test body to completion, then close the WebSocket clients it opened."""
    return asyncio.run(_run_then_close(coro))
