"""HTTP guards: request bodies, methods, and static files from --www."""

import http.client
import json
import socket

from support import http_get

WAIT_S = 10.0


def raw_request(port, text):
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(text.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_large_body_gets_413(gateway):
    status = raw_request(gateway.port, "POST /api/v1/history HTTP/1.1\r\nHost: x\r\n"
                                       "Content-Length: 100000000\r\n\r\n")
    assert status == 413
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=WAIT_S)
    conn.request("POST", "/api/v1/history", body=b"x" * 10)
    response = conn.getresponse()
    assert response.status == 405
    assert json.loads(response.read())["error"] == "invalid"
    conn.close()
    assert http_get(gateway.port, "/healthz")[0] == 200


def test_www_folder_stays_inside(gateway_factory, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>dev copy</h1>")
    (www / ".env").write_text("SECRET=1")
    (tmp_path / "outside.txt").write_text("not served")
    (www / "link.txt").symlink_to(tmp_path / "outside.txt")
    gateway = gateway_factory("--www", str(www), sync=False)

    status, headers, body = http_get(gateway.port, "/")
    assert (status, body) == (200, b"<h1>dev copy</h1>")
    assert headers["content-type"].startswith("text/html")
    for path, expected in (
        ("/%2e%2e/outside.txt", 400),
        ("/..%2foutside.txt", 400),
        ("/.env", 400),
        ("/a\\..\\outside.txt", 400),
        ("/link.txt", 404),
        ("/missing.js", 404),
    ):
        status, _, body = http_get(gateway.port, path)
        assert status == expected, (path, status, body)
        assert b"not served" not in body
        assert b"SECRET" not in body
