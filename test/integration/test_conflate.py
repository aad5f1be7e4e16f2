"""Subscriptions with max_rate: conflated to the latest value per topic."""

from support import PahoClient, WsClient, run


def test_max_rate_ends_on_latest_value(gateway, broker):
    publisher = PahoClient(broker.port)

    async def body():
        slow = await WsClient.connect(gateway.ws_url)
        full = await WsClient.connect(gateway.ws_url)
        await slow.send({"type": "subscribe", "id": 1, "filter": "fast/#", "max_rate": 2})
        await slow.expect("subscribed")
        await full.send({"type": "subscribe", "id": 1, "filter": "fast/#"})
        await full.expect("subscribed")

        for i in range(50):
            publisher.client.publish("fast/a", str(i).encode(), qos=0)
            publisher.client.publish("fast/b", str(100 + i).encode(), qos=0)
        publisher.publish("fast/end", b"end", qos=1)

        # The unconflated client sees all 101 messages, in order.
        received = [await full.expect("message") for _ in range(101)]
        assert [m["payload"] for m in received if m["topic"] == "fast/a"] == list(range(50))

        # The conflated one ends each topic on its latest value, with fewer
        # messages, and per topic in seq order.
        latest = {}
        seqs = {}
        while latest.get("fast/a") != 49 or latest.get("fast/b") != 149 or "fast/end" not in latest:
            message = await slow.expect("message")
            topic = message["topic"]
            assert message["seq"] > seqs.get(topic, 0)
            seqs[topic] = message["seq"]
            latest[topic] = message["payload"]
            counts = latest.setdefault("count", 0)
            latest["count"] = counts + 1
        assert latest["count"] < 101

    try:
        run(body())
    finally:
        publisher.close()


def test_max_rate_must_be_positive(gateway):
    async def body():
        client = await WsClient.connect(gateway.ws_url)
        for bad in (0, -1, "fast", 100000):
            await client.send({"type": "subscribe", "id": 7, "filter": "a/#", "max_rate": bad})
            error = await client.expect("error")
            assert error["code"] == "invalid"
            assert "max_rate" in error["message"]
        await client.send({"type": "ping", "id": 8})
        await client.expect("pong")

    run(body())
