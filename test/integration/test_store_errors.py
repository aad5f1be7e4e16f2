"""The window store failing at run time: live delivery goes on, readiness and
metrics report the store as degraded, and it recovers by itself."""

import sqlite3
import time

from support import PahoClient, WsClient, run

WAIT_S = 15


def wait_for(predicate, what, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_locked_store_degrades_and_recovers(gateway_factory, broker, tmp_path):
    db_path = tmp_path / "locked.db"
    gateway = gateway_factory("--db", str(db_path))
    publisher = PahoClient(broker.port)

    # Another process takes the write lock, as a backup tool might.
    blocker = sqlite3.connect(db_path, timeout=1, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        await client.send({"type": "subscribe", "id": 1, "filter": "locked/#"})
        await client.expect("subscribed")

        publisher.publish("locked/a", b"while-locked", qos=1)
        message = await client.expect("message")
        assert message["topic"] == "locked/a"
        assert message["payload"] == "while-locked"

        wait_for(lambda: gateway.metrics()["tidegate_store_healthy"] == 0, "store_healthy 0")
        status, _, body_bytes = gateway.get("/readyz")
        assert status == 503
        assert b'"store":"degraded"' in body_bytes
        metrics = gateway.metrics()
        assert metrics["tidegate_store_errors_total"] >= 1
        assert metrics["tidegate_messages_not_stored_total"] >= 1

        blocker.execute("ROLLBACK")
        blocker.close()

        publisher.publish("locked/b", b"after-unlock", qos=1)
        message = await client.expect("message")
        assert message["payload"] == "after-unlock"
        wait_for(lambda: gateway.metrics()["tidegate_store_healthy"] == 1, "store_healthy 1")
        status, _, _ = gateway.get("/readyz")
        assert status == 200

    try:
        run(body())
    finally:
        publisher.close()

    check = sqlite3.connect(db_path)
    payloads = [row[0] for row in check.execute(
        "SELECT m.payload FROM messages m JOIN topics t ON t.id = m.topic_id "
        "WHERE t.name LIKE 'locked/%' ORDER BY m.seq")]
    check.close()
    assert payloads == [b"after-unlock"]
