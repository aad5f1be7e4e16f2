"""The SQLite message window: history on subscribe, restarts, retention and the HTTP API.

Every test passes --db explicitly and checks what clients receive against the
rows of that database file, read with sqlite3. Counts and contents are exact.
The only sleeps pace the publishers, spread subscriptions over a load run, or
let messages age past a --window limit. No assert depends on how long
something took.
"""

import asyncio
import json
import os
import random
import re
import signal
import sqlite3
import threading
import time
import urllib.parse
from typing import NamedTuple

import paho.mqtt.client as paho
import pytest
import websockets

from support import (
    WAIT,
    PahoClient,
    WsClient,
    mosquitto_pub,
    parse_server_text,
    run,
    run_cli,
    schema_validator,
)

ZERO_EPOCH = "0" * 32


# ---------------------------------------------------------------------------
# Topic filters and the database file


def topic_matches(topic_filter, topic):
    """Return True when the MQTT topic filter matches the topic name."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[i]:
            return False
    return len(filter_levels) == len(topic_levels)


class Row(NamedTuple):
    seq: int
    topic: str
    payload: bytes
    ts: int
    retain: bool


def db_rows(db_path, topic_filter):
    """Return the rows of the messages table whose topic matches topic_filter, in seq order."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=WAIT)
    try:
        rows = conn.execute(
            "SELECT m.seq, t.name, m.payload, m.ts, m.retain FROM messages m "
            "JOIN topics t ON t.id = m.topic_id ORDER BY m.seq"
        ).fetchall()
    finally:
        conn.close()
    result = []
    for seq, topic, payload, ts, retain in rows:
        if not topic_matches(topic_filter, topic):
            continue
        if isinstance(payload, str):
            payload = payload.encode()
        result.append(Row(seq, topic, bytes(payload), ts, bool(retain)))
    return result


def db_max_seq(db_path):
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=WAIT)
    try:
        (value,) = conn.execute("SELECT max(seq) FROM messages").fetchone()
    finally:
        conn.close()
    return value


def wait_db_rows(db_path, topic_filter, count, timeout=WAIT):
    """Poll the database until at least count rows match topic_filter, then return the rows."""
    deadline = time.monotonic() + timeout
    rows = db_rows(db_path, topic_filter)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = db_rows(db_path, topic_filter)
    assert len(rows) >= count, f"{len(rows)} rows match {topic_filter} in {db_path} after {timeout} s, expected {count}"
    return rows


async def wait_db_rows_async(db_path, topic_filter, count, timeout=WAIT):
    """Like wait_db_rows, but lets WebSocket clients keep reading meanwhile."""
    deadline = time.monotonic() + timeout
    rows = db_rows(db_path, topic_filter)
    while len(rows) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        rows = db_rows(db_path, topic_filter)
    assert len(rows) >= count, f"{len(rows)} rows match {topic_filter} in {db_path} after {timeout} s, expected {count}"
    return rows


def summary(msg):
    """Return (seq, topic, payload) of a message frame."""
    return (msg["seq"], msg["topic"], msg["payload"])


def row_summary(row):
    """Return (seq, topic, payload) of a database row, as the gateway encodes a utf8 payload."""
    return (row.seq, row.topic, row.payload.decode())


# ---------------------------------------------------------------------------
# Gateways, publishers and clients


def start_gateway(gateway_factory, db_path, *args, client_id=None, **kwargs):
    """Start a gateway on db_path, optionally with a fixed MQTT client id (the last --mqtt-client-id wins)."""
    extra = ["--db", str(db_path)]
    if client_id is not None:
        extra += ["--mqtt-client-id", client_id]
    return gateway_factory(*extra, *args, **kwargs)


def fixed_client_id(name):
    return f"tidegate-window-{os.getpid()}-{name}"


def kill_gateway(gateway):
    """End the gateway with SIGKILL and mark it so that teardown does not expect exit status 0."""
    gateway.exit_checked = True
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(timeout=WAIT)


