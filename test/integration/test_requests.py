"""Client requests over WebSocket: welcome, errors, ping and publish."""

import json

import pytest

from support import PahoClient, WsClient, run


def test_welcome_message(gateway_factory):
    gateway = gateway_factory("--max-message-bytes", "4096")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        welcome = client.welcome
        assert welcome["server"] == "tidegate"
        assert len(welcome["epoch"]) > 0
        int(welcome["epoch"], 16)
        assert welcome["max_message_bytes"] == 4096
        second = await WsClient.connect(gateway.ws_url)
        assert second.welcome["epoch"] == welcome["epoch"]
        assert second.welcome["seq"] >= welcome["seq"]

    run(body())


def test_seq_matches_welcome(gateway, broker):
    """The first message after connecting has a seq greater than the welcome seq."""

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.subscribe("seq/#")
        publisher = PahoClient(broker.port)
        try:
            publisher.publish("seq/1", b"one")
            publisher.publish("seq/2", b"two")
        finally:
            publisher.close()
        first = await client.expect("message")
        second = await client.expect("message")
        assert first["seq"] > client.welcome["seq"]
        assert second["seq"] > first["seq"]

    run(body())


# Each case: raw text sent, id expected in the error (None: no id field).
INVALID_REQUESTS = [
    ('{"type":', None),
    ("not json at all", None),
    ("[1,2,3]", None),
    ('"subscribe"', None),
    ('{"id":5}', 5),
    ('{"type":"frobnicate","id":7}', 7),
    ('{"type":42,"id":8}', 8),
    ('{"type":"subscribe","id":9}', 9),
    ('{"type":"subscribe","id":"s","filter":42}', "s"),
    ('{"type":"subscribe","id":10,"filter":""}', 10),
    ('{"type":"subscribe","id":11,"filter":"a/#/b"}', 11),
    ('{"type":"subscribe","id":12,"filter":"a+"}', 12),
    ('{"type":"subscribe","id":13,"filter":"a/b#"}', 13),
    ('{"type":"subscribe","filter":"a/#/b"}', None),
    ('{"type":"unsubscribe","id":14}', 14),
    ('{"type":"subscribe","id":15,"filter":"a","history":{"last":"ten"}}', 15),
]


@pytest.mark.parametrize("text,expected_id", INVALID_REQUESTS, ids=[t for t, _ in INVALID_REQUESTS])
def test_invalid_request_keeps_connection(gateway, text, expected_id):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send_raw(text)
        error = await client.expect("error")
        assert error["code"] == "invalid", error
        if expected_id is None:
            assert "id" not in error, error
        else:
            assert error["id"] == expected_id
        assert error["message"], "empty error message"
        await client.ping(id="after")

    run(body())


def test_invalid_filter_not_subscribed(gateway, broker):
    """A rejected filter delivers nothing; a valid filter on the same connection still works."""

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send({"type": "subscribe", "id": 1, "filter": "a/#/b"})
        error = await client.expect("error")
        assert (error["id"], error["code"]) == (1, "invalid")
        await client.subscribe("b/#", id=2)
        publisher = PahoClient(broker.port)
        try:
            publisher.publish("a/x/b", b"would match if '#' were taken as '+'")
            publisher.publish("a/b", b"would match if '#' matched zero levels here")
            publisher.publish("b/end", b"end")
        finally:
            publisher.close()
        got = await client.messages_until("b/end")
        assert [m["topic"] for m in got] == ["b/end"]

    run(body())


def test_ping_pong_ids(gateway):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        for request_id in (4, "text-id", 0, -3):
            await client.ping(request_id)
        await client.send({"type": "ping"})
        reply = await client.expect("pong")
        assert "id" not in reply

    run(body())


def test_publish_allowed_reaches_subscriber(gateway_factory, broker):
    gateway = gateway_factory("--publish-allow", "chat/#")
    subscriber = PahoClient(broker.port)
    subscriber.subscribe("chat/#")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        requests = [
            ({"type": "publish", "id": 1, "topic": "chat/room1", "payload": "hello \u2713", "qos": 1}, "hello \u2713".encode()),
            ({"type": "publish", "id": 2, "topic": "chat/room1", "payload": {"a": 1, "b": [True, None, "x"]}, "qos": 1}, b'{"a":1,"b":[true,null,"x"]}'),
            ({"type": "publish", "id": 3, "topic": "chat/room2", "payload": 42, "qos": 1}, b"42"),
            ({"type": "publish", "id": 4, "topic": "chat/bin", "payload": "AAEC/w==", "encoding": "base64", "qos": 1}, b"\x00\x01\x02\xff"),
            ({"type": "publish", "id": 5, "topic": "chat/empty", "payload": "", "qos": 1}, b""),
        ]
        for request, _ in requests:
            await client.send(request)
            reply = await client.expect("published")
            assert reply == {"type": "published", "id": request["id"]}
        received = subscriber.wait_received(len(requests))
        assert [(topic, payload) for topic, payload, _ in received] == [
            (request["topic"], expected) for request, expected in requests
        ]

    try:
        run(body())
    finally:
        subscriber.close()


