"""Server-Sent Events on /api/v1/stream: live events, resume with
Last-Event-ID, failed recovery reported explicitly, bad cursors, and clients
that go away."""

import http.client
import json
import socket
import time

from support import PahoClient, http_get, validate_server_message

WAIT_S = 10.0


class EventStream:
    """A minimal SSE client on http.client: yields (id, data object) per event."""

    def __init__(self, port, path, last_event_id=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", path, headers=headers)
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        assert self.response.getheader("Content-Type") == "text/event-stream"

    def next_event(self):
        event_id = None
        data_lines = []
        while True:
            line = self.response.fp.readline()
            assert line, "stream ended before the next event"
            line = line.decode().rstrip("\n")
            if line == "":
                if data_lines:
                    obj = json.loads("\n".join(data_lines))
                    validate_server_message(obj)
                    return event_id, obj
                continue
            if line.startswith(":") or line.startswith("retry:"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                event_id = value
            elif field == "data":
                data_lines.append(value)

    def next_of(self, kind):
        event_id, obj = self.next_event()
        assert obj["type"] == kind, obj
        return event_id, obj

    def close(self):
        self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


def wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_stream_live_events_carry_cursor(gateway, broker):
    publisher = PahoClient(broker.port)
    stream = EventStream(gateway.port, "/api/v1/stream?filter=sse/%2B/t")
    try:
        _, welcome = stream.next_of("welcome")
        _, subscribed = stream.next_of("subscribed")
        assert subscribed["filter"] == "sse/+/t"
        assert subscribed["recovered"] is True

        publisher.publish("sse/other/x", b"not matched", qos=1)
        publisher.publish("sse/1/t", b'{"v":1}', qos=1)
        publisher.publish("sse/2/t", b"line one\nline two", qos=1)
        first_id, first = stream.next_of("message")
        second_id, second = stream.next_of("message")
        assert first["topic"] == "sse/1/t"
        assert first["payload"] == {"v": 1}
        assert second["payload"] == "line one\nline two"
        assert first_id == f"{welcome['epoch']}:{first['seq']}"
        assert second_id == f"{welcome['epoch']}:{second['seq']}"
        assert second["seq"] > first["seq"]
    finally:
        stream.close()
        publisher.close()


def test_stream_resumes_with_last_event_id(gateway, broker):
    publisher = PahoClient(broker.port)
    stream = EventStream(gateway.port, "/api/v1/stream?filter=resume/%23")
    stream.next_of("welcome")
    stream.next_of("subscribed")
    for i in range(3):
        publisher.publish("resume/a", f"before-{i}".encode(), qos=1)
    seen = [stream.next_of("message") for _ in range(3)]
    last_id = seen[-1][0]
    stream.close()

    for i in range(4):
        publisher.publish("resume/a", f"missed-{i}".encode(), qos=1)

    resumed = EventStream(gateway.port, "/api/v1/stream?filter=resume/%23", last_event_id=last_id)
    try:
        resumed.next_of("welcome")
        _, subscribed = resumed.next_of("subscribed")
        assert subscribed["recovered"] is True
        assert subscribed["history_count"] == 4
        history = [resumed.next_of("message")[1] for _ in range(4)]
        assert [m["payload"] for m in history] == [f"missed-{i}" for i in range(4)]
        assert all(m["history"] is True for m in history)
        assert history[0]["seq"] > seen[-1][1]["seq"]

        publisher.publish("resume/a", b"live-after", qos=1)
        _, live = resumed.next_of("message")
        assert live["payload"] == "live-after"
        assert "history" not in live
        assert live["seq"] > history[-1]["seq"]
    finally:
        resumed.close()
        publisher.close()


def test_stream_cursor_from_query_parameter(gateway, broker):
    publisher = PahoClient(broker.port)
    publisher.publish("query/a", b"one", qos=1)
    publisher.publish("query/a", b"two", qos=1)
    status, _, body = http_get(gateway.port, "/api/v1/history?filter=query/a&limit=2")
    assert status == 200
    history = json.loads(body)
    first = history["messages"][0]
    cursor = f"{history['epoch']}:{first['seq']}"

    stream = EventStream(gateway.port, f"/api/v1/stream?filter=query/a&last_event_id={cursor}")
    try:
        stream.next_of("welcome")
        _, subscribed = stream.next_of("subscribed")
        assert subscribed["recovered"] is True
        assert subscribed["history_count"] == 1
        _, message = stream.next_of("message")
        assert message["payload"] == "two"
    finally:
        stream.close()
        publisher.close()


def test_stream_unknown_epoch_says_not_recovered(gateway, broker):
    stream = EventStream(gateway.port, "/api/v1/stream?filter=x/%23",
                         last_event_id="00000000000000000000000000000000:5")
    try:
        _, welcome = stream.next_of("welcome")
        _, subscribed = stream.next_of("subscribed")
        assert subscribed["recovered"] is False
        assert subscribed["epoch"] == welcome["epoch"]
    finally:
        stream.close()


def test_stream_rejects_bad_cursor_and_filter(gateway):
    for path, headers, needle in (
        ("/api/v1/stream?filter=a/%23", {"Last-Event-ID": "not-a-cursor"}, b"not-a-cursor"),
        ("/api/v1/stream?last_event_id=abc:-1", {}, b"abc:-1"),
        ("/api/v1/stream?filter=a/%23/b", {}, b"last level"),
    ):
        conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=WAIT_S)
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 400, (path, body)
        assert json.loads(body)["error"] == "invalid"
        assert needle in body, (path, body)


def test_stream_client_gone_is_freed(gateway, broker):
    publisher = PahoClient(broker.port)
    stream = EventStream(gateway.port, "/api/v1/stream?filter=gone/%23")
    stream.next_of("welcome")
    stream.next_of("subscribed")
    wait_for(lambda: gateway.metrics()["tidegate_sse_streams"] == 1, "one open stream")
    stream.close()

    # The next writes to the closed socket fail and free the stream.
    def gone():
        publisher.publish("gone/a", b"x" * 2048, qos=1)
        return gateway.metrics()["tidegate_sse_streams"] == 0

    try:
        wait_for(gone, "the stream to be freed")
    finally:
        publisher.close()