class Publisher(threading.Thread):
    """Publish a list of (topic, payload) at QoS 1 from a thread, at most rate messages per second.

    acked_payloads lists, in callback order, every payload whose PUBACK from
    the broker arrived (paho's on_publish).
    """

    def __init__(self, port, messages, rate):
        super().__init__(daemon=True)
        self.messages = messages
        self.rate = rate
        self.lock = threading.Lock()
        self.payload_by_mid = {}
        self.acked_mids = []
        self.error = None
        self.client = paho.Client(client_id="", clean_session=True)
        self.client.max_inflight_messages_set(100)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        deadline = time.monotonic() + WAIT
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                self.close()
                pytest.fail(f"paho publisher did not connect to 127.0.0.1:{port}")
            time.sleep(0.02)

    def _on_publish(self, client, userdata, mid):
        with self.lock:
            self.acked_mids.append(mid)

    def run(self):
        start = time.monotonic()
        try:
            for i, (topic, payload) in enumerate(self.messages):
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                info = self.client.publish(topic, payload, qos=1)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    self.error = f"publish {i} to {topic} returned {paho.error_string(info.rc)}"
                    return
                with self.lock:
                    self.payload_by_mid[info.mid] = payload
        except Exception as exc:  # reported by wait_acked in the test thread
            self.error = repr(exc)

    def acked_count(self):
        with self.lock:
            return len(self.acked_mids)

    def acked_payloads(self):
        with self.lock:
            return [self.payload_by_mid[mid] for mid in self.acked_mids]

    def wait_acked(self, timeout):
        """Wait for the thread to end and for a PUBACK of every message."""
        deadline = time.monotonic() + timeout
        self.join(max(deadline - time.monotonic(), 0.1))
        assert not self.is_alive(), f"publisher still running after {timeout} s"
        assert self.error is None, self.error
        while self.acked_count() < len(self.messages) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.acked_count() == len(self.messages), (
            f"broker acknowledged {self.acked_count()} of {len(self.messages)} messages within {timeout} s"
        )

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def publish_all(port, messages):
    """Publish (topic, payload) pairs at QoS 1 without pacing and wait for every PUBACK."""
    publisher = Publisher(port, messages, rate=1e9)
    try:
        publisher.start()
        publisher.wait_acked(timeout=max(WAIT, len(messages) / 100))
    finally:
        publisher.close()


def check_subscribed(reply, epoch, history_count, recovered=True, truncated=False):
    """Assert the fields of a subscribed reply to a request with history."""
    assert reply["epoch"] == epoch, reply
    assert reply["history_count"] == history_count, reply
    assert reply["recovered"] is recovered, reply
    assert reply["truncated"] is truncated, reply
    if history_count == 0:
        assert "first_seq" not in reply, reply


async def read_history(client, reply):
    """Read the history messages a subscribed reply announced and check their flags and first_seq."""
    history = []
    for _ in range(reply["history_count"]):
        msg = await client.expect("message")
        assert msg.get("history") is True, f"message {len(history)} of the history lacks history:true: {msg}"
        history.append(msg)
    if history:
        assert reply["first_seq"] == history[0]["seq"], reply
    return history


async def read_live(client, count):
    """Read count live messages and check that none carries the history flag."""
    live = []
    for _ in range(count):
        msg = await client.expect("message")
        assert "history" not in msg, f"live message {len(live)} carries the history flag: {msg}"
        live.append(msg)
    return live


def http_json(gateway, path, expected_status=200, schema=None):
    """GET path, assert the status and JSON content type, validate the body against a schema under schemas/."""
    status, headers, body = gateway.get(path)
    assert status == expected_status, f"GET {path} returned {status}: {body!r}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    try:
        obj = json.loads(body)
    except ValueError:
        pytest.fail(f"GET {path} body is not JSON: {body!r}")
    if schema is not None:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator(schema).iter_errors(obj)]
        assert not errors, f"GET {path} body violates schemas/{schema}: {errors}: {body[:2000]!r}"
    return obj


def query(**params):
    """Build a query string, percent-encoding '+', '#' and '/' in the values."""
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote, safe="")


# ---------------------------------------------------------------------------
# Late joiners and the hand-over from history to live messages


def test_late_joiner_last_n(gateway_factory, broker, tmp_path):
    db = tmp_path / "late.db"
    gateway = start_gateway(gateway_factory, db)
    topics = ["late/a/v", "late/b/v", "late/c/v", "misc/d/v"]
    publisher = PahoClient(broker.port)
    try:
        for i in range(200):
            publisher.publish(topics[i % 4], f"late-{i:04d}".encode())
        stored = wait_db_rows(db, "+/+/v", 200)
        assert len(stored) == 200
        matching = db_rows(db, "late/+/v")
        assert [(r.topic, r.payload.decode()) for r in matching] == [
            (topics[i % 4], f"late-{i:04d}") for i in range(200) if i % 4 != 3
        ]

        async def body():
            client = await WsClient.connect(gateway.ws_url)
            reply = await client.subscribe("late/+/v", id="late", history={"last": 50})
            check_subscribed(reply, client.welcome["epoch"], 50)
            history = await read_history(client, reply)
            assert [summary(m) for m in history] == [row_summary(r) for r in matching[-50:]]

            for i in range(20):
                publisher.publish(topics[i % 4], f"live-{i:04d}".encode())
            live = await read_live(client, 15)
            after = wait_db_rows(db, "late/+/v", 165)
            assert [summary(m) for m in live] == [row_summary(r) for r in after[150:]]

            # The whole run is the database's run of seqs for the filter: no gap
            # at the hand-over, no duplicate.
            seqs = [m["seq"] for m in history + live]
            assert seqs == [r.seq for r in after[-65:]]

            # A pong with no message before it shows that nothing more was sent.
            await client.ping("end")

        run(body())
    finally:
        publisher.close()


