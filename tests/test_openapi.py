"""The OpenAPI document is valid, covers every route, and describes what the app really does.

Real request/response pairs from the TestClient are checked against the served document
with openapi-core: every response must match its operation's documented status, headers
and body schema; every request the app accepts must be valid by the document, and (for
the checks the document can express) every request it refuses must be invalid by it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
from falcon import testing
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate as validate_spec

from harness.checks import UNKNOWN_TOKEN, bearer
from openapi import build_document
from tokens import METRICS, READ, TokenStore

HOST = "http://localhost"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
PROBLEM = "application/problem+json"
# openapi-core knows application/json; the app also speaks these JSON media types.
CONFIG = Config(extra_media_type_deserializers={PROBLEM: json.loads, MERGE_PATCH: json.loads})
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass
class Exchange:
    """One real request to the app and its response."""

    method: str
    path: str
    query: dict
    headers: dict
    body: bytes | None
    result: testing.Result

    @property
    def status(self) -> int:
        return self.result.status_code

    def openapi_request(self) -> MockRequest:
        return MockRequest(
            HOST,
            self.method,
            self.path,
            args=self.query,
            headers=self.headers,
            data=self.body,
            content_type=self.headers.get("Content-Type", ""),
        )

    def openapi_response(self) -> MockResponse:
        return MockResponse(
            self.result.content,
            status_code=self.status,
            headers=dict(self.result.headers),
            content_type=self.result.headers.get("content-type", ""),
        )


def send(client, method: str, path: str, *, query=None, headers=None, document=None, body=None, content_type=JSON) -> Exchange:
    # The client's own headers (its bearer token) are part of the request the document must describe.
    headers = {**(client._default_headers or {}), **(headers or {})}
    if document is not None:
        body = json.dumps(document).encode()
    if body is not None and content_type is not None:
        headers["Content-Type"] = content_type
    result = client.simulate_request(method, path, params=query, headers=headers, body=body)
    return Exchange(method, path, dict(query or {}), headers, body, result)


@pytest.fixture
def document(client):
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"] == JSON
    return result.json


@pytest.fixture
def spec(document):
    return OpenAPI.from_dict(document, config=CONFIG)


# ---------------------------------------------------------------- the document itself


def test_document_is_valid_openapi_3_1(client, settings, document):
    validate_spec(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"
    assert document == json.loads(json.dumps(build_document(settings)))
    OpenAPI.from_dict(document, config=CONFIG).check_spec()
    operation_ids = [op["operationId"] for item in document["paths"].values() for name, op in item.items() if name in METHODS]
    assert len(operation_ids) == len(set(operation_ids))


def routes(app) -> dict[str, set[str]]:
    """Every URI template the app routes, with the methods its resource implements."""
    found: dict[str, set[str]] = {}

    def visit(nodes):
        for node in nodes:
            if node.resource is not None:
                template = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", node.uri_template)
                found[template] = {
                    method for method, responder in node.method_map.items() if getattr(responder, "__self__", None) is node.resource
                }
            visit(node.children)

    visit(app._router._roots)
    return found


def test_every_route_and_method_is_documented(app, document):
    served = routes(app)
    assert served, "found no routes in the router"
    assert set(served) == set(document["paths"])
    for template, methods in served.items():
        documented = {name.upper() for name in document["paths"][template] if name in METHODS}
        # HEAD is GET without a body, OPTIONS is Falcon's: neither needs its own operation.
        assert methods - {"HEAD"} == documented, template


def test_the_documented_user_id_is_the_range_the_router_takes(client, document):
    (parameter,) = document["paths"]["/users/{user_id}"]["parameters"]
    assert (parameter["name"], parameter["in"]) == ("user_id", "path")
    low, high = parameter["schema"]["minimum"], parameter["schema"]["maximum"]
    # Inside the range the route matches and the user is merely missing; outside, no route does.
    for user_id in (low, high):
        assert client.simulate_get(f"/users/{user_id}").json["detail"] == f"There is no user {user_id}."
    for user_id in (low - 1, high + 1):
        assert client.simulate_get(f"/users/{user_id}").json["detail"] == "Nothing is at this path."


def test_405_allow_headers_list_the_documented_operations(client, document):
    for template, item in document["paths"].items():
        path = template.replace("{user_id}", "1")
        documented = {name.upper() for name in item if name in METHODS}
        missing = next(method for method in ("PUT", "POST", "DELETE", "PATCH") if method not in documented)
        result = client.simulate_request(missing, path)
        assert result.status_code == 405, template
        assert result.headers["content-type"] == PROBLEM
        allowed = {method.strip() for method in result.headers["allow"].split(",")}
        assert allowed - {"HEAD", "OPTIONS"} == documented, template


# ---------------------------------------------------------------- real exchanges


def user_fixture(client, username="amy", **fields) -> dict:
    result = client.simulate_post("/users", json={"username": username, **fields})
    assert result.status_code == 201, result.text
    return result.json


def scenarios(client) -> list[tuple[str, Exchange, bool | None]]:
    """(operationId, exchange, is the request valid by the document: True, False or None = cannot tell)."""
    amy = user_fixture(client, "amy", email="amy@example.org", full_name="Amy")
    bob = user_fixture(client, "bob")
    user_fixture(client, "carl")
    amy_path, bob_path = f"/users/{amy['id']}", f"/users/{bob['id']}"
    big = b'{"username": "big"}'.ljust(16 * 1024 + 1)
    return [
        ("listUsers", send(client, "GET", "/users"), True),
        ("listUsers", send(client, "GET", "/users", query={"limit": 1, "after": 1, "username_prefix": "b"}), True),
        ("listUsers", send(client, "GET", "/users", query={"limit": 2}), True),
        ("listUsers", send(client, "GET", "/users", query={"username_prefix": "nobody"}), True),
        ("listUsers", send(client, "GET", "/users", query={"limit": 0}), False),
        ("listUsers", send(client, "GET", "/users", query={"limit": 1001}), False),
        ("listUsers", send(client, "GET", "/users", query={"after": -1}), False),
        ("listUsers", send(client, "GET", "/users", query={"username_prefix": "A"}), False),
        ("listUsers", send(client, "GET", "/users", query={"sort": "id"}), None),
        ("createUser", send(client, "POST", "/users", document={"username": "dan", "email": "dan@example.org", "full_name": "Dan"}), True),
        ("createUser", send(client, "POST", "/users", document={"username": "eve"}), True),
        ("createUser", send(client, "POST", "/users", body=b'{"username": '), False),
        ("createUser", send(client, "POST", "/users", body=b""), False),
        ("createUser", send(client, "POST", "/users", body=big), None),
        ("createUser", send(client, "POST", "/users", body=b'{"username": "fay"}', content_type="text/plain"), False),
        ("createUser", send(client, "POST", "/users", document={"username": "Bad Name"}), False),
        ("createUser", send(client, "POST", "/users", document={"full_name": "no username"}), False),
        ("createUser", send(client, "POST", "/users", document={"username": "gus", "id": 1}), False),
        ("createUser", send(client, "POST", "/users", document=[]), False),
        ("createUser", send(client, "POST", "/users", document={"username": "amy"}), True),
        ("createUser", send(client, "POST", "/users", document={"username": "hal", "email": "AMY@example.org"}), True),
        ("getUser", send(client, "GET", amy_path), True),
        ("getUser", send(client, "GET", amy_path, headers={"If-None-Match": '"1"'}), True),
        ("getUser", send(client, "GET", "/users/999"), True),
        ("getUser", send(client, "GET", "/users/0"), False),
        ("updateUser", send(client, "PATCH", bob_path, document={"full_name": "Bob"}), True),
        (
            "updateUser",
            send(client, "PATCH", bob_path, document={"email": None}, content_type=MERGE_PATCH, headers={"If-Match": '"2"'}),
            True,
        ),
        ("updateUser", send(client, "PATCH", bob_path, document={"full_name": "Old"}, headers={"If-Match": '"1"'}), True),
        ("updateUser", send(client, "PATCH", bob_path, document={"username": "amy"}), True),
        ("updateUser", send(client, "PATCH", bob_path, document={"email": "amy@example.org"}), True),
        ("updateUser", send(client, "PATCH", "/users/999", document={"full_name": "x"}), True),
        ("updateUser", send(client, "PATCH", bob_path, document={}), True),
        ("updateUser", send(client, "PATCH", bob_path, document={"version": 3}), False),
        ("updateUser", send(client, "PATCH", bob_path, body=b"{,}"), False),
        ("updateUser", send(client, "PATCH", bob_path, body=b'{"full_name": "x"}', content_type="application/xml"), False),
        ("updateUser", send(client, "PATCH", bob_path, body=big), None),
        ("deleteUser", send(client, "DELETE", amy_path, headers={"If-Match": '"7"'}), True),
        ("deleteUser", send(client, "DELETE", amy_path, headers={"If-Match": '"1"'}), True),
        ("deleteUser", send(client, "DELETE", amy_path, headers={"If-None-Match": "7"}), False),  # not an entity tag
        ("deleteUser", send(client, "DELETE", amy_path), True),
        ("getUser", send(client, "GET", bob_path, headers={"If-Match": '"999"'}), True),
        ("getUser", send(client, "GET", bob_path, headers={"If-Match": "W/"}), False),
        ("listUsers", send(client, "GET", "/users", headers={"If-None-Match": "*"}), True),
        ("listUsers", send(client, "GET", "/users", headers={"If-Match": '"1"'}), True),
        ("createUser", send(client, "POST", "/users", document={"username": "ivy"}, headers={"If-None-Match": "*"}), True),
        ("liveness", send(client, "GET", "/healthz"), True),
        ("readiness", send(client, "GET", "/readyz"), True),
        ("openapi", send(client, "GET", "/openapi.json"), True),
    ]


def dead_scenarios(client) -> list[tuple[str, Exchange, bool | None]]:
    return [
        ("listUsers", send(client, "GET", "/users"), True),
        ("createUser", send(client, "POST", "/users", document={"username": "amy"}), True),
        ("getUser", send(client, "GET", "/users/1"), True),
        ("updateUser", send(client, "PATCH", "/users/1", document={"full_name": "x"}), True),
        ("deleteUser", send(client, "DELETE", "/users/1"), True),
        ("readiness", send(client, "GET", "/readyz"), True),
        ("liveness", send(client, "GET", "/healthz"), True),
    ]


def operation_id(document, exchange: Exchange) -> str:
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, exchange.path) and exchange.method.lower() in item:
            return item[exchange.method.lower()]["operationId"]
    raise AssertionError(f"no operation for {exchange.method} {exchange.path}")


def check_exchanges(document, spec, exchanges) -> set[tuple[str, str]]:
    covered = set()
    for operation, exchange, request_valid in exchanges:
        where = f"{exchange.method} {exchange.path} {exchange.query} -> {exchange.status}: {exchange.result.text[:200]}"
        assert operation_id(document, exchange) == operation, where
        responses = next(
            item[exchange.method.lower()]["responses"]
            for item in document["paths"].values()
            if item.get(exchange.method.lower(), {}).get("operationId") == operation
        )
        # Every status the app answers is documented for its operation, not left to "default".
        assert str(exchange.status) in responses, where
        spec.validate_response(exchange.openapi_request(), exchange.openapi_response())
        if request_valid is True:
            spec.validate_request(exchange.openapi_request())
        elif request_valid is False:
            assert exchange.status >= 400, where
            with pytest.raises(Exception) as raised:
                spec.validate_request(exchange.openapi_request())
            assert "OpenAPIError" in [cls.__name__ for cls in type(raised.value).__mro__], (where, raised.value)
        covered.add((operation, str(exchange.status)))
    return covered


def test_real_exchanges_match_the_document(client, document, spec, settings):
    exchanges = scenarios(client)
    covered = check_exchanges(document, spec, exchanges)
    statuses = {status for _, status in covered}
    assert {"200", "201", "204", "304", "400", "404", "409", "412", "413", "415", "422"} <= statuses
    # The test must see a Link to validate it, and a 304 with an empty body.
    assert any("link" in exchange.result.headers for _, exchange, _ in exchanges)
    assert any(exchange.status == 304 and exchange.result.content == b"" for _, exchange, _ in exchanges)


def auth_scenarios(client, anonymous_client, db) -> list[tuple[str, Exchange, bool | None]]:
    """Each protected operation without a token, with a forged one, and with one lacking its scope."""

    def holding(*scopes: str):
        return testing.TestClient(client.app, headers=bearer(TokenStore(db).create("scoped", list(scopes))[1]))

    reader, watcher, forged = holding(READ), holding(METRICS), testing.TestClient(client.app, headers=bearer(UNKNOWN_TOKEN))
    amy = user_fixture(client, "amy")
    amy_path = f"/users/{amy['id']}"
    exchanges = []
    for operation, method, path, document, lacking in [
        ("listUsers", "GET", "/users", None, watcher),
        ("getUser", "GET", amy_path, None, watcher),
        ("createUser", "POST", "/users", {"username": "eve"}, reader),
        ("updateUser", "PATCH", amy_path, {"full_name": "x"}, reader),
        ("deleteUser", "DELETE", amy_path, None, reader),
        ("metrics", "GET", "/metrics", None, reader),
    ]:
        exchanges += [
            (operation, send(anonymous_client, method, path, document=document), False),
            (operation, send(forged, method, path, document=document), None),
            (operation, send(lacking, method, path, document=document), None),
        ]
    return exchanges + [
        ("getUser", send(reader, "GET", amy_path), True),
        ("metrics", send(watcher, "GET", "/metrics"), True),
        ("liveness", send(anonymous_client, "GET", "/healthz"), True),
        ("openapi", send(anonymous_client, "GET", "/openapi.json"), True),
    ]


def test_refusals_for_want_of_a_token_or_scope_match_the_document(client, anonymous_client, db, document, spec):
    exchanges = auth_scenarios(client, anonymous_client, db)
    covered = check_exchanges(document, spec, exchanges)
    assert {("listUsers", "401"), ("createUser", "403"), ("metrics", "403"), ("metrics", "200")} <= covered
    for _, exchange, _ in exchanges:
        if exchange.status == 401:
            assert exchange.result.headers["www-authenticate"].startswith("Bearer")


def test_exchanges_without_a_database_match_the_document(dead_client):
    # Not the `document` fixture: its app would rebind the process-wide database.
    document = dead_client.simulate_get("/openapi.json").json
    spec = OpenAPI.from_dict(document, config=CONFIG)
    exchanges = dead_scenarios(dead_client)
    covered = check_exchanges(document, spec, exchanges)
    assert {status for _, status in covered} == {"503", "200"}
    for _, exchange, _ in exchanges:
        if exchange.status == 503:
            assert exchange.result.headers["retry-after"] == "1"


def test_every_documented_status_is_exercised(client, anonymous_client, db, dead_client, document):
    documented = {
        (operation["operationId"], status)
        for item in document["paths"].values()
        for name, operation in item.items()
        if name in METHODS
        for status in operation["responses"]
        if status != "default"
    }
    live = {(operation, str(exchange.status)) for operation, exchange, _ in scenarios(client)}
    dead = {(operation, str(exchange.status)) for operation, exchange, _ in dead_scenarios(dead_client)}
    refused = {(operation, str(exchange.status)) for operation, exchange, _ in auth_scenarios(client, anonymous_client, db)}
    assert documented - live - dead - refused == set()


# ---------------------------------------------------------------- the checks can fail


def test_validation_rejects_responses_that_break_the_document(client, spec):
    user = user_fixture(client)
    request = MockRequest(HOST, "get", f"/users/{user['id']}")
    good = MockResponse(json.dumps(user).encode(), status_code=200, headers={"ETag": '"1"'}, content_type=JSON)
    spec.validate_response(request, good)
    bad_bodies = [
        {**user, "version": 1},
        {key: value for key, value in user.items() if key != "email"},
        {**user, "id": "1"},
        {**user, "created_at": "yesterday"},
    ]
    for body in bad_bodies:
        with pytest.raises(Exception, match="(?i)invalid|not valid"):
            spec.validate_response(request, MockResponse(json.dumps(body).encode(), status_code=200, content_type=JSON))
    problem = {"type": "about:blank", "title": "Not Found", "status": "404"}
    with pytest.raises(Exception, match="(?i)invalid|not valid"):
        spec.validate_response(request, MockResponse(json.dumps(problem).encode(), status_code=404, content_type=PROBLEM))
    with pytest.raises(Exception, match="(?i)content"):
        spec.validate_response(request, MockResponse(b"[]", status_code=200, content_type="text/plain"))


def test_openapi_document_is_served(client, settings):
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"] == JSON
    document = result.json
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {"/users", "/users/{user_id}", "/healthz", "/readyz", "/openapi.json", "/metrics"}
    limit = document["paths"]["/users"]["get"]["parameters"][0]
    assert limit["schema"]["maximum"] == settings.page_max
    assert limit["schema"]["default"] == settings.page_default