def test_publish_json_payload_verbatim(gateway_factory, broker):
    """A JSON payload is published exactly as the client wrote it, white space included."""
    gateway = gateway_factory("--publish-allow", "chat/#")
    subscriber = PahoClient(broker.port)
    subscriber.subscribe("chat/#")
    text = '{"type": "publish", "id": 1, "topic": "chat/c", "payload": {"a": 1, "b": [true, null, "x y"]}, "qos": 1}'

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send_raw(text)
        await client.expect("published")
        received = subscriber.wait_received(1)
        assert [(t, p) for t, p, _ in received] == [("chat/c", b'{"a": 1, "b": [true, null, "x y"]}')]

    try:
        run(body())
    finally:
        subscriber.close()


def test_publish_big_integer_verbatim(gateway_factory, broker):
    gateway = gateway_factory("--publish-allow", "chat/#")
    subscriber = PahoClient(broker.port)
    subscriber.subscribe("chat/#")
    text = '{"type":"publish","id":1,"topic":"chat/n","payload":{"n":123456789012345678901234567890},"qos":1}'

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send_raw(text)
        await client.expect("published")
        received = subscriber.wait_received(1)
        assert [(t, p) for t, p, _ in received] == [("chat/n", b'{"n":123456789012345678901234567890}')]

    try:
        run(body())
    finally:
        subscriber.close()


def test_publish_retain_flag(gateway_factory, broker):
    gateway = gateway_factory("--publish-allow", "kept/#")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send({"type": "publish", "id": 1, "topic": "kept/mode", "payload": "eco", "qos": 1, "retain": True})
        await client.expect("published")

    run(body())
    # A subscriber that arrives later gets the retained message from the broker.
    late = PahoClient(broker.port)
    try:
        late.subscribe("kept/#")
        received = late.wait_received(1)
        assert received == [("kept/mode", b"eco", True)]
    finally:
        late.close()


def test_publish_forbidden_reaches_nobody(gateway_factory, broker):
    gateway = gateway_factory("--publish-allow", "chat/#")
    subscriber = PahoClient(broker.port)
    subscriber.subscribe("#")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        for request_id, topic in ((1, "admin/reset"), (2, "chatroom/1"), (3, "Chat/room1")):
            await client.send({"type": "publish", "id": request_id, "topic": topic, "payload": "x", "qos": 1})
            error = await client.expect("error")
            assert (error["id"], error["code"]) == (request_id, "forbidden"), error
        await client.send({"type": "publish", "id": 4, "topic": "chat/end", "payload": "end", "qos": 1})
        await client.expect("published")
        received = subscriber.wait_received(1)
        assert [(t, p) for t, p, _ in received] == [("chat/end", b"end")]

    try:
        run(body())
    finally:
        subscriber.close()


def test_publish_default_allows_nothing(gateway, broker):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send({"type": "publish", "id": 1, "topic": "chat/room1", "payload": "x", "qos": 1})
        error = await client.expect("error")
        assert (error["id"], error["code"]) == (1, "forbidden")

    run(body())


@pytest.mark.parametrize(
    "request_body",
    [
        {"type": "publish", "id": 1, "topic": "chat/+", "payload": "x"},
        {"type": "publish", "id": 1, "topic": "chat/#", "payload": "x"},
        {"type": "publish", "id": 1, "topic": "chat/a#", "payload": "x"},
        {"type": "publish", "id": 1, "topic": "", "payload": "x"},
        {"type": "publish", "id": 1, "payload": "x"},
        {"type": "publish", "id": 1, "topic": "chat/a"},
        {"type": "publish", "id": 1, "topic": "chat/a", "payload": "x", "qos": 2},
        {"type": "publish", "id": 1, "topic": "chat/a", "payload": "%%%", "encoding": "base64"},
        {"type": "publish", "id": 1, "topic": "chat/a", "payload": 5, "encoding": "base64"},
    ],
    ids=lambda r: json.dumps(r),
)
def test_publish_invalid(gateway_factory, broker, request_body):
    gateway = gateway_factory("--publish-allow", "#")
    subscriber = PahoClient(broker.port)
    subscriber.subscribe("chat/#")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send(request_body)
        error = await client.expect("error")
        assert (error["id"], error["code"]) == (1, "invalid"), error
        await client.send({"type": "publish", "id": 2, "topic": "chat/end", "payload": "end", "qos": 1})
        await client.expect("published")
        received = subscriber.wait_received(1)
        assert [(t, p) for t, p, _ in received] == [("chat/end", b"end")]

    try:
        run(body())
    finally:
        subscriber.close()