def test_handover_under_load(gateway_factory, broker, tmp_path):
    """50 clients subscribe with history while about 2,000 messages per second arrive.

    Each client must get the database's run of seqs for its filter, from where
    its history starts to the last message, with no gap and no duplicate.
    """
    db = tmp_path / "load.db"
    gateway = start_gateway(gateway_factory, db)
    seed = 20261204
    rng = random.Random(seed)
    groups, kinds_per_group = 5, 4
    total, rate = 10000, 2000
    messages = [(f"load/{i % groups}/{(i // groups) % kinds_per_group}", f"load-{i:05d}".encode()) for i in range(total)]
    publish_seconds = total / rate

    plans = []
    for i in range(50):
        shape = rng.random()
        if shape < 0.6:
            topic_filter = f"load/{rng.randrange(groups)}/{rng.randrange(kinds_per_group)}"
        elif shape < 0.8:
            topic_filter = f"load/{rng.randrange(groups)}/+"
        else:
            topic_filter = f"load/+/{rng.randrange(kinds_per_group)}"
        plans.append(
            {
                "index": i,
                "filter": topic_filter,
                "kind": ("last", "since_ms", "since")[i % 3],
                "delay": rng.uniform(0, publish_seconds * 0.9),
                "last": rng.randint(1, 300),
                "ms_back": rng.randint(0, 1500),
                "seq_back": rng.randint(0, 800),
            }
        )

    targets = {}
    done = asyncio.Event()

    async def client_run(plan):
        await asyncio.sleep(plan["delay"])
        client = await WsClient.connect(gateway.ws_url)
        epoch = client.welcome["epoch"]
        if plan["kind"] == "last":
            history = {"last": plan["last"]}
        elif plan["kind"] == "since_ms":
            history = {"since_ms": int(time.time() * 1000) - plan["ms_back"]}
        else:
            history = {"since": {"epoch": epoch, "seq": max(0, client.welcome["seq"] - plan["seq_back"])}}
        plan["history"] = history
        await client.send({"type": "subscribe", "id": plan["index"], "filter": plan["filter"], "history": history})
        received = []
        reply = None
        while True:
            target = targets.get(plan["filter"]) if done.is_set() else None
            if target is not None and received and received[-1]["seq"] >= target:
                break
            if target is not None and not received and target == 0:
                break
            try:
                frame = await asyncio.wait_for(client.ws.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            except websockets.ConnectionClosed as exc:
                pytest.fail(f"client {plan} lost its connection: {exc}")
            msg = parse_server_text(frame)
            if reply is None:
                assert msg["type"] == "subscribed", f"client {plan}: expected subscribed, got {msg}"
                reply = msg
                continue
            assert msg["type"] == "message", f"client {plan}: unexpected {msg}"
            received.append(msg)
        await client.close()
        return epoch, reply, received

    async def body():
        publisher = Publisher(broker.port, messages, rate)
        try:
            tasks = [asyncio.ensure_future(client_run(plan)) for plan in plans]
            publisher.start()
            while publisher.is_alive():
                await asyncio.sleep(0.1)
            await asyncio.get_running_loop().run_in_executor(None, publisher.wait_acked, 30)
        finally:
            publisher.close()
        rows = await wait_db_rows_async(db, "load/#", total, timeout=60)
        assert len(rows) == total, f"{len(rows)} load rows stored for {total} published"
        for plan in plans:
            matching = [r.seq for r in rows if topic_matches(plan["filter"], r.topic)]
            targets[plan["filter"]] = matching[-1] if matching else 0
        done.set()
        try:
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        finally:
            for task in tasks:
                task.cancel()
        return rows, results

    rows, results = run(body())

    for plan, (epoch, reply, received) in zip(plans, results):
        context = f"client {plan} (seed {seed})"
        matching = [r for r in rows if topic_matches(plan["filter"], r.topic)]
        seqs = [r.seq for r in matching]
        got = [m["seq"] for m in received]
        count = reply["history_count"]
        check_subscribed(reply, epoch, count)
        assert all(m.get("history") is True for m in received[:count]), context
        assert all("history" not in m for m in received[count:]), context
        if count:
            assert reply["first_seq"] == got[0], context

        by_seq = {r.seq: r for r in matching}
        unknown = [m for m in received if m["seq"] not in by_seq]
        assert not unknown, f"{context}: messages with no matching row in the database: {unknown[:5]}"
        if plan["kind"] == "since_ms":
            since_ms = plan["history"]["since_ms"]
            stamped_after = [r.seq for r in matching if r.ts >= since_ms]
            early = [m for m in received if by_seq[m["seq"]].ts < since_ms]
            # A message stamped before since_ms but fanned out after the
            # subscribe arrives live, ahead of the first one stamped at or
            # after since_ms. It must never come from the history.
            assert all("history" not in m for m in early), f"{context}: history older than since_ms: {early}"
            assert [m["seq"] for m in early] == got[: len(early)], f"{context}: {early}"
            assert got[len(early) :] == stamped_after, f"{context}: messages stamped at or after since_ms differ"
            expected = seqs[seqs.index(got[0]) :] if got else []
        elif plan["kind"] == "since":
            since_seq = plan["history"]["since"]["seq"]
            expected = [s for s in seqs if s > since_seq]
        else:
            assert count <= plan["last"], context
            start = seqs.index(got[0]) if got else len(seqs)
            if count < plan["last"]:
                assert start == 0, f"{context}: {count} history messages but older ones exist"
            expected = seqs[start:]
        assert got == expected, f"{context}: received seqs differ from the database run for the filter"
        assert [summary(m) for m in received] == [row_summary(by_seq[s]) for s in got], context


# ---------------------------------------------------------------------------
# Restarts


def test_restart_keeps_epoch_and_seq(gateway_factory, broker, tmp_path):
    db = tmp_path / "restart.db"
    client_id = fixed_client_id("restart")
    first = start_gateway(gateway_factory, db, client_id=client_id)
    publisher = PahoClient(broker.port)
    try:

        async def before():
            client = await WsClient.connect(first.ws_url)
            await client.subscribe("restart/#", id=1)
            for i in range(10):
                publisher.publish("restart/a", f"before-{i}".encode())
            live = await read_live(client, 10)
            assert [m["payload"] for m in live] == [f"before-{i}" for i in range(10)]
            return client.welcome["epoch"], live[-1]["seq"]

        epoch, last_seen = run(before())
        assert first.terminate() == 0
        last_stored = db_max_seq(db)
        assert last_stored >= last_seen

        for i in range(15):
            publisher.publish("restart/a" if i % 2 else "restart/b", f"down-{i}".encode())

        second = start_gateway(gateway_factory, db, client_id=client_id)
        rows = wait_db_rows(db, "restart/#", 25)
        assert len(rows) == 25
        assert [r.payload.decode() for r in rows[10:]] == [f"down-{i}" for i in range(15)]
        after_restart = [r.seq for r in db_rows(db, "#") if r.seq > last_stored]
        assert after_restart, "nothing stored after the restart"
        assert after_restart[0] == last_stored + 1, f"first seq after the restart {after_restart[0]}, last before {last_stored}"

        async def after():
            client = await WsClient.connect(second.ws_url)
            assert client.welcome["epoch"] == epoch
            assert client.welcome["seq"] == db_max_seq(db)
            reply = await client.subscribe(
                "restart/#", id="resume", history={"since": {"epoch": epoch, "seq": last_seen}}
            )
            check_subscribed(reply, epoch, 15)
            history = await read_history(client, reply)
            assert [summary(m) for m in history] == [row_summary(r) for r in rows[10:]]
            publisher.publish("restart/a", b"after")
            (live,) = await read_live(client, 1)
            assert live["payload"] == "after"
            assert live["seq"] > history[-1]["seq"]

        run(after())
    finally:
        publisher.close()


def test_sigkill_mid_stream(gateway_factory, broker, tmp_path):
    """Every message the broker acknowledged is stored exactly once after a SIGKILL and restart."""
    db = tmp_path / "kill.db"
    client_id = fixed_client_id("kill")
    first = start_gateway(gateway_factory, db, client_id=client_id)
    streamed = [("kill/a" if i % 2 else "kill/b", f"kill-{i:05d}".encode()) for i in range(3000)]
    # At 5,000 messages per second the gateway has a backlog when it is
    # killed. The kill can then fall between a commit and its PUBACK, and the
    # broker redelivers messages that are already stored.
    publisher = Publisher(broker.port, streamed, rate=5000)

    async def before():
        client = await WsClient.connect(first.ws_url)
        await client.subscribe("kill/#", id=1)
        publisher.start()
        seen = []
        while len(seen) < 1000:
            seen.append(await client.expect("message"))
        kill_gateway(first)
        # Frames already in the socket buffer still count as seen.
        try:
            while True:
                frame = await asyncio.wait_for(client.ws.recv(), WAIT)
                msg = parse_server_text(frame)
                assert msg["type"] == "message", msg
                seen.append(msg)
        except websockets.ConnectionClosed:
            pass
        await client.close()
        return client.welcome["epoch"], seen

    try:
        epoch, seen = run(before())
        publisher.wait_acked(timeout=30)
    finally:
        publisher.close()
    late = [("kill/a", f"kill-late-{i:03d}".encode()) for i in range(200)]
    publish_all(broker.port, late)
    acked = [p.decode() for p in publisher.acked_payloads()] + [p.decode() for _, p in late]
    assert len(set(acked)) == 3200

    # Whatever a client saw before the kill had been committed, with that seq.
    rows_after_kill = {r.seq: r for r in db_rows(db, "kill/#")}
    for msg in seen:
        assert msg["seq"] in rows_after_kill, f"seen before the kill but not stored: {msg}"
        assert row_summary(rows_after_kill[msg["seq"]]) == summary(msg)

    second = start_gateway(gateway_factory, db, client_id=client_id)
    # Wait until every acknowledged payload is stored, then count the rows of
    # each. A redelivered message stored a second time has a count of 2.
    deadline = time.monotonic() + 30
    while True:
        rows = db_rows(db, "kill/#")
        counts = {}
        for r in rows:
            counts[r.payload.decode()] = counts.get(r.payload.decode(), 0) + 1
        if len(counts) >= len(acked) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    duplicates = {p: n for p, n in counts.items() if n > 1}
    assert not duplicates, f"payloads stored more than once: {sorted(duplicates.items())[:20]}"
    missing = sorted(set(acked) - set(counts))
    assert not missing, f"{len(missing)} acknowledged payloads not stored, first {missing[:20]}"
    assert len(rows) == 3200

    cursor = max(m["seq"] for m in seen)

    async def after():
        client = await WsClient.connect(second.ws_url)
        assert client.welcome["epoch"] == epoch
        reply = await client.subscribe("kill/#", id="resume", history={"since": {"epoch": epoch, "seq": cursor}})
        expected = [r for r in rows if r.seq > cursor]
        check_subscribed(reply, epoch, len(expected))
        history = await read_history(client, reply)
        assert [summary(m) for m in history] == [row_summary(r) for r in expected]
        return history

    history = run(after())
    seen_payloads = [m["payload"] for m in seen]
    history_payloads = [m["payload"] for m in history]
    assert len(set(seen_payloads)) == len(seen_payloads), "a client saw a payload twice before the kill"
    assert not set(seen_payloads) & set(history_payloads), "history repeats a message seen before the kill"
    assert sorted(seen_payloads + history_payloads) == sorted(acked)


# ---------------------------------------------------------------------------
# Epochs, retention and limits


def test_epoch_mismatch_sends_window(gateway_factory, broker, tmp_path):
    db = tmp_path / "epoch.db"
    gateway = start_gateway(gateway_factory, db)
    publisher = PahoClient(broker.port)
    try:
        for i in range(8):
            publisher.publish("epoch/t", f"e-{i}".encode())
    finally:
        publisher.close()
    rows = wait_db_rows(db, "epoch/#", 8)

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        epoch = client.welcome["epoch"]
        assert re.fullmatch(r"[0-9a-f]{32}", epoch), epoch
        assert epoch != ZERO_EPOCH
        reply = await client.subscribe("epoch/#", id=1, history={"since": {"epoch": ZERO_EPOCH, "seq": 5}})
        check_subscribed(reply, epoch, 8, recovered=False)
        history = await read_history(client, reply)
        assert [summary(m) for m in history] == [row_summary(r) for r in rows]
        return epoch

    epoch = run(body())

    other = start_gateway(gateway_factory, tmp_path / "other.db")

    async def other_epoch():
        client = await WsClient.connect(other.ws_url)
        return client.welcome["epoch"]

    second_epoch = run(other_epoch())
    assert re.fullmatch(r"[0-9a-f]{32}", second_epoch), second_epoch
    assert second_epoch != epoch


def test_retention_max_messages(gateway_factory, broker, tmp_path):
    db = tmp_path / "count.db"
    gateway = start_gateway(gateway_factory, db, "--window-max-messages", "20")
    publisher = PahoClient(broker.port)
    try:
        for i in range(50):
            publisher.publish("ret/n", f"r-{i:02d}".encode())
        publisher.publish("ret/end", b"end")
    finally:
        publisher.close()
    deadline = time.monotonic() + WAIT
    while not db_rows(db, "ret/end") and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = db_rows(db, "ret/n")
    assert [r.payload.decode() for r in rows] == [f"r-{i:02d}" for i in range(31, 50)]

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        epoch = client.welcome["epoch"]
        reply = await client.subscribe("ret/n", id=1, history={"since": {"epoch": epoch, "seq": 1}})
        check_subscribed(reply, epoch, 19, recovered=False)
        history = await read_history(client, reply)
        assert [summary(m) for m in history] == [row_summary(r) for r in rows]

        reply = await client.subscribe("ret/#", id=2, history={"since": {"epoch": epoch, "seq": 1}})
        check_subscribed(reply, epoch, 20, recovered=False)
        history = await read_history(client, reply)
        assert [m["payload"] for m in history] == [f"r-{i:02d}" for i in range(31, 50)] + ["end"]

    run(body())


def test_retention_age(gateway_factory, broker, tmp_path):
    db = tmp_path / "age.db"
    gateway = start_gateway(gateway_factory, db, "--window", "2s")
    publisher = PahoClient(broker.port)
    try:
        for i in range(3):
            publisher.publish("age/a", f"old-a-{i}".encode())
        for i in range(2):
            publisher.publish("age/b", f"old-b-{i}".encode())
        old = wait_db_rows(db, "age/#", 5)
        # Let the five messages age past the 2 s window. The trim runs when the
        # next message is stored, so nothing depends on when it runs.
        time.sleep(3)
        publisher.publish("age/a", b"new-a")
    finally:
        publisher.close()
    deadline = time.monotonic() + WAIT
    while not any(r.payload == b"new-a" for r in db_rows(db, "age/#")) and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = db_rows(db, "age/#")
    assert [r.payload for r in rows] == [b"new-a"], f"rows after the trim: {rows}; before: {old}"

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        epoch = client.welcome["epoch"]
        reply = await client.subscribe("age/#", id=1, history={"last": 100})
        check_subscribed(reply, epoch, 1)
        history = await read_history(client, reply)
        assert [summary(m) for m in history] == [row_summary(rows[0])]

        reply = await client.subscribe("age/b", id=2, history={"since": {"epoch": epoch, "seq": old[0].seq}})
        check_subscribed(reply, epoch, 0, recovered=False)

    run(body())

    topics = http_json(gateway, "/api/v1/topics?" + query(filter="age/#"), schema="http/topics.json")
    assert topics["count"] == 2
    assert [(t["topic"], t["payload"]) for t in topics["topics"]] == [("age/a", "new-a"), ("age/b", "old-b-1")]
    assert topics["topics"][1]["seq"] == old[-1].seq


def test_empty_retained_clears_latest(gateway_factory, broker, tmp_path):
    db = tmp_path / "retained.db"
    gateway = start_gateway(gateway_factory, db)
    mosquitto_pub(broker.port, "dev/x/power", "12", retain=True)
    mosquitto_pub(broker.port, "dev/x/state", "on", retain=True)
    before = wait_db_rows(db, "dev/#", 2)
    topics = http_json(gateway, "/api/v1/topics?" + query(filter="dev/#"), schema="http/topics.json")
    assert [(t["topic"], t["payload"]) for t in topics["topics"]] == [("dev/x/power", 12), ("dev/x/state", "on")]

    mosquitto_pub(broker.port, "dev/x/state", null=True, retain=True)
    rows = wait_db_rows(db, "dev/#", 3)
    assert len(rows) == 3, rows
    assert len(before) == 2

    topics = http_json(gateway, "/api/v1/topics?" + query(filter="dev/#"), schema="http/topics.json")
    assert topics["count"] == 1
    assert [(t["topic"], t["payload"]) for t in topics["topics"]] == [("dev/x/power", 12)]

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        reply = await client.subscribe("dev/x/state", id=1, history={"last": 10})
        check_subscribed(reply, client.welcome["epoch"], 2)
        history = await read_history(client, reply)
        assert [(m["topic"], m["encoding"], m["payload"], m["retain"]) for m in history] == [
            ("dev/x/state", "utf8", "on", True),
            ("dev/x/state", "utf8", "", True),
        ]
        assert [m["seq"] for m in history] == [r.seq for r in rows if r.topic == "dev/x/state"]

    run(body())


def test_history_limit_truncates(gateway_factory, broker, tmp_path):
    db = tmp_path / "truncate.db"
    gateway = start_gateway(gateway_factory, db, "--history-max-messages", "10")
    publisher = PahoClient(broker.port)
    try:
        for i in range(30):
            publisher.publish("trunc/t", f"t-{i:02d}".encode())
    finally:
        publisher.close()
    rows = wait_db_rows(db, "trunc/#", 30)

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        epoch = client.welcome["epoch"]
        reply = await client.subscribe("trunc/#", id=1, history={"since": {"epoch": epoch, "seq": 0}})
        check_subscribed(reply, epoch, 10, recovered=False, truncated=True)
        history = await read_history(client, reply)
        assert [summary(m) for m in history] == [row_summary(r) for r in rows[-10:]]

        reply = await client.subscribe("trunc/t", id=2, history={"last": 30})
        check_subscribed(reply, epoch, 10, recovered=False, truncated=True)
        history = await read_history(client, reply)
        assert [summary(m) for m in history] == [row_summary(r) for r in rows[-10:]]

        reply = await client.subscribe("trunc/+", id=3, history={"last": 5})
        check_subscribed(reply, epoch, 5)
        history = await read_history(client, reply)
        assert [summary(m) for m in history] == [row_summary(r) for r in rows[-5:]]

    run(body())
    metrics = gateway.metrics()
    assert metrics["tidegate_history_requests_total"] == 3
    assert metrics["tidegate_history_messages_total"] == 25


def test_history_nothing_to_send(gateway_factory, broker, tmp_path):
    db = tmp_path / "empty.db"
    gateway = start_gateway(gateway_factory, db)
    publisher = PahoClient(broker.port)
    try:
        publisher.publish("none/t", b"stored")
        rows = wait_db_rows(db, "none/#", 1)

        async def body():
            client = await WsClient.connect(gateway.ws_url)
            epoch = client.welcome["epoch"]
            reply = await client.subscribe("none/#", id=1, history={"last": 0})
            check_subscribed(reply, epoch, 0)
            future_ms = int(time.time() * 1000) + 3_600_000
            reply = await client.subscribe("none/t", id=2, history={"since_ms": future_ms})
            check_subscribed(reply, epoch, 0)
            reply = await client.subscribe("none/+", id=3, history={"since": {"epoch": epoch, "seq": rows[0].seq}})
            check_subscribed(reply, epoch, 0)
            reply = await client.subscribe("nothing/#", id=4, history={"last": 10})
            check_subscribed(reply, epoch, 0)

            # The three subscriptions that match none/t are live, and the
            # client gets the next message once.
            publisher.publish("none/t", b"live")
            (live,) = await read_live(client, 1)
            assert (live["topic"], live["payload"]) == ("none/t", "live")
            await client.ping("end")

        run(body())
    finally:
        publisher.close()


# Each case: the history value of a subscribe request, then a pattern the error message must contain.
INVALID_HISTORY = [
    ({"last": -1}, r"history\.last"),
    ({"last": "5"}, r"history\.last"),
    ({"last": 1.5}, r"history\.last"),
    ({"since_ms": -5}, r"history\.since_ms"),
    ({"since": {"epoch": ZERO_EPOCH}}, r"history\.since"),
    ({"since": {"seq": 3}}, r"history\.since"),
    ({}, r"history"),
    ({"last": 1, "since_ms": 5}, r"history"),
    ({"frob": 1}, r"history"),
    ([], r"history"),
]


@pytest.mark.parametrize("history,pattern", INVALID_HISTORY, ids=[json.dumps(h) for h, _ in INVALID_HISTORY])
def test_invalid_history_rejected(gateway_factory, broker, tmp_path, history, pattern):
    gateway = start_gateway(gateway_factory, tmp_path / "invalid.db")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send({"type": "subscribe", "id": "h", "filter": "inv/#", "history": history})
        error = await client.expect("error")
        assert (error["id"], error["code"]) == ("h", "invalid"), error
        assert re.search(pattern, error["message"]), f"error message {error['message']!r} lacks {pattern!r}"

        # The connection stays open and the rejected filter was not subscribed.
        await client.subscribe("inv/ok", id="ok")
        mosquitto_pub(broker.port, "inv/other", "not subscribed")
        mosquitto_pub(broker.port, "inv/ok", "subscribed")
        msg = await client.expect("message")
        assert (msg["topic"], msg["payload"]) == ("inv/ok", "subscribed")

    run(body())


def test_durability_batched_delivers_all(gateway_factory, broker, tmp_path):
    db = tmp_path / "batched.db"
    gateway = start_gateway(gateway_factory, db, "--durability", "batched")
    messages = [(f"batch/{i % 3}", f"b-{i:04d}".encode()) for i in range(1000)]

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("batch/#", id=1)
        await asyncio.get_running_loop().run_in_executor(None, publish_all, broker.port, messages)
        live = await read_live(client, 1000)
        assert [(m["topic"], m["payload"]) for m in live] == [(t, p.decode()) for t, p in messages]
        seqs = [m["seq"] for m in live]
        assert seqs == sorted(set(seqs)), "seqs not strictly increasing"
        return live

    live = run(body())
    assert gateway.terminate() == 0
    rows = db_rows(db, "batch/#")
    assert [row_summary(r) for r in rows] == [summary(m) for m in live]


# ---------------------------------------------------------------------------
# HTTP API


def test_http_history_and_topics(gateway_factory, broker, tmp_path):
    db = tmp_path / "http.db"
    gateway = start_gateway(gateway_factory, db)
    publisher = PahoClient(broker.port)
    try:
        for i in range(30):
            publisher.publish("h/a" if i % 2 == 0 else "h/b", f"h-{i:02d}".encode())
        publisher.publish("other/x", b"not matched")
    finally:
        publisher.close()
    wait_db_rows(db, "other/x", 1)
    rows = db_rows(db, "h/+")
    assert len(rows) == 30

    async def get_epoch():
        client = await WsClient.connect(gateway.ws_url)
        return client.welcome["epoch"]

    epoch = run(get_epoch())
    oldest_seq = db_rows(db, "#")[0].seq

    def history(expected_count, recovered=True, truncated=False, **params):
        body = http_json(gateway, "/api/v1/history?" + query(**params), schema="http/history.json")
        assert body["epoch"] == epoch
        assert body["recovered"] is recovered, body
        assert body["truncated"] is truncated, body
        assert body["oldest_seq"] == oldest_seq, body
        assert body["count"] == expected_count == len(body["messages"]), body
        return [summary(m) for m in body["messages"]]

    assert history(5, filter="h/#", limit=5) == [row_summary(r) for r in rows[-5:]]
    assert history(30, filter="h/+") == [row_summary(r) for r in rows]
    assert history(15, filter="h/b") == [row_summary(r) for r in rows if r.topic == "h/b"]

    since_ms = rows[20].ts
    expected = [row_summary(r) for r in rows if r.ts >= since_ms]
    assert history(len(expected), filter="h/+", since_ms=since_ms) == expected

    since_seq = rows[24].seq
    assert history(5, filter="h/#", since_seq=since_seq, epoch=epoch) == [row_summary(r) for r in rows[25:]]
    assert history(2, recovered=False, truncated=True, filter="h/#", since_seq=since_seq, epoch=epoch, limit=2) == [
        row_summary(r) for r in rows[-2:]
    ]
    assert history(30, recovered=False, filter="h/#", since_seq=since_seq, epoch=ZERO_EPOCH) == [
        row_summary(r) for r in rows
    ]

    topics = http_json(gateway, "/api/v1/topics?" + query(filter="h/+"), schema="http/topics.json")
    assert topics["epoch"] == epoch
    assert topics["count"] == 2
    assert [summary(t) for t in topics["topics"]] == [row_summary(rows[-2]), row_summary(rows[-1])]
    topics = http_json(gateway, "/api/v1/topics?" + query(filter="h/+", limit=1), schema="http/topics.json")
    assert [t["topic"] for t in topics["topics"]] == ["h/a"]
    topics = http_json(gateway, "/api/v1/topics?" + query(filter="nothing/#"), schema="http/topics.json")
    assert (topics["count"], topics["topics"]) == (0, [])


# Each case: query string of /api/v1/history, then patterns the error message must contain.
BAD_HISTORY_QUERIES = [
    ("limit=-1", [r"limit", r"-1"]),
    ("limit=ten", [r"limit", r"ten"]),
    ("since_ms=yesterday", [r"since_ms"]),
    ("since_seq=3", [r"since_seq", r"epoch"]),
    ("filter=a%2F%23%2Fb", [r"filter"]),
    ("filter=a%2Bb", [r"filter"]),
    ("since_ms=1&since_seq=3&epoch=" + ZERO_EPOCH, [r"since_ms", r"since_seq"]),
]


@pytest.mark.parametrize("query_string,patterns", BAD_HISTORY_QUERIES, ids=[q for q, _ in BAD_HISTORY_QUERIES])
def test_http_history_bad_parameter(gateway_factory, tmp_path, query_string, patterns):
    gateway = start_gateway(gateway_factory, tmp_path / "bad.db", ready=False)
    body = http_json(gateway, "/api/v1/history?" + query_string, expected_status=400, schema="http/error.json")
    assert body["error"] == "invalid"
    for pattern in patterns:
        assert re.search(pattern, body["message"]), f"error message {body['message']!r} lacks {pattern!r}"


def test_http_topics_bad_filter(gateway_factory, tmp_path):
    gateway = start_gateway(gateway_factory, tmp_path / "bad.db", ready=False)
    body = http_json(gateway, "/api/v1/topics?" + query(filter="a/#/b"), expected_status=400, schema="http/error.json")
    assert body["error"] == "invalid"
    assert "filter" in body["message"]


# ---------------------------------------------------------------------------
# Settings


# Each case: arguments, then the key and the value that stderr must name.
BAD_WINDOW_SETTINGS = [
    (["--window", "5x"], r"window", r"5x"),
    (["--window", "-1s"], r"window", r"-1s"),
    (["--durability", "maybe"], r"durability", r"maybe"),
    (["--db", ""], r"\bdb\b", r"''|\"\""),
    (["--window-max-messages", "-1"], r"window[-_]max[-_]messages", r"-1"),
    (["--history-max-messages", "lots"], r"history[-_]max[-_]messages", r"lots"),
]


@pytest.mark.parametrize("args,key,value", BAD_WINDOW_SETTINGS, ids=[" ".join(a) for a, _, _ in BAD_WINDOW_SETTINGS])
def test_bad_window_setting_exits_2(args, key, value):
    result = run_cli(*args)
    assert result.returncode == 2, f"exit {result.returncode}, stderr {result.stderr!r}"
    assert re.search(key, result.stderr), f"stderr does not name {key!r}: {result.stderr!r}"
    assert re.search(value, result.stderr), f"stderr does not name the value {value!r}: {result.stderr!r}"
