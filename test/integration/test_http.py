"""HTTP endpoints: health, readiness, metrics and the built-in assets."""

from support import PahoClient, WsClient, readyz_summary, run


def test_healthz_ok(gateway):
    status, _, body = gateway.get("/healthz")
    assert status == 200
    assert body.strip() == b"ok"


def test_readyz_connected(gateway):
    body = gateway.wait_readyz(200)
    assert readyz_summary(body) == (True, "connected", "ok")


def test_readyz_without_broker(gateway_factory, broker):
    broker.stop()
    gateway = gateway_factory(ready=False)
    body = gateway.wait_readyz(503)
    assert readyz_summary(body) == (False, "disconnected", "ok")


def test_dashboard_and_client_module(gateway):
    status, headers, body = gateway.get("/")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/html"), headers
    assert b"<html" in body.lower()

    status, headers, body = gateway.get("/tidegate.js")
    assert status == 200
    assert "javascript" in headers.get("content-type", ""), headers
    assert body.strip(), "empty /tidegate.js"


def test_unknown_path_404(gateway):
    status, _, _ = gateway.get("/no-such-page")
    assert status == 404


def test_metrics_count_exactly(gateway, broker):
    """Two clients, three messages: received grows by 3, delivered by 3 + 1."""

    async def body():
        before = gateway.metrics()
        all_topics = await WsClient.connect(gateway.ws_url)
        one_topic = await WsClient.connect(gateway.ws_url)
        await all_topics.subscribe("m/#", id=1)
        await one_topic.subscribe("m/1", id=1)
        publisher = PahoClient(broker.port)
        try:
            for n in (1, 2, 3):
                publisher.publish(f"m/{n}", f"value {n}".encode())
            received_all = [await all_topics.expect("message") for _ in range(3)]
            received_one = await one_topic.expect("message")
        finally:
            publisher.close()
        assert [m["topic"] for m in received_all] == ["m/1", "m/2", "m/3"]
        assert received_one["topic"] == "m/1"

        after = gateway.metrics()
        received = after["tidegate_messages_received_total"] - before["tidegate_messages_received_total"]
        delivered = after["tidegate_messages_delivered_total"] - before["tidegate_messages_delivered_total"]
        assert received == 3
        assert delivered == 4
        assert after["tidegate_clients_connected"] == 2
        assert after["tidegate_broker_connected"] == 1
        assert after["tidegate_slow_client_disconnects_total"] == 0

        await all_topics.close()
        await one_topic.close()
        # The gauge drops once the gateway has processed both closes.
        assert gateway.wait_metric("tidegate_clients_connected", 0) == 0

    run(body())
