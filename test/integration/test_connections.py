"""WebSocket connection lifecycle: close codes, slow clients, shutdown and broker restarts."""

import asyncio
import json
import signal
import struct

from support import WAIT, PahoClient, RawWebSocket, WsClient, readyz_summary, run


def ping_text(length, request_id_prefix="p"):
    """Return a ping request of exactly length bytes."""
    base = json.dumps({"type": "ping", "id": request_id_prefix})
    return base[:-2] + "x" * (length - len(base)) + base[-2:]


def test_invalid_utf8_closes_1007(gateway):
    raw = RawWebSocket(gateway.port)
    raw.recv_json()
    raw.send_frame(RawWebSocket.OP_TEXT, b'{"type":"ping","id":"\xc3\x28"}')
    messages, code = raw.read_until_close()
    raw.sock.close()
    assert messages == []
    assert code == 1007


def test_invalid_utf8_in_fragment_closes_1007(gateway):
    raw = RawWebSocket(gateway.port)
    raw.recv_json()
    raw.send_frame(RawWebSocket.OP_TEXT, b'{"type":"ping","id":"', fin=False)
    raw.send_frame(RawWebSocket.OP_CONT, b'\xed\xa0\x80"}', fin=True)
    messages, code = raw.read_until_close()
    raw.sock.close()
    assert messages == []
    assert code == 1007


def test_utf8_split_across_fragments_accepted(gateway):
    text = '{"type":"ping","id":"caf\u00e9"}'.encode()
    split = text.index(b"\xc3") + 1
    raw = RawWebSocket(gateway.port)
    raw.recv_json()
    raw.send_frame(RawWebSocket.OP_TEXT, text[:split], fin=False)
    raw.send_frame(RawWebSocket.OP_CONT, text[split:], fin=True)
    reply = raw.recv_json()
    raw.close()
    assert reply == {"type": "pong", "id": "caf\u00e9"}


def test_message_size_limit(gateway_factory):
    gateway = gateway_factory("--max-message-bytes", "1024")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        at_limit = ping_text(1024)
        assert len(at_limit.encode()) == 1024
        await client.send_raw(at_limit)
        reply = await client.expect("pong")
        assert reply["id"] == json.loads(at_limit)["id"]

        over_limit = ping_text(1025)
        await client.send_raw(over_limit)
        assert await client.close_code() == 1009

    run(body())


def test_fragmented_message_over_limit_closes_1009(gateway_factory):
    gateway = gateway_factory("--max-message-bytes", "1024")
    raw = RawWebSocket(gateway.port)
    raw.recv_json()
    text = ping_text(1500).encode()
    raw.send_frame(RawWebSocket.OP_TEXT, text[:500], fin=False)
    raw.send_frame(RawWebSocket.OP_CONT, text[500:1000], fin=False)
    try:
        raw.send_frame(RawWebSocket.OP_CONT, text[1000:], fin=True)
    except OSError:
        pass  # the gateway may close before the last fragment
    messages, code = raw.read_until_close()
    raw.sock.close()
    assert messages == []
    assert code == 1009


def test_binary_frame_closes_1003(gateway):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send_raw(b'{"type":"ping","id":1}')
        assert await client.close_code() == 1003

    run(body())


def test_idle_client_closed_1000(gateway_factory):
    """A client that sends nothing, not even pongs, is closed with 1000 after the idle timeout."""
    gateway = gateway_factory("--ws-ping-interval", "1", "--ws-idle-timeout", "2")
    raw = RawWebSocket(gateway.port)
    raw.recv_json()
    pings = 0
    code = None
    raw.sock.settimeout(WAIT)
    while True:
        _, opcode, payload = raw.recv_frame()
        if opcode == RawWebSocket.OP_PING:
            pings += 1
            continue
        assert opcode == RawWebSocket.OP_CLOSE, f"unexpected opcode {opcode}"
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        break
    raw.sock.close()
    assert pings >= 1, "no ping from the gateway before the idle timeout"
    assert code == 1000


def test_slow_client_closed_others_unaffected(gateway_factory, broker):
    """A client that stops reading is closed once its send queue is full; a reading client gets every message in order."""
    queue_bytes = 262144
    payload_size = 8192
    batch = 16  # 128 KiB per batch, half the queue limit
    max_batches = 400  # about 52 MB in total, over ten times the Linux default tcp_wmem maximum of 4 MiB
    gateway = gateway_factory("--send-queue-bytes", str(queue_bytes))

    def payload(index):
        return f"{index:08d}".encode() + b"x" * (payload_size - 8)

    async def body():
        fast = await WsClient.connect(gateway.ws_url, max_size=2**24)
        await fast.subscribe("flood/#")

        slow = RawWebSocket(gateway.port, rcvbuf=4096)
        slow.recv_json()
        slow.send_text(json.dumps({"type": "subscribe", "id": 1, "filter": "#"}))
        reply = slow.recv_json()
        assert reply["type"] == "subscribed", reply

        publisher = PahoClient(broker.port)
        published = 0
        disconnected_at = None
        extra_batches = 2
        try:
            for _ in range(max_batches):
                for _ in range(batch):
                    publisher.publish(f"flood/{published}", payload(published))
                    published += 1
                for expected in range(published - batch, published):
                    msg = await fast.expect("message")
                    assert msg["topic"] == f"flood/{expected}"
                    assert msg["payload"].encode() == payload(expected)
                if disconnected_at is None:
                    if gateway.metrics()["tidegate_slow_client_disconnects_total"] >= 1:
                        disconnected_at = published
                elif published >= disconnected_at + extra_batches * batch:
                    break
        finally:
            publisher.close()

        assert disconnected_at is not None, f"slow client still connected after {published} messages of {payload_size} bytes"
        assert gateway.metrics()["tidegate_slow_client_disconnects_total"] == 1
        # The gauge drops when the close completes, which can be after the counter grew.
        assert gateway.wait_metric("tidegate_clients_connected", 1) == 1

        received, code = slow.read_until_close()
        slow.sock.close()
        assert code in (1008, None), f"slow client closed with {code}"
        topics = [m["topic"] for m in received if m["type"] == "message"]
        assert len(topics) < published, f"slow client received all {published} messages"
        assert topics == [f"flood/{i}" for i in range(len(topics))], "slow client got a gap before it was closed"

        await fast.ping("still-open")

    run(body())


