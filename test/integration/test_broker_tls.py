"""TLS to the broker: ssl:// URLs verified against a CA the test makes."""

import subprocess
import time

import pytest

from support import (MOSQUITTO, TIDEGATE_BIN, WsClient, clean_env, free_port, http_get,
                     run, wait_for_port)

WAIT_S = 15.0


def make_ca_and_server_cert(folder):
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Other",
            "-keyout", "other.key", "-out", "other.pem")


@pytest.fixture
def tls_broker(tmp_path):
    make_ca_and_server_cert(tmp_path)
    port = free_port()
    conf = tmp_path / "mosquitto-tls.conf"
    # Started as root, Mosquitto would switch to its own user, which cannot
    # read the test's private folder; "user root" keeps it as it was started.
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"cafile {tmp_path / 'ca.pem'}\ncertfile {tmp_path / 'server.pem'}\n"
                    f"keyfile {tmp_path / 'server.key'}\n")
    log = open(tmp_path / "mosquitto-tls.log", "wb")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    assert wait_for_port(port, proc), (tmp_path / "mosquitto-tls.log").read_text()
    yield port
    proc.terminate()
    proc.wait(timeout=WAIT_S)


def start_gateway(tmp_path, broker_port, ca_file):
    port = free_port()
    log_path = tmp_path / f"tidegate-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(TIDEGATE_BIN), "--mqtt-url", f"ssl://127.0.0.1:{broker_port}",
                             "--mqtt-ca-file", str(ca_file), "--listen", f"127.0.0.1:{port}",
                             "--db", str(tmp_path / f"{port}.db"),
                             "--mqtt-client-id", f"tls-{port}"],
                            stdout=log, stderr=log, env=clean_env(None), cwd=tmp_path)
    log.close()
    assert wait_for_port(port, proc)
    return proc, port, log_path


def wait_ready(port, expected):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status, _, _ = http_get(port, "/readyz")
        if status == expected:
            return True
        time.sleep(0.1)
    return False


def test_ssl_url_verified_with_ca(tls_broker, tmp_path):
    proc, port, log_path = start_gateway(tmp_path, tls_broker, tmp_path / "ca.pem")
    try:
        assert wait_ready(port, 200), log_path.read_text()

        async def body():
            client = await WsClient.connect(f"ws://127.0.0.1:{port}/ws")
            await client.send({"type": "subscribe", "id": 1, "filter": "secure/#"})
            await client.expect("subscribed")
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(tls_broker), "--cafile",
                            str(tmp_path / "ca.pem"), "-q", "1", "-t", "secure/x", "-m", "over tls"],
                           check=True, timeout=WAIT_S)
            message = await client.expect("message")
            assert (message["topic"], message["payload"]) == ("secure/x", "over tls")

        run(body())
        assert "connected to ssl://" in log_path.read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=WAIT_S) == 0


def test_untrusted_broker_certificate_not_ready(tls_broker, tmp_path):
    proc, port, log_path = start_gateway(tmp_path, tls_broker, tmp_path / "other.pem")
    try:
        assert wait_ready(port, 503)
        time.sleep(1.0)
        status, _, body = http_get(port, "/readyz")
        assert status == 503
        assert b'"broker":"disconnected"' in body
        assert "cannot connect to ssl://" in log_path.read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=WAIT_S) == 0
