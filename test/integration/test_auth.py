"""Access control: JWTs (HS256, RS256, ES256), API keys, anonymous clients,
topic permissions, token expiry, Origin checks, limits and TLS."""

import asyncio
import hashlib
import http.client
import json
import ssl
import subprocess
import time

import jwt
import pytest
import websockets

from support import (
    TIDEGATE_BIN,
    PahoClient,
    WsClient,
    clean_env,
    close_code_of,
    free_port,
    http_get,
    run,
)

SECRET = "s3cret-for-tests-0123456789abcdef0123456789"
WAIT_S = 10.0


def make_token(claims=None, key=SECRET, algorithm="HS256", **overrides):
    now = int(time.time())
    body = {"sub": "alice", "exp": now + 300, "subscribe": ["site/a/#"], "publish": ["chat/#"]}
    body.update(claims or {})
    body.update(overrides)
    return jwt.encode(body, key, algorithm=algorithm)


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "jwt-secret"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
def hs_gateway(gateway_factory, secret_file):
    return gateway_factory("--auth-jwt-algorithm", "HS256", "--auth-jwt-key-file", str(secret_file),
                           "--auth-jwt-leeway", "0", sync=False)


async def connect(gateway, token=None, **kwargs):
    url = gateway.ws_url + (f"?access_token={token}" if token else "")
    return await WsClient.connect(url, **kwargs)


def test_token_permissions_on_subscribe_and_publish(hs_gateway, broker):
    token = make_token()
    publisher = PahoClient(broker.port)

    async def body():
        client = await connect(hs_gateway, token)
        await client.send({"type": "subscribe", "id": 1, "filter": "site/a/+/temp"})
        assert (await client.expect("subscribed"))["filter"] == "site/a/+/temp"
        for i, denied in enumerate(["site/#", "site/b/x", "#", "$SYS/#"]):
            await client.send({"type": "subscribe", "id": 10 + i, "filter": denied})
            error = await client.expect("error")
            assert (error["id"], error["code"]) == (10 + i, "forbidden"), error
            assert "alice" in error["message"]

        publisher.publish("site/b/1/temp", b"not for alice", qos=1)
        publisher.publish("site/a/1/temp", b"for alice", qos=1)
        message = await client.expect("message")
        assert (message["topic"], message["payload"]) == ("site/a/1/temp", "for alice")

        await client.send({"type": "publish", "id": 2, "topic": "chat/x", "payload": "hi"})
        await client.expect("published")
        await client.send({"type": "publish", "id": 3, "topic": "site/a/1/temp", "payload": "x"})
        error = await client.expect("error")
        assert (error["id"], error["code"]) == (3, "forbidden")

    try:
        run(body())
    finally:
        publisher.close()
    assert token not in hs_gateway.log()


@pytest.mark.parametrize("case", [
    "bad_signature", "wrong_algorithm", "expired", "not_yet_valid", "float_exp", "string_exp",
    "missing_exp", "non_string_filter", "missing_sub",
])
def test_bad_tokens_rejected(hs_gateway, case):
    now = int(time.time())
    tokens = {
        "bad_signature": make_token(key="another-secret-0123456789abcdef0123456789"),
        "wrong_algorithm": make_token(algorithm="HS384"),
        "expired": make_token(exp=now - 60),
        "not_yet_valid": make_token(nbf=now + 600),
        "float_exp": make_token(exp=now + 300.5),
        "string_exp": make_token(exp=str(now + 300)),
        "missing_exp": jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),
        "non_string_filter": make_token(subscribe=["site/#", 7]),
        "missing_sub": jwt.encode({"exp": now + 300}, SECRET, algorithm="HS256"),
    }
    token = tokens[case]

    async def body():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as info:
            await websockets.connect(hs_gateway.ws_url + f"?access_token={token}",
                                     open_timeout=WAIT_S)
        assert info.value.status_code == 401

    run(body())
    status, _, response = http_get(hs_gateway.port, "/api/v1/history?filter=site/a/%23",
                                   headers={"Authorization": f"Bearer {token}"})
    assert status == 401
    assert json.loads(response)["error"] == "forbidden"
    assert token not in hs_gateway.log()
    assert token not in response.decode()
    assert hs_gateway.metrics()["tidegate_auth_failures_total"] >= 2


