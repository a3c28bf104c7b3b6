"""The local stack listens on this machine only, but browsers and other programs run here too:
its helpers open only with its secret, signatures cover the body actually sent, malformed
tokens are refused, and a client that lies about its body cannot hold a thread."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from devstack.gateway import DEV_SECRET_COOKIE, DEV_SECRET_HEADER, make_server
from devstack.local_auth import LOCAL_AUDIENCE, LOCAL_REGION, _b64
from tests.conftest import LOCAL_AUTH, local_gateway
from tests.factories import purchase

SECRET = {DEV_SECRET_HEADER: LOCAL_AUTH.dev_secret}
CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers")


def answer(response) -> tuple[int, Any]:
    return response.status, json.loads(response.body) if response.body else None


# --- the /dev/ helpers ---


@pytest.mark.parametrize("method, path", [("POST", "/dev/token"), ("GET", "/dev/trusted/segments"),
                                          ("DELETE", "/dev/trusted/users/u-1")])
def test_the_dev_helpers_answer_nothing_without_the_stacks_secret(method, path):
    gateway = local_gateway()
    body = json.dumps({"user_id": "u-1"}).encode()

    without = gateway.handle(method, path, {"host": "local"}, body)
    wrong = gateway.handle(method, path, {"host": "local", DEV_SECRET_HEADER: "guessed"}, body)
    wrong_cookie = gateway.handle(method, path, {"host": "local", "cookie": f"{DEV_SECRET_COOKIE}=guessed"}, body)

    assert answer(without)[0] == 401 and "message" in answer(without)[1]
    assert answer(wrong)[0] == answer(wrong_cookie)[0] == 403
    assert b"token" not in without.body + wrong.body + wrong_cookie.body


def test_with_the_secret_header_the_helpers_sign_in_and_call_as_the_backend(api):
    status, body = api.anonymous().json("POST", "/dev/token", {"user_id": "u-1"}, headers=SECRET)
    assert status == 200
    customer = api.anonymous().call("GET", "/users/u-1/segments",
                                    headers={"authorization": f"Bearer {body['token']}"})
    assert customer.status == 200

    events = {"events": [purchase("p-1", user_id="u-1")]}
    assert api.anonymous().json("POST", "/dev/trusted/events", events, headers=SECRET)[0] == 200
    assert api.json("GET", "/users/u-1")[1]["summary"]["purchase_count"] == 1


def test_the_demo_pages_bring_the_cookie_that_opens_the_helpers_to_them_only(api):
    page = api.gateway.handle("GET", "/shop", {"host": "127.0.0.1:3000"}, b"")
    cookie = page.headers["set-cookie"]
    name_value, *attributes = [part.strip() for part in cookie.split(";")]

    assert name_value == f"{DEV_SECRET_COOKIE}={LOCAL_AUTH.dev_secret}"
    assert set(attributes) == {"HttpOnly", "SameSite=Strict", "Path=/dev"}
    own_page = {"host": "127.0.0.1:3000", "origin": "http://127.0.0.1:3000", "cookie": name_value,
                "content-type": "application/json"}
    assert api.gateway.handle("POST", "/dev/token", own_page, b'{"user_id": "u-1"}').status == 200
    assert api.gateway.handle("GET", "/dev/trusted/segments", own_page, b"").status == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1:8080", "null"])
def test_another_origins_page_gets_no_cors_headers_and_no_answer_from_the_helpers(origin):
    gateway = local_gateway(["*"])  # even when every origin may call the API
    visitor = {"host": "127.0.0.1:3000", "origin": origin, "cookie": f"{DEV_SECRET_COOKIE}={LOCAL_AUTH.dev_secret}"}

    preflight = gateway.handle("OPTIONS", "/dev/token", {**visitor, "access-control-request-method": "POST"}, b"")
    token = gateway.handle("POST", "/dev/token", {**visitor, "content-type": "application/json"}, b'{"user_id": "u-1"}')
    trusted = gateway.handle("GET", "/dev/trusted/segments", {**visitor, **SECRET}, b"")

    for response in (preflight, token, trusted):
        assert not set(CORS_HEADERS) & set(response.headers), response.headers
    assert token.status == trusted.status == 403
    assert b"token" not in token.body
    api_preflight = gateway.handle("OPTIONS", "/events", visitor, b"")  # the API itself keeps its CORS
    assert api_preflight.headers["access-control-allow-origin"] == origin


# --- SigV4: the body actually sent, the stack's region, execute-api ---


def signed(method: str, path: str, body: bytes, headers: dict[str, str] | None = None,
           service: str = "execute-api", region: str = LOCAL_REGION) -> dict[str, str]:
    request = AWSRequest(method=method, url=f"http://local{path}",
                         headers={"host": "local", "content-type": "application/json", **(headers or {})}, data=body)
    SigV4Auth(Credentials(LOCAL_AUTH.access_key_id, LOCAL_AUTH.secret_access_key), service, region).add_auth(request)
    return dict(request.headers.items())


def batch(price: float) -> bytes:
    return json.dumps({"events": [purchase("p-1", price=price)]}).encode()


def declaring_hash_of(body: bytes) -> dict[str, str]:
    return {"x-amz-content-sha256": hashlib.sha256(body).hexdigest()}


def test_a_signed_content_hash_that_is_not_the_bodys_is_refused(api):
    signed_for_other_body = signed("POST", "/events", batch(10), declaring_hash_of(batch(10)))

    status, body = answer(api.gateway.handle("POST", "/events", signed_for_other_body, batch(0.01)))

    assert status == 403
    assert "x-amz-content-sha256" in body["message"]
    assert api.json("GET", "/users/u-1")[0] == 404  # nothing was stored


def test_an_unsigned_payload_is_refused(api):
    headers = signed("POST", "/events", batch(10), {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})

    assert api.gateway.handle("POST", "/events", headers, batch(0.01)).status == 403
    assert api.json("GET", "/users/u-1")[0] == 404


def test_a_content_hash_that_tells_the_truth_is_accepted(api):
    headers = signed("POST", "/events", batch(10), declaring_hash_of(batch(10)))

    assert api.gateway.handle("POST", "/events", headers, batch(10)).status == 200


@pytest.mark.parametrize("service, region", [("execute-api", "eu-west-1"), ("s3", LOCAL_REGION)])
def test_a_signature_scoped_to_another_region_or_service_is_refused(service, region):
    headers = signed("GET", "/segments", b"", service=service, region=region)

    assert local_gateway().handle("GET", "/segments", headers, b"").status == 403


# --- malformed bearer tokens ---


def token_signed_by_the_issuer(header: Any, claims: Any) -> str:
    """A token the local issuer's key really signed, whatever its parts hold."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = LOCAL_AUTH.signing_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


