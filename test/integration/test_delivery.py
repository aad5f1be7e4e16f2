"""Delivery from MQTT to WebSocket clients: filters, payload encodings, retain and duplicates.

Each test ends a run with a sentinel message and asserts the exact list of
messages up to it, so a missing or extra message fails without timing.
"""

import asyncio
import base64
import json

from support import PahoClient, WsClient, mosquitto_pub, run

BIG_INTEGER = "123456789012345678901234567890"
JSON_PAYLOAD = '{"n":' + BIG_INTEGER + ',"nested":{"list":[1,2,{"deep":null}],"s":"x","f":false}}'
BINARY_PAYLOAD = bytes(range(256))


def summary(msg):
    return (msg["topic"], msg["encoding"], msg["payload"])


def test_plus_filter_text(gateway, broker):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("sensors/+/temp", id=1)
        publisher = PahoClient(broker.port)
        try:
            publisher.publish("sensors/kitchen/temp", b"21.5 C")
            publisher.publish("sensors/kitchen/humidity", b"40 %")
            publisher.publish("sensors/kitchen/x/temp", b"deeper")
            publisher.publish("sensors/temp", b"shallower")
            publisher.publish("sensors//temp", "empty level \u00e9\u2713".encode())
            publisher.publish("sensors/end/temp", b"end")
        finally:
            publisher.close()
        got = await client.messages_until("sensors/end/temp")
        assert [summary(m) for m in got] == [
            ("sensors/kitchen/temp", "utf8", "21.5 C"),
            ("sensors//temp", "utf8", "empty level \u00e9\u2713"),
            ("sensors/end/temp", "utf8", "end"),
        ]
        seqs = [m["seq"] for m in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"seq not increasing: {seqs}"

    run(body())


def test_hash_filter_json_and_binary(gateway, broker, tmp_path):
    binary_file = tmp_path / "payload.bin"
    binary_file.write_bytes(BINARY_PAYLOAD)

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("data/#", id="d")
        publisher = PahoClient(broker.port)
        try:
            publisher.publish("data", b"parent level")
            publisher.publish("data/json", JSON_PAYLOAD.encode())
            mosquitto_pub(broker.port, "data/bin/cli", file=binary_file)
            publisher.publish("data/bin/paho", BINARY_PAYLOAD)
            publisher.publish("other/json", b"{}")
            publisher.publish("data/end", b"end")
        finally:
            publisher.close()

        raw_frames = []
        original_recv = client.ws.recv

        async def recording_recv():
            frame = await original_recv()
            raw_frames.append(frame)
            return frame

        client.ws.recv = recording_recv
        got = await client.messages_until("data/end")
        assert [m["topic"] for m in got] == ["data", "data/json", "data/bin/cli", "data/bin/paho", "data/end"]

        assert got[0]["encoding"] == "utf8"
        assert got[0]["payload"] == "parent level"

        assert got[1]["encoding"] == "json"
        assert got[1]["payload"] == json.loads(JSON_PAYLOAD)
        assert got[1]["payload"]["n"] == int(BIG_INTEGER)
        assert isinstance(got[1]["payload"]["n"], int), "large integer lost precision"
        assert BIG_INTEGER in raw_frames[1], f"digits of the large integer changed: {raw_frames[1]}"
        assert got[1]["payload"]["nested"] == {"list": [1, 2, {"deep": None}], "s": "x", "f": False}

        for msg in got[2:4]:
            assert msg["encoding"] == "base64"
            assert base64.b64decode(msg["payload"], validate=True) == BINARY_PAYLOAD

    run(body())


# Each case: payload bytes, expected encoding, expected payload value.
ENCODING_CASES = [
    (b'{"t":NaN}', "utf8", '{"t":NaN}'),
    (b"42", "json", 42),
    (b'"quoted"', "json", "quoted"),
    (b"true", "json", True),
    (b"null", "json", None),
    (b'  {"a": [1, 2]}  ', "json", {"a": [1, 2]}),
    (b"[1,2", "utf8", "[1,2"),
    (b"a\x00b", "utf8", "a\x00b"),
    ("h\u00e9llo \u2713 \U0001f600".encode(), "utf8", "h\u00e9llo \u2713 \U0001f600"),
    (b"\xff\xfe", "base64", "//4="),
    (b"\xed\xa0\x80", "base64", "7aCA"),  # UTF-8 encoded surrogate: invalid UTF-8
    (b"\xc0\xaf", "base64", "wK8="),  # overlong encoding: invalid UTF-8
    (b'{"s":"\xff"}', "base64", "eyJzIjoi/yJ9"),  # JSON syntax but invalid UTF-8
]


def test_payload_encodings(gateway, broker):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("enc/#")
        publisher = PahoClient(broker.port)
        try:
            for index, (payload, _, _) in enumerate(ENCODING_CASES):
                publisher.publish(f"enc/{index}", payload)
            publisher.publish("enc/end", b"end")
        finally:
            publisher.close()
        got = await client.messages_until("enc/end")
        assert len(got) == len(ENCODING_CASES) + 1
        for index, (payload, encoding, value) in enumerate(ENCODING_CASES):
            msg = got[index]
            assert msg["topic"] == f"enc/{index}"
            assert (msg["encoding"], msg["payload"]) == (encoding, value), f"payload {payload!r}"

    run(body())


def test_nan_payload_arrives_as_utf8(gateway, broker):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("nan")
        mosquitto_pub(broker.port, "nan", message='{"t":NaN}')
        msg = await client.expect("message")
        assert msg["encoding"] == "utf8"
        assert msg["payload"] == '{"t":NaN}'

    run(body())


def test_empty_retained_payload(gateway, broker):
    """A zero-length retained publish arrives as an empty utf8 string with retain true.

    MQTT 3.1.1 brokers clear the retain flag on messages forwarded to existing
    subscriptions, so retain true here needs an MQTT 5 subscription with
    retain-as-published.
    """

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("state/#")
        mosquitto_pub(broker.port, "state/lamp", null=True, retain=True)
        msg = await client.expect("message")
        assert msg["topic"] == "state/lamp"
        assert msg["encoding"] == "utf8"
        assert msg["payload"] == ""
        assert msg["retain"] is True

    run(body())


def test_empty_payload_not_retained(gateway, broker):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("state/#")
        mosquitto_pub(broker.port, "state/fan", null=True)
        msg = await client.expect("message")
        assert msg["topic"] == "state/fan"
        assert (msg["encoding"], msg["payload"], msg["retain"]) == ("utf8", "", False)

    run(body())


def test_overlapping_filters_one_copy(gateway, broker):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("a/#", id=1)
        await client.subscribe("a/+/c", id=2)
        await client.subscribe("a/b/c", id=3)
        publisher = PahoClient(broker.port)
        try:
            publisher.publish("a/b/c", b"both")
            publisher.publish("a/x", b"first only")
            publisher.publish("a/end", b"end")
        finally:
            publisher.close()
        got = await client.messages_until("a/end")
        assert [(m["topic"], m["payload"]) for m in got] == [
            ("a/b/c", "both"),
            ("a/x", "first only"),
            ("a/end", "end"),
        ]

    run(body())


def test_unsubscribe_stops_delivery(gateway, broker):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("u/#", id=1)
        await client.subscribe("u/keep", id=2)
        await client.send({"type": "unsubscribe", "id": 3, "filter": "u/#"})
        reply = await client.expect("unsubscribed")
        assert reply == {"type": "unsubscribed", "id": 3, "filter": "u/#"}
        publisher = PahoClient(broker.port)
        try:
            publisher.publish("u/drop", b"dropped")
            publisher.publish("u/keep", b"kept")
        finally:
            publisher.close()
        msg = await client.expect("message")
        assert (msg["topic"], msg["payload"]) == ("u/keep", "kept")

    run(body())


def test_dollar_topics_need_explicit_filter(gateway_factory, broker):
    """Filters starting with a wildcard do not match topics starting with '$'."""
    gateway = gateway_factory("--subscribe", "#", "--subscribe", "$app/#")

    async def body():
        wildcard = await WsClient.connect(gateway.ws_url)
        await wildcard.subscribe("#")
        await wildcard.subscribe("+/status")
        explicit = await WsClient.connect(gateway.ws_url)
        await explicit.subscribe("$app/#")
        publisher = PahoClient(broker.port)
        try:
            publisher.publish("$app/status", b"hidden from wildcards")
            publisher.publish("dollar/end", b"end")
        finally:
            publisher.close()
        got = await wildcard.messages_until("dollar/end")
        assert [m["topic"] for m in got] == ["dollar/end"]
        msg = await explicit.expect("message")
        assert (msg["topic"], msg["payload"]) == ("$app/status", "hidden from wildcards")

    run(body())


def test_gateway_subscribe_option_limits_topics(gateway_factory, broker):
    gateway = gateway_factory("--subscribe", "only/#", "--subscribe", "tidegate-test/probe/#")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("#")
        publisher = PahoClient(broker.port)
        try:
            publisher.publish("elsewhere/x", b"not subscribed by the gateway")
            publisher.publish("only/end", b"end")
        finally:
            publisher.close()
        got = await client.messages_until("only/end")
        assert [m["topic"] for m in got] == ["only/end"]

    run(body())


def test_many_clients_all_messages_in_order(gateway_factory, broker):
    """Enough clients that the loop shares the writing with its second writer thread."""
    clients_count = 300
    gateway = gateway_factory("--max-connections-per-address", "400")
    messages_count = 20

    async def body():
        clients = await asyncio.gather(*(WsClient.connect(gateway.ws_url) for _ in range(clients_count)))
        await asyncio.gather(*(c.subscribe("fan/#", id=1) for c in clients))
        publisher = PahoClient(broker.port)
        try:
            for i in range(messages_count):
                publisher.publish(f"fan/{i % 3}", json.dumps({"n": i}).encode())
            publisher.publish("fan/end", b"end")
        finally:
            publisher.close()
        results = await asyncio.gather(*(c.messages_until("fan/end") for c in clients))
        for got in results:
            assert [m["payload"] for m in got[:-1]] == [{"n": i} for i in range(messages_count)]
        for c in clients:
            await c.close()

    run(body())