def test_auth_message_after_connect(hs_gateway):
    async def body():
        client = await connect(hs_gateway)
        await client.send({"type": "subscribe", "id": 1, "filter": "site/a/#"})
        error = await client.expect("error")
        assert error["code"] == "forbidden"
        assert "authentication required" in error["message"]
        await client.send({"type": "ping", "id": 2})
        await client.expect("pong")

        await client.send({"type": "auth", "id": 3, "token": "not-a-token"})
        assert (await client.expect("error"))["code"] == "forbidden"
        await client.send({"type": "auth", "id": 4, "token": make_token()})
        reply = await client.expect("authenticated")
        assert reply["sub"] == "alice"
        await client.send({"type": "subscribe", "id": 5, "filter": "site/a/#"})
        await client.expect("subscribed")

    run(body())


def test_unauthenticated_client_closed_after_timeout(hs_gateway):
    async def body():
        client = await connect(hs_gateway)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await asyncio.wait_for(client.ws.recv(), timeout=20)
            await asyncio.wait_for(client.ws.recv(), timeout=20)
        assert close_code_of(info.value) == 1008

    run(body())


def test_token_expiry_closes_and_refresh_extends(hs_gateway):
    async def body():
        short = await connect(hs_gateway, make_token(exp=int(time.time()) + 2))
        refreshed = await connect(hs_gateway, make_token(exp=int(time.time()) + 2))
        await refreshed.send({"type": "auth", "id": 1, "token": make_token()})
        await refreshed.expect("authenticated")

        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await asyncio.wait_for(short.ws.recv(), timeout=15)
        assert close_code_of(info.value) == 4001
        assert "token expired" in info.value.rcvd.reason

        await refreshed.send({"type": "ping", "id": 2})
        await refreshed.expect("pong")

    run(body())


def test_narrower_token_drops_subscriptions(hs_gateway):
    async def body():
        client = await connect(hs_gateway, make_token(subscribe=["site/#"]))
        await client.send({"type": "subscribe", "id": 1, "filter": "site/b/#"})
        await client.expect("subscribed")
        await client.send({"type": "auth", "id": 2, "token": make_token(subscribe=["site/a/#"])})
        error = await client.expect("error")
        assert error["code"] == "forbidden"
        assert "site/b/#" in error["message"]
        await client.expect("authenticated")

    run(body())


def test_short_secret_refused_at_start(tmp_path, broker):
    short = tmp_path / "short"
    short.write_text("too-short")
    result = subprocess.run(
        [str(TIDEGATE_BIN), "--mqtt-url", broker.url, "--listen", f"127.0.0.1:{free_port()}",
         "--db", str(tmp_path / "t.db"), "--auth-jwt-algorithm", "HS256",
         "--auth-jwt-key-file", str(short)],
        capture_output=True, text=True, timeout=WAIT_S, env=clean_env(None), cwd=tmp_path)
    assert result.returncode != 0
    assert "at least 32" in result.stderr
    assert "too-short" not in result.stderr


