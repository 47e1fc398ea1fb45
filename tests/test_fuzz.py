"""Generated input: schemathesis against the service's own OpenAPI document, and a
hypothesis state machine of the API against an in-memory model of the users table.

Bounded and repeatable: fixed seeds (derandomized), fixed example budgets, in-process
against the real WSGI app on a throwaway database (fixtures from tests/conftest.py).
Done when: zero 5xx, zero responses that contradict the document, and the API agrees
with the model after every step.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from schemathesis.config import SchemathesisConfig

# 412 answers a schema-valid but stale If-Match (documented); it is not valid data rejected.
ACCEPTED = ["2xx", "3xx", "404", "409", "412"]
ACCESS = ["token", "no token"]


def fuzz_config(token: str | None) -> SchemathesisConfig:
    if token is None:
        # Without a token, valid data on a protected operation is refused with 401 before it is looked at.
        return SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "401"]}}})
    return SchemathesisConfig.from_dict(
        {
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
            # Schemathesis's own auth: it sends the token and also checks that a missing or made-up one is refused.
            "auth": {"openapi": {"bearer": {"bearer": token}}},
        }
    )


FUZZ_SETTINGS = settings(max_examples=40, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(params=ACCESS)
def access(request) -> str:
    """Each fuzz runs twice: with a token holding every scope, and with none."""
    return request.param


@pytest.fixture
def api_schema(app, access, token):
    """The document the app serves at /openapi.json, calling the app in-process."""
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=fuzz_config(token if access == "token" else None))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms_to_the_document(case):
    """Positive and negative examples for every operation: every default check
    (no 5xx, documented status, content type, headers and body schema, valid data
    accepted, invalid data rejected, unsupported methods answered 405, operations
    that declare security refused without it)."""
    case.call_and_validate()


def test_stateful_sequences_conform_to_the_document(api_schema, db, access):
    """Create, then read, update and delete what was created, following the links
    schemathesis infers from the document (POST 201 body id -> /users/{user_id})."""
    base = api_schema.as_state_machine()
    followed: list[tuple[str, int]] = []

    class Machine(base):
        def setup(self) -> None:
            db.execute_sql("TRUNCATE users RESTART IDENTITY")

        def after_call(self, response, case) -> None:
            followed.append((case.operation.label, response.status_code))
            super().after_call(response, case)

    Machine.run(settings=settings(FUZZ_SETTINGS, max_examples=25, stateful_step_count=8))

    if access == "no token":
        # Every read and write of users is refused, and nothing was created to follow.
        assert followed and {status for label, status in followed if "/users" in label} == {401}, sorted(set(followed))
        return
    created = sum(1 for label, status in followed if label == "POST /users" and status == 201)
    reached = {label for label, status in followed if label.endswith("{user_id}") and status in (200, 204)}
    assert created > 0, followed
    # The sequences did reach what they created (not only 404s on made-up ids).
    assert reached >= {"GET /users/{user_id}", "PATCH /users/{user_id}", "DELETE /users/{user_id}"}, sorted(set(followed))


# ------------------------------------------------------------------ the API as a state machine

USERNAMES = ["amy", "bob", "cy.d", "d-e_f", "amy2"]
# One address in several spellings: case, U+212A KELVIN SIGN for "K", NFC and NFD "ë".
EMAILS = [
    "amy@example.org",
    "AMY@example.org",
    "bob@example.org",
    "x@y.zz",
    "kim@example.org",
    "\u212aim@example.org",
    "zo\u00eb@x.org",
    "zoe\u0308@x.org",
]
# Display names: no controls, format characters (but ZWNJ and ZWJ) or line separators (schemas.py).
NAMES = st.one_of(
    st.none(),
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp"), include_characters="\u200c\u200d"), max_size=12
    ),
)


def stored_email(value: str | None) -> str | None:
    return None if value is None else unicodedata.normalize("NFC", value)


ETAG = re.compile(r'"(\d+)"')


class UsersModel(RuleBasedStateMachine):
    """Every response is predicted from a dict of rows; a full listing must equal the dict."""

    client: Any = None
    db: Any = None
    users = Bundle("users")

    def __init__(self) -> None:
        super().__init__()
        self.db.execute_sql("TRUNCATE users RESTART IDENTITY")
        self.rows: dict[int, dict[str, Any]] = {}  # id -> username, email, full_name, version
        self.gone: set[int] = set()

    # -- helpers
    def _taken(self, field: str, value, exclude: int | None = None) -> bool:
        if value is None:
            return False
        key = (lambda v: unicodedata.normalize("NFC", v).lower()) if field == "email" else (lambda v: v)
        return any(row[field] is not None and key(row[field]) == key(value) for uid, row in self.rows.items() if uid != exclude)

    def _check_user(self, result, uid: int) -> None:
        row = self.rows[uid]
        body = result.json
        assert body["id"] == uid
        assert (body["username"], body["email"], body["full_name"]) == (row["username"], row["email"], row["full_name"])
        assert result.headers["etag"] == f'"{row["version"]}"'

    def _check_problem(self, result, status: int, field: str | None = None, fields: set | None = None) -> None:
        assert result.status_code == status, (status, result.status_code, result.text)
        assert result.headers["content-type"] == "application/problem+json"
        if field or fields:
            assert result.json["errors"][0]["field"] in (fields or {field}), result.json

    def _if_match(self, uid: int, choice: str) -> tuple[dict, bool]:
        """(headers, whether the precondition holds) for an If-Match choice."""
        version = self.rows[uid]["version"] if uid in self.rows else 1
        headers = {
            "none": {},
            "star": {"If-Match": "*"},
            "current": {"If-Match": f'"{version}"'},
            "stale": {"If-Match": f'"{version + 7}"'},
            "list": {"If-Match": f'"{version + 7}", "{version}"'},
            "weak": {"If-Match": f'W/"{version}"'},  # If-Match uses strong comparison: never matches
        }[choice]
        holds = choice in ("none", "star", "current", "list")
        return headers, holds

    # -- rules
    @rule(target=users, username=st.sampled_from(USERNAMES), email=st.one_of(st.none(), st.sampled_from(EMAILS)), full_name=NAMES)
    def create(self, username, email, full_name):
        document = {"username": username, "email": email, "full_name": full_name}
        result = self.client.simulate_post("/users", body=orjson.dumps(document), headers={"Content-Type": "application/json"})
        conflicts = {field for field, value in (("username", username), ("email", email)) if self._taken(field, value)}
        if conflicts:
            self._check_problem(result, 409, fields=conflicts)
            return multiple()
        assert result.status_code == 201, result.text
        uid = result.json["id"]
        assert uid not in self.rows and uid not in self.gone
        self.rows[uid] = {"username": username, "email": stored_email(email), "full_name": full_name, "version": 1}
        self._check_user(result, uid)
        assert result.headers["location"] == f"/users/{uid}"
        return uid

    @rule(uid=users)
    def get(self, uid):
        result = self.client.simulate_get(f"/users/{uid}")
        if uid in self.rows:
            assert result.status_code == 200
            self._check_user(result, uid)
            cached = self.client.simulate_get(f"/users/{uid}", headers={"If-None-Match": result.headers["etag"]})
            assert cached.status_code == 304 and cached.content == b""
        else:
            self._check_problem(result, 404)

    @rule(uid=st.integers(min_value=1, max_value=2**63 - 1))
    def get_unknown(self, uid):
        result = self.client.simulate_get(f"/users/{uid}")
        assert result.status_code == (200 if uid in self.rows else 404)

    @rule(
        uid=users,
        changes=st.fixed_dictionaries(
            {},
            optional={
                "username": st.sampled_from(USERNAMES),
                "email": st.one_of(st.none(), st.sampled_from(EMAILS)),
                "full_name": NAMES,
            },
        ),
        if_match=st.sampled_from(["none", "star", "current", "stale", "list", "weak"]),
        media_type=st.sampled_from(["application/json", "application/merge-patch+json"]),
    )
    def patch(self, uid, changes, if_match, media_type):
        headers, holds = self._if_match(uid, if_match)
        result = self.client.simulate_patch(f"/users/{uid}", body=orjson.dumps(changes), headers={"Content-Type": media_type, **headers})
        if uid not in self.rows:
            self._check_problem(result, 404)
        elif not holds:
            self._check_problem(result, 412)
        else:
            conflicts = {field for field in ("username", "email") if field in changes and self._taken(field, changes[field], exclude=uid)}
            if conflicts:
                self._check_problem(result, 409, fields=conflicts)
                return
            assert result.status_code == 200, result.text
            if changes:  # {} changes nothing, not even the version (RFC 7396)
                self.rows[uid].update(changes, **({"email": stored_email(changes["email"])} if "email" in changes else {}))
                self.rows[uid]["version"] += 1
            self._check_user(result, uid)

    @rule(uid=users, if_match=st.sampled_from(["none", "star", "current", "stale", "weak"]))
    def delete(self, uid, if_match):
        headers, holds = self._if_match(uid, if_match)
        result = self.client.simulate_delete(f"/users/{uid}", headers=headers)
        if uid not in self.rows:
            self._check_problem(result, 404)
        elif not holds:
            self._check_problem(result, 412)
        else:
            assert result.status_code == 204 and result.content == b""
            del self.rows[uid]
            self.gone.add(uid)

    @rule(
        limit=st.integers(1, 4),
        after=st.one_of(st.none(), st.integers(0, 12)),
        prefix=st.one_of(st.none(), st.sampled_from(["a", "am", "b", "c", "d-e", "zz", "_"])),
    )
    def list_page(self, limit, after, prefix):
        query = {"limit": limit, **({"after": after} if after is not None else {}), **({"username_prefix": prefix} if prefix else {})}
        result = self.client.simulate_get("/users", params=query)
        assert result.status_code == 200, result.text
        expected = sorted(
            uid for uid, row in self.rows.items() if (after is None or uid > after) and (not prefix or row["username"].startswith(prefix))
        )
        assert [user["id"] for user in result.json] == expected[:limit]
        assert ("link" in result.headers) == (len(expected) > limit)

    @invariant()
    def listing_equals_the_model(self):
        result = self.client.simulate_get("/users", params={"limit": 1000})
        assert result.status_code == 200
        seen = {user["id"]: (user["username"], user["email"], user["full_name"]) for user in result.json}
        assert seen == {uid: (row["username"], row["email"], row["full_name"]) for uid, row in self.rows.items()}


def test_the_api_behaves_like_a_model_of_the_users_table(client, db):
    UsersModel.client, UsersModel.db = client, db
    try:
        run_state_machine_as_test(UsersModel, settings=settings(FUZZ_SETTINGS, max_examples=30, stateful_step_count=25))
    finally:
        UsersModel.client = UsersModel.db = None


# ------------------------------------------------------------------ any JSON, any query string

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = st.one_of(JSON_VALUES, st.text(max_size=260), st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,40}\Z"))


@settings(FUZZ_SETTINGS, max_examples=150)
@given(
    document=st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries(
            {"username": FIELD_VALUES}, optional={"email": FIELD_VALUES, "full_name": FIELD_VALUES, "extra": JSON_VALUES}
        ),
    )
)
def test_any_json_body_is_answered_with_a_documented_status(client, document):
    for method, path in (("POST", "/users"), ("PATCH", "/users/1")):
        body = json.dumps(document, ensure_ascii=False).encode()  # any integer size, unlike orjson
        result = client.simulate_request(method, path, body=body, headers={"Content-Type": "application/json"})
        # 400: integers beyond 64 bits are not JSON the service takes (orjson's limit).
        assert result.status_code in {200, 201, 400, 404, 409, 422}, result.text
        if result.status_code >= 400:
            assert result.headers["content-type"] == "application/problem+json"
        if result.status_code == 201:
            stored = client.simulate_get(result.headers["location"]).json
            assert {key: stored[key] for key in document} == document  # stored exactly as sent


@settings(FUZZ_SETTINGS, max_examples=150)
@given(
    query=st.lists(
        st.tuples(
            st.sampled_from(["limit", "after", "username_prefix", "LIMIT", "offset", ""]),
            st.one_of(st.integers(-(2**70), 2**70).map(str), st.text(max_size=12)),
        ),
        max_size=3,
    )
)
def test_any_list_query_is_200_or_400(client, query):
    result = client.simulate_get(
        "/users",
        params=dict(query) if len({k for k, _ in query}) == len(query) else None,
        query_string=None if len({k for k, _ in query}) == len(query) else "&".join(f"{k}={v}" for k, v in query),
    )
    assert result.status_code in (200, 400), result.text
    if result.status_code == 400:
        assert result.headers["content-type"] == "application/problem+json"
