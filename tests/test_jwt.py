"""JWTs from an identity provider: keys this test generates, tokens it signs, a JWKS served
from a file or from a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
import time
from dataclasses import replace
from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from falcon import testing

from app import create_app
from auth import JWKS_REFRESH_SECONDS, InvalidToken, KeySet
from harness.checks import assert_problem, bearer
from settings import SettingsError, load_settings

ISSUER = "https://idp.example.org/"
AUDIENCE = "orgapi"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key, kid: str, alg: str) -> dict:
    jwk = orjson.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def jwks(*keys: dict) -> bytes:
    return orjson.dumps({"keys": list(keys)})


RSA_JWK = public_jwk(RSA_KEY, "rsa-1", "RS256")
EC_JWK = public_jwk(EC_KEY, "ec-1", "ES256")


def sign(key=RSA_KEY, alg="RS256", kid="rsa-1", **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-1", "iat": now, "exp": now + 300, "scope": "users:read users:write", **claims}
    return jwt.encode({name: value for name, value in payload.items() if value is not None}, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def jwks_file(tmp_path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(RSA_JWK, EC_JWK))
    return path


@pytest.fixture
def jwt_client(settings, db, jwks_file):
    operations = replace(settings.operations, jwt_jwks_file=jwks_file, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_leeway_seconds=0)
    return testing.TestClient(create_app(replace(settings, operations=operations), db))


def post(client, token: str):
    return client.simulate_post("/users", json={"username": f"u{time.monotonic_ns()}"}, headers=bearer(token))


@pytest.mark.parametrize(("key", "alg", "kid"), [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1")])
def test_a_signed_token_with_the_scope_may_write(jwt_client, key, alg, kid):
    assert post(jwt_client, sign(key, alg, kid)).status_code == 201


@pytest.mark.parametrize(
    "claims", [{"scope": "users:write"}, {"scope": None, "scp": ["users:write"]}, {"scope": None, "scp": "users:write"}]
)
def test_scopes_come_from_scope_or_scp(jwt_client, claims):
    assert post(jwt_client, sign(**claims)).status_code == 201


def test_a_token_without_the_scope_is_403(jwt_client):
    result = post(jwt_client, sign(scope="users:read profile"))
    assert_problem(result, 403)
    assert 'error="insufficient_scope"' in result.headers["www-authenticate"]
    assert jwt_client.simulate_get("/users", headers=bearer(sign(scope="users:read"))).status_code == 200


def _hmac_with_the_public_key() -> str:
    # The classic confusion: an HS256 token whose "secret" is the RSA public key's PEM text.
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
    now = int(time.time())
    payload = orjson.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "scope": "users:write"})
    signing_input = jwt.utils.base64url_encode(header) + b"." + jwt.utils.base64url_encode(payload)
    signature = hmac.new(pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


def _unsigned() -> str:
    header = jwt.utils.base64url_encode(orjson.dumps({"alg": "none", "kid": "rsa-1"}))
    payload = jwt.utils.base64url_encode(
        orjson.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "scope": "users:write"})
    )
    return (header + b"." + payload + b".").decode()


BAD_TOKENS = {
    "expired": lambda: sign(exp=int(time.time()) - 10),
    "not yet valid": lambda: sign(nbf=int(time.time()) + 60),
    "another issuer": lambda: sign(iss="https://evil.example.org/"),
    "another audience": lambda: sign(aud="someone-else"),
    "no expiry": lambda: sign(exp=None),
    "signed by an unknown key": lambda: sign(OTHER_RSA_KEY),
    "unknown kid": lambda: sign(kid="nobody"),
    "alg none": _unsigned,
    "HS256 with the public key": _hmac_with_the_public_key,
    "RS512, not allowed": lambda: sign(alg="RS512"),
    "tampered payload": lambda: (lambda parts: ".".join([parts[0], sign(scope="users:write metrics:read").split(".")[1], parts[2]]))(
        sign().split(".")
    ),
}


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_token_that_fails_any_check_is_401_invalid_token(jwt_client, make, users):
    result = post(jwt_client, make())
    assert_problem(result, 401)
    assert result.headers["www-authenticate"] == 'Bearer realm="orgapi", error="invalid_token"'
    assert users.count() == 0


def test_a_shared_secret_key_in_the_key_set_is_never_used(settings, db, tmp_path):
    secret = b"s" * 32
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks({"kty": "oct", "k": jwt.utils.base64url_encode(secret).decode(), "kid": "hmac", "alg": "HS256"}))
    operations = replace(settings.operations, jwt_jwks_file=path, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = testing.TestClient(create_app(replace(settings, operations=operations), db))
    assert_problem(post(client, sign(secret, "HS256", "hmac")), 401)


@pytest.mark.parametrize("value", ["none", "HS256", "RS256,HS512", ""])
def test_only_asymmetric_algorithms_may_be_allowed(value):
    with pytest.raises(SettingsError, match="JWT_ALGORITHMS"):
        load_settings({"JWT_ALGORITHMS": value})


def test_a_key_set_needs_issuer_and_audience():
    with pytest.raises(SettingsError, match="JWT_ISSUER and JWT_AUDIENCE"):
        load_settings({"JWT_JWKS_URL": "https://idp.example.org/jwks"})


class JwksServer:
    """A JWKS on http://127.0.0.1:<port>/jwks, whose keys a test can change; counts fetches."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_keys_from_a_url_are_fetched_once_and_cached(settings, db):
    with JwksServer(jwks(RSA_JWK)) as server:
        operations = replace(settings.operations, jwt_jwks_url=server.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, token_cache_seconds=0)
        client = testing.TestClient(create_app(replace(settings, operations=operations), db))
        for _ in range(3):
            assert post(client, sign()).status_code == 201
        assert server.fetches == 1


def test_an_unknown_kid_refetches_the_key_set_at_most_every_few_seconds():
    now = [1000.0]
    with JwksServer(jwks(RSA_JWK)) as server:
        keys = KeySet(url=server.url, clock=lambda: now[0])
        assert keys.key("rsa-1").algorithm_name == "RS256"
        server.body = jwks(RSA_JWK, EC_JWK)  # the provider rotates a key in
        with pytest.raises(InvalidToken):
            keys.key("ec-1")  # just fetched: not again so soon, whatever kids tokens make up
        assert server.fetches == 1
        now[0] += JWKS_REFRESH_SECONDS + 1
        assert keys.key("ec-1").algorithm_name == "ES256"
        assert server.fetches == 2
        assert keys.key("rsa-1") and keys.key("ec-1") and server.fetches == 2


def test_an_unreachable_key_set_is_503_not_401(settings, db):
    operations = replace(settings.operations, jwt_jwks_url="http://127.0.0.1:9/jwks", jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = testing.TestClient(create_app(replace(settings, operations=operations), db))
    result = post(client, sign())
    assert_problem(result, 503)
    assert result.headers["retry-after"] == "1"