def test_non_loopback_without_auth_refused(tmp_path):
    config = tmp_path / "remote.json"
    config.write_text(json.dumps({"listen": "0.0.0.0:8443"}))
    result = subprocess.run([str(TIDEGATE_BIN), "--check-config", str(config)],
                            capture_output=True, text=True, timeout=WAIT_S, env=clean_env(None))
    assert result.returncode == 2
    assert "without authentication" in result.stderr
    assert "--allow-anonymous" in result.stderr


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_tokens(gateway_factory, tmp_path, algorithm):
    private = tmp_path / "private.pem"
    public = tmp_path / "public.pem"
    if algorithm == "RS256":
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", str(private)], check=True, capture_output=True)
    else:
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", str(private)], check=True,
                       capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)],
                   check=True, capture_output=True)
    gateway = gateway_factory("--auth-jwt-algorithm", algorithm, "--auth-jwt-key-file", str(public),
                              sync=False)
    good = make_token(key=private.read_text(), algorithm=algorithm)
    # An HS256 token signed with the public key text must not pass as RS/ES.
    forged = make_token(key=SECRET, algorithm="HS256")

    async def body():
        client = await connect(gateway, good)
        await client.send({"type": "subscribe", "id": 1, "filter": "site/a/x"})
        await client.expect("subscribed")
        with pytest.raises(websockets.exceptions.InvalidStatusCode):
            await websockets.connect(gateway.ws_url + f"?access_token={forged}",
                                     open_timeout=WAIT_S)

    run(body())


