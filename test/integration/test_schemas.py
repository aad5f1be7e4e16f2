"""Check the JSON Schemas under schemas/ themselves, without a gateway."""

import json

import jsonschema
import pytest

from support import SCHEMAS, parse_server_text, schema_validator

ALL_SCHEMAS = sorted(str(p.relative_to(SCHEMAS)) for p in SCHEMAS.rglob("*.json"))

EXPECTED_SCHEMAS = [
    "config.schema.json",
    "readyz.json",
    "ws/client.json",
    "ws/client/ping.json",
    "ws/client/publish.json",
    "ws/client/subscribe.json",
    "ws/client/unsubscribe.json",
    "ws/server.json",
    "ws/server/error.json",
    "ws/server/message.json",
    "ws/server/pong.json",
    "ws/server/published.json",
    "ws/server/subscribed.json",
    "ws/server/unsubscribed.json",
    "ws/server/welcome.json",
]


def errors_of(relative_path, instance):
    return [e.message for e in schema_validator(relative_path).iter_errors(instance)]


def test_schema_files_present():
    for name in EXPECTED_SCHEMAS:
        assert name in ALL_SCHEMAS, f"schemas/{name} is missing"


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_schema_is_valid_draft_2020_12(name):
    schema = json.loads((SCHEMAS / name).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


CLIENT_VALID = [
    {"type": "subscribe", "id": 1, "filter": "sensors/+/temp", "history": {"last": 100}},
    {"type": "subscribe", "filter": "#"},
    {"type": "subscribe", "filter": "+/+//#"},
    {"type": "subscribe", "filter": "$SYS/broker/+"},
    {"type": "subscribe", "id": "a", "filter": "a/#", "history": {"since_ms": 1733340000000}},
    {"type": "subscribe", "id": 2, "filter": "a", "history": {"since": {"epoch": "9f3a", "seq": 0}}},
    {"type": "subscribe", "id": 2, "filter": "a", "max_rate": 0.5},
    {"type": "unsubscribe", "id": 2, "filter": "sensors/+/temp"},
    {"type": "publish", "id": 3, "topic": "chat/room1", "payload": {"text": "hi"}, "qos": 1, "retain": False},
    {"type": "publish", "topic": "chat/room1", "payload": None},
    {"type": "publish", "topic": "chat/room1", "payload": "AAEC/w==", "encoding": "base64", "qos": 0},
    {"type": "ping", "id": 4},
    {"type": "ping"},
]

CLIENT_INVALID = [
    {"type": "subscribe", "id": 1},
    {"type": "subscribe", "filter": ""},
    {"type": "subscribe", "filter": "a/#/b"},
    {"type": "subscribe", "filter": "a+"},
    {"type": "subscribe", "filter": "a/b#"},
    {"type": "unsubscribe", "filter": "#/a"},
    {"type": "subscribe", "filter": "a", "history": {"last": -1}},
    {"type": "subscribe", "filter": "a", "history": {"last": 1, "since_ms": 2}},
    {"type": "subscribe", "filter": "a", "history": {"since": {"epoch": "xyz", "seq": 1}}},
    {"type": "subscribe", "filter": "a", "max_rate": 0},
    {"type": "subscribe", "filter": "a", "extra": 1},
    {"type": "subscribe", "id": 1.5, "filter": "a"},
    {"type": "subscribe", "id": None, "filter": "a"},
    {"type": "unsubscribe"},
    {"type": "publish", "topic": "a/+", "payload": 1},
    {"type": "publish", "topic": "a/#", "payload": 1},
    {"type": "publish", "topic": "a"},
    {"type": "publish", "topic": "a", "payload": 1, "qos": 2},
    {"type": "publish", "topic": "a", "payload": 1, "encoding": "base64"},
    {"type": "publish", "topic": "a", "payload": "x", "encoding": "hex"},
    {"type": "publish", "topic": "a", "payload": 1, "retain": "no"},
    {"type": "ping", "id": 4, "payload": 1},
    {"type": "pong", "id": 4},
    {"type": "frobnicate"},
    {"filter": "a"},
    [],
    "ping",
]


@pytest.mark.parametrize("message", CLIENT_VALID, ids=lambda m: json.dumps(m))
def test_client_schema_accepts(message):
    assert errors_of("ws/client.json", message) == []
    assert errors_of(f"ws/client/{message['type']}.json", message) == []


@pytest.mark.parametrize("message", CLIENT_INVALID, ids=lambda m: json.dumps(m))
def test_client_schema_rejects(message):
    assert errors_of("ws/client.json", message) != []


SERVER_VALID = [
    {"type": "welcome", "epoch": "5f1c0a9e", "seq": 0, "server": "tidegate", "version": "0.1.0", "max_message_bytes": 65536},
    {"type": "welcome", "epoch": "AB12", "seq": 42, "server": "tidegate", "version": "1.2.3-dev", "max_message_bytes": 1, "later": True},
    {"type": "subscribed", "id": 1, "filter": "sensors/+/temp", "recovered": False},
    {"type": "subscribed", "filter": "#", "recovered": True},
    {"type": "subscribed", "id": 1, "filter": "h/#", "recovered": True, "epoch": "4b99", "history_count": 3, "truncated": False, "first_seq": 4},
    {"type": "subscribed", "filter": "h/#", "recovered": False, "epoch": "4b99", "history_count": 0, "truncated": False},
    {"type": "unsubscribed", "id": 2, "filter": "sensors/+/temp"},
    {"type": "message", "topic": "a/b", "seq": 1, "ts": 1733340000123, "qos": 0, "retain": False, "encoding": "json", "payload": {"n": 1}},
    {"type": "message", "topic": "a/b", "seq": 2, "ts": 0, "qos": 2, "retain": True, "encoding": "json", "payload": 123456789012345678901234567890},
    {"type": "message", "topic": "a/b", "seq": 3, "ts": 1, "qos": 1, "retain": True, "encoding": "utf8", "payload": ""},
    {"type": "message", "topic": "a/b", "seq": 4, "ts": 1, "qos": 1, "retain": False, "encoding": "base64", "payload": "AAEC/w=="},
    {"type": "message", "topic": "a/b", "seq": 5, "ts": 1, "qos": 1, "retain": False, "encoding": "utf8", "payload": "x", "history": True},
    {"type": "published", "id": 3},
    {"type": "pong", "id": 4},
    {"type": "pong"},
    {"type": "error", "id": 1, "code": "invalid", "message": "filter a/#/b: '#' must be the last level"},
    {"type": "error", "code": "unavailable", "message": "broker disconnected"},
]

SERVER_INVALID = [
    {"type": "welcome", "epoch": "zz", "seq": 0, "server": "tidegate", "version": "0.1.0", "max_message_bytes": 65536},
    {"type": "welcome", "epoch": "ab", "seq": -1, "server": "tidegate", "version": "0.1.0", "max_message_bytes": 65536},
    {"type": "welcome", "epoch": "ab", "seq": 0, "server": "tidegate", "version": "0.1", "max_message_bytes": 65536},
    {"type": "welcome", "seq": 0, "server": "tidegate", "version": "0.1.0", "max_message_bytes": 65536},
    {"type": "subscribed", "id": 1, "filter": "a"},
    {"type": "subscribed", "filter": "a", "recovered": False, "extra": 1},
    {"type": "subscribed", "filter": "h/#", "recovered": True, "epoch": "4b99", "history_count": 3, "truncated": False},
    {"type": "subscribed", "filter": "h/#", "recovered": True, "epoch": "4b99", "history_count": 0, "truncated": False, "first_seq": 1},
    {"type": "subscribed", "filter": "h/#", "recovered": True, "history_count": 0},
    {"type": "subscribed", "filter": "h/#", "recovered": True, "epoch": "4b99"},
    {"type": "message", "topic": "a/b", "seq": -1, "ts": 1, "qos": 0, "retain": False, "encoding": "json", "payload": 1},
    {"type": "message", "topic": "a/b", "seq": 1.5, "ts": 1, "qos": 0, "retain": False, "encoding": "json", "payload": 1},
    {"type": "message", "topic": "a/+", "seq": 1, "ts": 1, "qos": 0, "retain": False, "encoding": "json", "payload": 1},
    {"type": "message", "topic": "a/b", "seq": 1, "ts": 1, "qos": 3, "retain": False, "encoding": "json", "payload": 1},
    {"type": "message", "topic": "a/b", "seq": 1, "ts": 1, "qos": 0, "retain": False, "encoding": "hex", "payload": "00"},
    {"type": "message", "topic": "a/b", "seq": 1, "ts": 1, "qos": 0, "retain": False, "encoding": "utf8", "payload": 5},
    {"type": "message", "topic": "a/b", "seq": 1, "ts": 1, "qos": 0, "retain": False, "encoding": "base64", "payload": "not base64!"},
    {"type": "message", "topic": "a/b", "seq": 1, "ts": 1, "qos": 0, "retain": False, "encoding": "json"},
    {"type": "message", "topic": "a/b", "seq": 1, "ts": 1, "qos": 0, "retain": False, "encoding": "json", "payload": 1, "history": False},
    {"type": "message", "topic": "a/b", "seq": 1, "ts": 1, "qos": 0, "retain": False, "encoding": "json", "payload": 1, "x": 1},
    {"type": "published", "id": 3, "extra": True},
    {"type": "error", "id": 1, "code": "bad", "message": "x"},
    {"type": "error", "id": 1, "code": "invalid"},
    {"type": "ping", "id": 1},
    {"type": "welcome"},
]


@pytest.mark.parametrize("message", SERVER_VALID, ids=lambda m: json.dumps(m))
def test_server_schema_accepts(message):
    assert errors_of("ws/server.json", message) == []
    assert errors_of(f"ws/server/{message['type']}.json", message) == []


@pytest.mark.parametrize("message", SERVER_INVALID, ids=lambda m: json.dumps(m))
def test_server_schema_rejects(message):
    assert errors_of("ws/server.json", message) != []


READYZ_VALID = [
    {"ready": True, "broker": "connected"},
    {"ready": False, "broker": "disconnected"},
    {"ready": True, "broker": "connected", "store": "ok"},
    {"ready": False, "broker": "connected", "store": "degraded"},
    {"ready": False, "broker": "disconnected", "store": "ok"},
    {"ready": False, "broker": "disconnected", "store": "degraded"},
]

READYZ_INVALID = [
    {"ready": True, "broker": "disconnected"},
    {"ready": False, "broker": "connected"},
    {"ready": False, "broker": "connected", "store": "ok"},
    {"ready": True, "broker": "connected", "store": "degraded"},
    {"ready": True, "broker": "connected", "store": "broken"},
    {"ready": True},
    {"ready": True, "broker": "connected", "x": 1},
]


@pytest.mark.parametrize("body", READYZ_VALID, ids=lambda b: json.dumps(b))
def test_readyz_schema_accepts(body):
    assert errors_of("readyz.json", body) == []


@pytest.mark.parametrize("body", READYZ_INVALID, ids=lambda b: json.dumps(b))
def test_readyz_schema_rejects(body):
    assert errors_of("readyz.json", body) != []


GOOD_CONFIG = {
    "mqtt_url": "tcp://127.0.0.1:1883",
    "mqtt_client_id": "tidegate",
    "subscribe": ["#"],
    "publish_allow": [],
    "listen": "127.0.0.1:8080",
    "log_level": "info",
    "max_message_bytes": 65536,
    "send_queue_bytes": 1048576,
    "ws_ping_interval": 20,
    "ws_idle_timeout": 60,
}


def test_config_schema_accepts_defaults():
    assert errors_of("config.schema.json", GOOD_CONFIG) == []
    assert errors_of("config.schema.json", {}) == []
    assert errors_of("config.schema.json", {"listen": "[::1]:9000", "mqtt_url": "mqtt://broker.internal:1883"}) == []
    assert errors_of("config.schema.json", {"window": "15m", "durability": "batched", "db": "/var/lib/tidegate/window.db"}) == []


@pytest.mark.parametrize(
    "override",
    [
        {"mqtt_url": "127.0.0.1:1883"},
        {"mqtt_url": "http://127.0.0.1:1883"},
        {"mqtt_qos": 3},
        {"mqtt_keepalive": 4},
        {"max_connections": 0},
        {"subscribe": ["a/#/b"]},
        {"publish_allow": ["a+"]},
        {"max_message_bytes": 255},
        {"send_queue_bytes": 4095},
        {"ws_idle_timeout": 1},
        {"durability": "sometimes"},
        {"window": "1w"},
        {"window": -1},
        {"history_max_messages": 0},
        {"db": ""},
        {"mqtt_url": 1883},
        {"mqtt_client_id": ""},
        {"subscribe": "#"},
        {"subscribe": [1]},
        {"publish_allow": [""]},
        {"listen": "nope"},
        {"listen": "127.0.0.1"},
        {"log_level": "loud"},
        {"max_message_bytes": -1},
        {"max_message_bytes": 0},
        {"max_message_bytes": "big"},
        {"max_message_bytes": 1.5},
        {"send_queue_bytes": 0},
        {"ws_ping_interval": -1},
        {"ws_idle_timeout": "60"},
        {"colour": "blue"},
    ],
    ids=lambda o: json.dumps(o),
)
def test_config_schema_rejects(override):
    assert errors_of("config.schema.json", {**GOOD_CONFIG, **override}) != []


def test_frame_validator_fails_bad_frames():
    """The helper every WebSocket client uses fails the test on a schema violation or non-JSON text."""
    parse_server_text('{"type":"pong","id":1}')
    with pytest.raises(pytest.fail.Exception, match="violates"):
        parse_server_text('{"type":"pong","id":1,"extra":true}')
    with pytest.raises(pytest.fail.Exception, match="not JSON"):
        parse_server_text('{"type":"pong"')
