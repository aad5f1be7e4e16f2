"""History replay from the message window on subscribe."""

from support import PahoClient, WsClient, run


async def publish_and_observe(gateway, broker, topics):
    """Publish one message per topic and return them as a live subscriber to h/# saw them.

    A later history request relies on the gateway storing a message before
    it delivers it live, which the default durability (commit) should give.
    """
    observer = await WsClient.connect(gateway.ws_url)
    await observer.subscribe("h/#")
    publisher = PahoClient(broker.port)
    try:
        for index, topic in enumerate(topics):
            publisher.publish(topic, f"value {index}".encode())
    finally:
        publisher.close()
    seen = [await observer.expect("message") for _ in topics]
    assert [m["topic"] for m in seen] == list(topics)
    await observer.close()
    return seen


def live_view(msg):
    return {k: v for k, v in msg.items() if k != "history"}


def test_history_last_n_then_live(gateway, broker):
    async def body():
        seen = await publish_and_observe(gateway, broker, [f"h/{i}" for i in range(5)])

        client = await WsClient.connect(gateway.ws_url)
        reply = await client.subscribe("h/#", id=1, history={"last": 3})
        assert reply["recovered"] is True
        assert reply["history_count"] == 3
        assert reply["truncated"] is False
        assert reply["first_seq"] == seen[2]["seq"]
        assert reply["epoch"] == client.welcome["epoch"]
        replayed = [await client.expect("message") for _ in range(3)]
        for msg in replayed:
            assert msg.get("history") is True, msg
        assert [live_view(m) for m in replayed] == seen[2:]

        publisher = PahoClient(broker.port)
        try:
            publisher.publish("h/live", b"live")
        finally:
            publisher.close()
        live = await client.expect("message")
        assert live["topic"] == "h/live"
        assert "history" not in live
        assert live["seq"] > seen[-1]["seq"]

    run(body())


def test_history_only_matching_topics(gateway, broker):
    async def body():
        seen = await publish_and_observe(gateway, broker, ["h/a/1", "h/b/1", "h/a/2", "h/b/2"])

        client = await WsClient.connect(gateway.ws_url)
        reply = await client.subscribe("h/a/+", history={"last": 10})
        assert reply["recovered"] is True
        replayed = [await client.expect("message") for _ in range(2)]
        assert [live_view(m) for m in replayed] == [seen[0], seen[2]]
        await client.ping("after-history")

    run(body())


def test_history_since_seq_resumes(gateway, broker):
    async def body():
        seen = await publish_and_observe(gateway, broker, [f"h/{i}" for i in range(5)])

        client = await WsClient.connect(gateway.ws_url)
        cursor = {"epoch": client.welcome["epoch"], "seq": seen[1]["seq"]}
        reply = await client.subscribe("h/#", id="resume", history={"since": cursor})
        assert reply["recovered"] is True
        replayed = [await client.expect("message") for _ in range(3)]
        assert [live_view(m) for m in replayed] == seen[2:]
        await client.ping("after-history")

    run(body())


def test_history_since_other_epoch_not_recovered(gateway, broker):
    async def body():
        await publish_and_observe(gateway, broker, ["h/1"])

        client = await WsClient.connect(gateway.ws_url)
        other_epoch = "0" if client.welcome["epoch"] != "0" else "1"
        reply = await client.subscribe("h/#", history={"since": {"epoch": other_epoch, "seq": 1}})
        assert reply["recovered"] is False

    run(body())


def test_history_cut_at_max_messages(gateway_factory, broker):
    gateway = gateway_factory("--history-max-messages", "2")

    async def body():
        seen = await publish_and_observe(gateway, broker, [f"h/{i}" for i in range(4)])

        client = await WsClient.connect(gateway.ws_url)
        reply = await client.subscribe("h/#", history={"last": 5})
        assert reply["recovered"] is False
        assert reply["truncated"] is True
        assert reply["history_count"] == 2
        replayed = [await client.expect("message") for _ in range(2)]
        assert [live_view(m) for m in replayed] == seen[2:]
        await client.ping("after-history")

    run(body())