def test_api_keys_and_filtered_listing(gateway_factory, broker, tmp_path):
    key = "machine-key-0123456789"
    config = tmp_path / "tidegate.json"
    config.write_text(json.dumps({"api_keys": [{
        "name": "ingest-bot", "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "subscribe": ["lab/#"], "publish": []}]}))
    gateway = gateway_factory("--config", str(config), sync=False)
    publisher = PahoClient(broker.port)
    publisher.publish("lab/1", b"one", qos=1)
    publisher.publish("office/1", b"two", qos=1)
    publisher.close()
    headers = {"Authorization": f"Bearer {key}"}

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status, _, body = http_get(gateway.port, "/api/v1/topics", headers=headers)
        if status == 200 and json.loads(body)["count"] >= 1:
            break
        time.sleep(0.1)
    topics = [m["topic"] for m in json.loads(body)["topics"]]
    assert topics == ["lab/1"]

    status, _, _ = http_get(gateway.port, "/api/v1/history?filter=lab/%23", headers=headers)
    assert status == 200
    status, _, body = http_get(gateway.port, "/api/v1/history?filter=office/%23", headers=headers)
    assert status == 403
    assert json.loads(body)["error"] == "forbidden"
    status, _, _ = http_get(gateway.port, "/api/v1/topics",
                            headers={"Authorization": "Bearer wrong-key"})
    assert status == 401
    status, _, _ = http_get(gateway.port, "/api/v1/topics")
    assert status == 401
    assert key not in gateway.log()
    printed = subprocess.run([str(TIDEGATE_BIN), "--config", str(config), "--print-config"],
                             capture_output=True, text=True, env=clean_env(None))
    assert json.loads(printed.stdout)["api_keys"] == [{"name": "ingest-bot"}]


def test_origin_checked(gateway_factory):
    gateway = gateway_factory("--allowed-origins", "https://dash.example.com", sync=False)
    plain = gateway_factory(sync=False)

    async def body():
        client = await WsClient.connect(gateway.ws_url, origin="https://dash.example.com")
        await client.send({"type": "ping", "id": 1})
        await client.expect("pong")
        for target, origin in ((gateway, "https://evil.example.com"),
                               (plain, "http://evil.example.com"),
                               (plain, f"http://127.0.0.1:{gateway.port}")):
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as info:
                await websockets.connect(target.ws_url, origin=origin, open_timeout=WAIT_S)
            assert info.value.status_code == 403
        same = await WsClient.connect(plain.ws_url, origin=f"http://127.0.0.1:{plain.port}")
        await same.send({"type": "ping", "id": 2})
        await same.expect("pong")

    run(body())


def test_limits(gateway_factory, broker):
    gateway = gateway_factory("--max-subscriptions-per-client", "2", "--publish-rate", "1",
                              "--max-connections-per-address", "3", "--max-sse-streams", "1",
                              "--publish-allow", "chat/#")

    async def body():
        client = await WsClient.connect(gateway.ws_url)
        for i, topic_filter in enumerate(["a/#", "b/#"]):
            await client.send({"type": "subscribe", "id": i, "filter": topic_filter})
            await client.expect("subscribed")
        await client.send({"type": "subscribe", "id": 3, "filter": "c/#"})
        error = await client.expect("error")
        assert error["code"] == "limit"
        assert "max_subscriptions_per_client" in error["message"]

        codes = []
        for i in range(4):
            await client.send({"type": "publish", "id": 10 + i, "topic": "chat/x", "payload": i,
                               "qos": 0})
            reply = await client.recv()
            codes.append(reply.get("code", reply["type"]))
        assert codes.count("limit") >= 1, codes
        assert codes[0] == "published"

        # The fixture's probe client is gone; this one plus two more fit.
        extra = [await WsClient.connect(gateway.ws_url) for _ in range(2)]
        over = await WsClient.connect(gateway.ws_url)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            for _ in range(3):
                await asyncio.wait_for(over.ws.recv(), timeout=WAIT_S)
        assert close_code_of(info.value) == 1013
        for other in extra:
            await other.send({"type": "ping", "id": 1})
            await other.expect("pong")

    run(body())

    first = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=WAIT_S)
    first.request("GET", "/api/v1/stream?filter=a/%23")
    assert first.getresponse().status == 200
    deadline = time.monotonic() + WAIT_S
    while gateway.metrics()["tidegate_sse_streams"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, _, body = http_get(gateway.port, "/api/v1/stream?filter=b/%23")
    assert status == 503
    assert json.loads(body)["error"] == "limit"
    first.close()


def test_tls_https_and_wss(broker, tmp_path):
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    log = open(tmp_path / "tls.log", "wb")
    proc = subprocess.Popen([str(TIDEGATE_BIN), "--mqtt-url", broker.url, "--listen",
                             f"127.0.0.1:{port}", "--db", str(tmp_path / "t.db"),
                             "--tls-cert", str(cert), "--tls-key", str(key)],
                            stdout=log, stderr=log, env=clean_env(None), cwd=tmp_path)
    log.close()
    context = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=WAIT_S,
                                                   context=context)
                conn.request("GET", "/healthz")
                assert conn.getresponse().read() == b"ok\n"
                conn.close()
                break
            except (ConnectionRefusedError, ssl.SSLError, OSError):
                assert time.monotonic() < deadline, (tmp_path / "tls.log").read_text()
                time.sleep(0.1)

        # Plain HTTP on the TLS port gets no HTTP response.
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/healthz")
            plain.getresponse()
        plain.close()

        async def body():
            ws = await websockets.connect(f"wss://127.0.0.1:{port}/ws", ssl=context,
                                          open_timeout=WAIT_S)
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome"
            await ws.close()

        run(body())
    finally:
        proc.terminate()
        assert proc.wait(timeout=WAIT_S) == 0


def test_oversized_headers_get_431(gateway_factory):
    gateway = gateway_factory(sync=False)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=WAIT_S)
    conn.request("GET", "/healthz", headers={"X-Filler": "a" * 100000})
    assert conn.getresponse().status == 431
    conn.close()
    status, _, _ = http_get(gateway.port, "/healthz")
    assert status == 200


def test_total_connection_limit(gateway_factory):
    gateway = gateway_factory("--max-connections", "2", sync=False)

    async def body():
        first = await WsClient.connect(gateway.ws_url)
        second = await WsClient.connect(gateway.ws_url)
        third = await WsClient.connect(gateway.ws_url)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            for _ in range(3):
                await asyncio.wait_for(third.ws.recv(), timeout=WAIT_S)
        assert close_code_of(info.value) == 1013
        assert "full" in info.value.rcvd.reason
        for client in (first, second):
            await client.send({"type": "ping", "id": 1})
            await client.expect("pong")

    run(body())
    assert gateway.metrics()["tidegate_limit_rejections_total"] >= 1