HEADER = {"alg": "RS256", "typ": "JWT", "kid": LOCAL_AUTH.key_id}
CLAIMS = {"iss": LOCAL_AUTH.issuer, "aud": LOCAL_AUDIENCE, "sub": "u-1", "exp": 4_102_444_800}
MALFORMED = {
    "one part": "abc",
    "two parts": "abc.def",
    "four parts": "a.b.c.d",
    "not base64url": "!!!.???.###",
    "not JSON": f"{_b64(b'not json')}.{_b64(b'{}')}.{_b64(b'sig')}",
    "not UTF-8": f"{_b64(bytes([0xff, 0xfe]))}.{_b64(b'{}')}.{_b64(b'sig')}",
    "not ASCII": "é.é.é",
    "header is a list": f"{_b64(b'[1, 2]')}.{_b64(b'{}')}.{_b64(b'sig')}",
    "claims are a string": token_signed_by_the_issuer(HEADER, "u-1"),
    "claims are a list": token_signed_by_the_issuer(HEADER, [CLAIMS]),
    "sub is a number": token_signed_by_the_issuer(HEADER, {**CLAIMS, "sub": 1}),
    "sub is an object": token_signed_by_the_issuer(HEADER, {**CLAIMS, "sub": {"id": "u-1"}}),
    "aud is an object": token_signed_by_the_issuer(HEADER, {**CLAIMS, "aud": {LOCAL_AUDIENCE: True}}),
    "exp is text": token_signed_by_the_issuer(HEADER, {**CLAIMS, "exp": "tomorrow"}),
    "iss is a list": token_signed_by_the_issuer(HEADER, {**CLAIMS, "iss": [LOCAL_AUTH.issuer]}),
}


@pytest.mark.parametrize("token", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_bearer_token_is_401_not_a_crash(token):
    response = local_gateway().handle("GET", "/users/u-1", {"host": "local", "authorization": f"Bearer {token}"}, b"")

    assert response.status == 401, response.body
    assert "www-authenticate" in response.headers


# --- the HTTP server: timeouts and Content-Length ---


@pytest.fixture
def server_port(monkeypatch) -> int:
    monkeypatch.setattr("devstack.gateway.REQUEST_TIMEOUT_SECONDS", 0.5)
    server = make_server(local_gateway(), 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def exchange(port: int, request: bytes, wait: float = 5) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):  # socket.timeout if the server never closes
            received += chunk
    return received, time.monotonic() - started


def post(content_length: str, body: bytes = b"") -> bytes:
    return (f"POST /events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {content_length}\r\n\r\n").encode() + body


def test_a_client_that_sends_less_than_its_content_length_is_cut_off(server_port):
    received, seconds = exchange(server_port, post("100", b'{"events": '))

    assert received == b""  # closed, nothing answered for a body that never came
    assert seconds < 3
    page, _ = exchange(server_port, b"GET /shop HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200")  # the server still serves


def test_an_idle_connection_is_closed(server_port):
    received, seconds = exchange(server_port, b"")

    assert received == b"" and seconds < 3


@pytest.mark.parametrize("content_length", ["ten", "-5", "+2", "1e3", "0x10", "2 2"])
def test_a_content_length_that_is_not_a_number_of_bytes_is_400(server_port, content_length):
    received, _ = exchange(server_port, post(content_length, b"{}"))

    assert received.startswith(b"HTTP/1.1 400"), received


def test_a_content_length_over_the_body_limit_is_413_without_sending_the_body(server_port):
    received, seconds = exchange(server_port, post("2000001"))

    assert received.startswith(b"HTTP/1.1 413"), received
    assert b"2000000 bytes" in received
    assert seconds < 3  # answered at once, not after waiting for 2 MB