def test_sigterm_closes_clients_1001(gateway_factory):
    gateway = gateway_factory()

    async def body():
        first = await WsClient.connect(gateway.ws_url)
        await first.subscribe("#")
        second = await WsClient.connect(gateway.ws_url)
        gateway.exit_checked = True
        gateway.proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(first.close_code(), second.close_code())
        assert codes == [1001, 1001]
        status = await asyncio.to_thread(gateway.proc.wait, WAIT)
        assert status == 0

    run(body())


def test_broker_restart_resumes(gateway_factory, broker):
    gateway = gateway_factory("--publish-allow", "r/#")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("r/#", id=1)
        publisher = PahoClient(broker.port)
        try:
            publisher.publish("r/before", b"before")
        finally:
            publisher.close()
        msg = await client.expect("message")
        assert (msg["topic"], msg["payload"]) == ("r/before", "before")

        broker.stop()
        body_down = await asyncio.to_thread(gateway.wait_readyz, 503)
        assert readyz_summary(body_down) == (False, "disconnected", "ok")
        assert gateway.metrics()["tidegate_broker_connected"] == 0

        await client.send({"type": "publish", "id": 2, "topic": "r/down", "payload": "x", "qos": 1})
        error = await client.expect("error")
        assert (error["id"], error["code"]) == (2, "unavailable"), error

        await asyncio.to_thread(broker.start)
        body_up = await asyncio.to_thread(gateway.wait_readyz, 200)
        assert readyz_summary(body_up) == (True, "connected", "ok")
        assert gateway.metrics()["tidegate_broker_connected"] == 1

        publisher = PahoClient(broker.port)
        try:
            # /readyz can report the connection before the broker acknowledged
            # the gateway's new subscription, so publish probes until one arrives.
            probes = 0
            arrived = None
            while arrived is None and probes < int(WAIT / 0.5):
                probes += 1
                publisher.publish(f"r/probe/{probes}", b"probe")
                try:
                    arrived = await asyncio.wait_for(client.expect("message"), 0.5)
                except asyncio.TimeoutError:
                    continue
            assert arrived is not None, "no delivery after the broker restarted"
            assert arrived["topic"].startswith("r/probe/")

            for index in range(10):
                publisher.publish(f"r/after/{index}", str(index).encode())
            got = await client.messages_until("r/after/9")
            assert [(m["topic"], m["payload"]) for m in got] == [(f"r/after/{i}", i) for i in range(10)]

            subscriber = PahoClient(broker.port)
            try:
                subscriber.subscribe("r/from-client")
                await client.send({"type": "publish", "id": 3, "topic": "r/from-client", "payload": "up", "qos": 1})
                # The client also receives its own publish through r/#, in either order.
                frames = [await client.recv(), await client.recv()]
                frames.sort(key=lambda frame: frame["type"])
                assert frames[1] == {"type": "published", "id": 3}
                assert (frames[0]["type"], frames[0]["topic"], frames[0]["payload"]) == ("message", "r/from-client", "up")
                assert subscriber.wait_received(1) == [("r/from-client", b"up", False)]
            finally:
                subscriber.close()
        finally:
            publisher.close()

    run(body())


def test_idle_client_has_no_parser(gateway):
    """A client at rest has no wslay context. It gets one only while a frame or message is incomplete."""
    raw = RawWebSocket(gateway.port)
    raw.recv_json()
    assert gateway.wait_metric("tidegate_clients_connected", 1) == 1
    assert gateway.wait_metric("tidegate_ws_parsers", 0) == 0

    raw.send_text('{"type":"ping","id":"whole"}')
    assert raw.recv_json() == {"type": "pong", "id": "whole"}
    assert gateway.wait_metric("tidegate_ws_parsers", 0) == 0

    # Half a frame: the parser must keep the bytes until the rest arrives.
    text = b'{"type":"ping","id":"split-frame"}'
    mask = b"\x01\x02\x03\x04"
    frame = struct.pack("!BB", 0x80 | RawWebSocket.OP_TEXT, 0x80 | len(text)) + mask
    frame += bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    raw.sock.sendall(frame[:9])
    assert gateway.wait_metric("tidegate_ws_parsers", 1) == 1
    raw.sock.sendall(frame[9:])
    assert raw.recv_json() == {"type": "pong", "id": "split-frame"}
    assert gateway.wait_metric("tidegate_ws_parsers", 0) == 0

    # A message in two frames: the parser is kept between them.
    text = b'{"type":"ping","id":"two-frames"}'
    raw.send_frame(RawWebSocket.OP_TEXT, text[:10], fin=False)
    assert gateway.wait_metric("tidegate_ws_parsers", 1) == 1
    raw.send_frame(RawWebSocket.OP_CONT, text[10:], fin=True)
    assert raw.recv_json() == {"type": "pong", "id": "two-frames"}
    assert gateway.wait_metric("tidegate_ws_parsers", 0) == 0
    raw.close()
    assert gateway.wait_metric("tidegate_clients_connected", 0) == 0
