"""The HTTP contract of every route, through the real WSGI app on a throwaway database.

Each test states the status, the content type and the body or header facts that matter.
Errors are checked with `assert_problem`: RFC 9457 problem details, whatever was asked.
"""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import orjson
import peewee
import psycopg2
import pytest
from falcon import testing

import models
from app import create_app
from harness.processes import free_port

JSON = "application/json"
PROBLEM = "application/problem+json"
PUBLIC_FIELDS = {"id", "username", "email", "full_name", "created_at", "updated_at"}
# Nothing of the implementation may reach a client in an error body.
LEAKS = ("Traceback", 'File "', "psycopg2", "peewee", "SELECT ", "INSERT INTO", "UPDATE \"", "DETAIL:", "constraint", "127.0.0.1", "refused")
NEXT_LINK = re.compile(r'<(/users\?[^>]*)>; rel="next"')


# ---------------------------------------------------------------- helpers


def assert_problem(result, status: int, *, head: bool = False) -> dict:
    """An error response: the status, problem+json, and a well-formed body (none for HEAD)."""
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == PROBLEM
    if head:
        assert result.content == b""
        return {}
    body = result.json
    assert set(body) <= {"type", "title", "status", "detail", "errors"}, body
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    assert type(body["status"]) is int and body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    for leak in LEAKS:
        assert leak not in result.text, (leak, result.text)
    return body


def assert_field_errors(result, status: int, fields: set[str]) -> list[dict]:
    body = assert_problem(result, status)
    errors = body["errors"]
    assert all(set(error) == {"field", "message"} and error["message"] for error in errors), errors
    assert {error["field"] for error in errors} == fields, errors
    return errors


def assert_user(result, status: int = 200) -> dict:
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == JSON
    assert re.fullmatch(r'"[0-9]+"', result.headers["etag"])
    assert set(result.json) == PUBLIC_FIELDS
    return result.json


def row_count() -> int:
    return models.count_users()


def post_json(client, document, content_type: str = JSON, path: str = "/users"):
    return client.simulate_post(path, body=orjson.dumps(document), headers={"Content-Type": content_type})


def patch_json(client, user_id, document, content_type: str = JSON, **headers):
    return client.simulate_patch(
        f"/users/{user_id}", body=orjson.dumps(document), headers={"Content-Type": content_type, **headers}
    )


def next_link(result) -> str | None:
    link = result.headers.get("link")
    if link is None:
        return None
    match = NEXT_LINK.fullmatch(link)
    assert match, link
    return match.group(1)


def walk(client, url: str) -> list[list[dict]]:
    """Every page from `url` on, following Link rel="next" to the end."""
    pages = []
    while url is not None:
        path, _, query = url.partition("?")
        result = client.simulate_get(path, query_string=query)
        assert result.status_code == 200, result.text
        assert result.headers["content-type"] == JSON
        pages.append(result.json)
        url = next_link(result)
        assert len(pages) < 100, "the Link chain does not end"
    return pages


class CountingStream(io.BytesIO):
    """A request body that records how many bytes the app read."""

    bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def post_without_length(client, data: bytes) -> tuple:
    """POST a body the way a chunked request arrives: a wsgi.input and no CONTENT_LENGTH."""
    headers = {"Content-Type": JSON, "Transfer-Encoding": "chunked"}
    # falcon.testing sets CONTENT_LENGTH only for a non-empty `body`; the stream goes in extras.
    assert "CONTENT_LENGTH" not in testing.create_environ(method="POST", path="/users", headers=headers)
    stream = CountingStream(data)
    result = client.simulate_post("/users", headers=headers, extras={"wsgi.input": stream})
    return result, stream


@pytest.fixture
def small_client(app, settings):
    """The app with tiny limits: 300-byte bodies, pages of 3 (at most 5)."""
    return testing.TestClient(create_app(replace(settings, max_body_bytes=300, page_default=3, page_max=5)))


@pytest.fixture
def dead_client(settings):
    """The app on a port nobody listens on: every database call fails to connect."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=1"
    client = testing.TestClient(create_app(replace(settings, database_url=url, connect_timeout=1)))
    yield client
    forget_binding()


def forget_binding() -> None:
    """Close and forget this binding's connection parameters.

    bind_database merges into the previous binding's parameters (see
    test_rebinding_forgets_the_previous_binding), so a port bound here would stay for
    the next app, whose embedded-server URL names no port.
    """
    models.db.close()
    models.db.connect_params.clear()


# ---------------------------------------------------------------- GET /users


def test_list_is_empty_without_users(client):
    for path in ("/users", "/users/"):
        result = client.simulate_get(path)
        assert result.status_code == 200
        assert result.headers["content-type"] == JSON
        assert result.json == []
        assert "link" not in result.headers


def test_list_gives_public_fields_in_id_order(client, make_user):
    created = [
        make_user("zed", email="zed@example.org", full_name="Zed Z"),
        make_user("amy"),
        make_user("mid", full_name="Mid"),
    ]
    make_user("tmp")
    client.simulate_delete(f"/users/{created[1]['id']}")
    created.append(make_user("last"))
    del created[1]
    for path in ("/users", "/users/"):
        result = client.simulate_get(path)
        assert result.status_code == 200
        assert result.headers["content-type"] == JSON
        body = result.json
        assert all(set(user) == PUBLIC_FIELDS for user in body)
        assert [user["id"] for user in body] == sorted(user["id"] for user in body)
        assert [user["username"] for user in body] == ["zed", "mid", "tmp", "last"]
        assert body[0] == created[0]


def test_head_list_has_no_body(client, make_user):
    make_user("amy")
    result = client.simulate_head("/users")
    assert result.status_code == 200
    assert result.headers["content-type"] == JSON
    assert result.content == b""


def test_default_and_maximum_page_size_come_from_settings(small_client, make_user):
    for index in range(7):
        make_user(f"user{index}")
    result = small_client.simulate_get("/users")
    assert result.status_code == 200
    assert [user["username"] for user in result.json] == ["user0", "user1", "user2"]
    assert result.headers["link"] == '</users?limit=3&after=3>; rel="next"'
    result = small_client.simulate_get("/users", params={"limit": 5})
    assert len(result.json) == 5
    assert_problem(small_client.simulate_get("/users", params={"limit": 6}), 400)


def test_default_page_is_100_and_maximum_1000(client, make_user, settings):
    assert (settings.page_default, settings.page_max) == (100, 1000)
    models.db.execute_sql("INSERT INTO users (username) SELECT 'u' || g FROM generate_series(1, 1001) g")
    result = client.simulate_get("/users")
    assert len(result.json) == 100
    assert next_link(result) == "/users?limit=100&after=100"
    result = client.simulate_get("/users", params={"limit": 1000})
    assert len(result.json) == 1000
    assert next_link(result) == "/users?limit=1000&after=1000"
    assert_problem(client.simulate_get("/users", params={"limit": 1001}), 400)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=-1",
        "limit=1001",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "limit=1e2",
        "after=-1",
        "after=x",
        "after=1.0",
        f"after={2**63}",
        "username_prefix=ABC",
        "username_prefix=a%20b",
        "username_prefix=a%25",
        "username_prefix=",
        "username_prefix=" + "a" * 33,
        "offset=10",
        "page=2",
        "LIMIT=5",
        "limit=5&sort=id",
    ],
)
def test_bad_list_parameters_are_400(client, query):
    body = assert_problem(client.simulate_get("/users", query_string=query), 400)
    assert "errors" not in body


@pytest.mark.parametrize(
    "query",
    [
        "limit=1_0",
        "limit=%D9%A1",
        "after=0_1",
    ],
)
def test_list_parameters_take_plain_ascii_integers_only(client, query):
    assert_problem(client.simulate_get("/users", query_string=query), 400)


def test_after_returns_the_users_past_an_id(client, make_user):
    ids = [make_user(f"user{index}")["id"] for index in range(5)]
    result = client.simulate_get("/users", params={"after": ids[1]})
    assert result.status_code == 200
    assert [user["id"] for user in result.json] == ids[2:]
    assert [user["id"] for user in client.simulate_get("/users", params={"after": 0}).json] == ids
    assert client.simulate_get("/users", params={"after": 2**63 - 1}).json == []


def test_link_headers_walk_the_whole_table_once(client, make_user):
    ids = [make_user(f"user{index}")["id"] for index in range(7)]
    first = client.simulate_get("/users", params={"limit": 2})
    assert first.headers["link"] == f'</users?limit=2&after={ids[1]}>; rel="next"'
    pages = walk(client, "/users?limit=2")
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert [user["id"] for page in pages for user in page] == ids


def test_no_link_when_the_last_page_is_exactly_full(client, make_user):
    for index in range(4):
        make_user(f"user{index}")
    assert [len(page) for page in walk(client, "/users?limit=2")] == [2, 2]
    assert "link" not in client.simulate_get("/users", params={"limit": 4}).headers


def test_link_from_a_trailing_slash_path(client, make_user):
    make_user("amy")
    make_user("bob")
    result = client.simulate_get("/users/", params={"limit": 1})
    assert next_link(result) == "/users?limit=1&after=1"


def test_username_prefix_filters_and_pages(client, make_user):
    names = ["ab1", "xy", "ab_2", "abc", "ab.3", "b", "ab_4", "ab-5", "zab"]
    for name in names:
        make_user(name)
    pages = walk(client, "/users?limit=2&username_prefix=ab")
    assert [user["username"] for page in pages for user in page] == ["ab1", "ab_2", "abc", "ab.3", "ab_4", "ab-5"]
    first = client.simulate_get("/users", params={"limit": 2, "username_prefix": "ab"})
    assert parse_qs(urlsplit(next_link(first)).query) == {"limit": ["2"], "after": ["3"], "username_prefix": ["ab"]}
    # "_" is a literal, not LIKE's one-character wildcard.
    underscored = client.simulate_get("/users", params={"username_prefix": "ab_"}).json
    assert [user["username"] for user in underscored] == ["ab_2", "ab_4"]
    assert client.simulate_get("/users", params={"username_prefix": "nobody"}).json == []
    assert [u["username"] for u in client.simulate_get("/users", params={"username_prefix": "abc"}).json] == ["abc"]


# ---------------------------------------------------------------- GET/HEAD /users/{id}


def test_get_user_with_etag(client, make_user):
    created = make_user("amy", email="amy@example.org", full_name="Amy A")
    for path in (f"/users/{created['id']}", f"/users/{created['id']}/"):
        result = client.simulate_get(path)
        assert assert_user(result) == created
        assert result.headers["etag"] == '"1"'


@pytest.mark.parametrize("if_none_match", ['"1"', "*", 'W/"1"', '"7", "1"'])
def test_if_none_match_gives_304(client, make_user, if_none_match):
    user = make_user("amy")
    for method in ("GET", "HEAD"):
        result = client.simulate_request(method, f"/users/{user['id']}", headers={"If-None-Match": if_none_match})
        assert result.status_code == 304
        assert result.content == b""
        assert result.headers["etag"] == '"1"'


def test_if_none_match_with_an_old_etag_gives_200(client, make_user):
    user = make_user("amy")
    patch_json(client, user["id"], {"full_name": "Amy"})
    result = client.simulate_get(f"/users/{user['id']}", headers={"If-None-Match": '"1"'})
    assert assert_user(result)["full_name"] == "Amy"
    assert result.headers["etag"] == '"2"'


def test_head_user(client, make_user):
    user = make_user("amy")
    result = client.simulate_head(f"/users/{user['id']}")
    assert result.status_code == 200
    assert result.headers["content-type"] == JSON
    assert result.headers["etag"] == '"1"'
    assert result.content == b""
    assert_problem(client.simulate_head("/users/999"), 404, head=True)
    assert_problem(client.simulate_head("/users/abc"), 404, head=True)


@pytest.mark.parametrize(
    "user_id",
    ["abc", "1.5", "-1", "0", "1e3", "%201", "1%20", "0x1", "9" * 30, str(2**63), "1,2", "true", "null"],
)
def test_ids_that_are_not_positive_bigints_are_404(client, make_user, user_id):
    make_user("amy")
    for method in ("GET", "HEAD", "PATCH", "DELETE"):
        result = client.simulate_request(method, f"/users/{user_id}", json={"full_name": "x"} if method == "PATCH" else None)
        body = assert_problem(result, 404, head=method == "HEAD")
        assert method == "HEAD" or body["detail"] == "Nothing is at this path."
    assert client.simulate_get("/users/1").json["full_name"] is None


@pytest.mark.parametrize(
    "alias",
    [
        "+1",
        "0_1",
        "%D9%A1",
    ],
)
def test_an_id_has_one_spelling(client, make_user, alias):
    """`/users/1` must not also answer at `/users/+1`, `/users/0_1` or `/users/١` (ARABIC-INDIC ONE)."""
    make_user("amy")
    assert_problem(client.simulate_get(f"/users/{alias}"), 404)


@pytest.mark.parametrize("user_id", [999, 2**63 - 1])
def test_unknown_user_is_404(client, make_user, user_id):
    make_user("amy")
    body = assert_problem(client.simulate_get(f"/users/{user_id}"), 404)
    assert body["detail"] == f"There is no user {user_id}."


# ---------------------------------------------------------------- POST /users


def test_create_user(client):
    result = post_json(client, {"username": "amy", "email": "Amy@Example.org", "full_name": "Amy Ä 😀"})
    user = assert_user(result, 201)
    assert result.headers["location"] == f"/users/{user['id']}"
    assert result.headers["etag"] == '"1"'
    assert user["username"] == "amy"
    assert user["email"] == "Amy@Example.org"
    assert user["full_name"] == "Amy Ä 😀"
    assert user["created_at"] == user["updated_at"]
    assert datetime.fromisoformat(user["created_at"]).utcoffset() is not None
    fetched = client.simulate_get(result.headers["location"])
    assert fetched.json == user
    assert fetched.headers["etag"] == result.headers["etag"]


@pytest.mark.parametrize("content_type", [JSON, "application/json; charset=utf-8", "Application/JSON"])
def test_create_with_only_a_username(client, content_type):
    user = assert_user(post_json(client, {"username": "amy"}, content_type), 201)
    assert (user["email"], user["full_name"]) == (None, None)
    assert row_count() == 1


def test_create_accepts_explicit_nulls(client):
    user = assert_user(post_json(client, {"username": "amy", "email": None, "full_name": None}), 201)
    assert (user["email"], user["full_name"]) == (None, None)


@pytest.mark.parametrize(
    "fields",
    [
        {"username": "a" + "b" * 31},
        {"username": "a.b-c_9"},
        {"username": "0"},
        {"username": "amy", "email": "a" * 242 + "@example.org"},
        {"username": "amy", "full_name": "x" * 200},
        {"username": "amy", "full_name": "é" * 200},
        {"username": "amy", "full_name": "😀" * 200},
    ],
    ids=["username-32", "username-punctuation", "username-1", "email-254", "full_name-200", "full_name-200-2byte", "full_name-200-4byte"],
)
def test_strings_at_their_limit_are_accepted_and_stored_exactly(client, fields):
    result = post_json(client, fields)
    user = assert_user(result, 201)
    for name, value in fields.items():
        assert user[name] == value
    assert client.simulate_get(result.headers["location"]).json == user


def test_duplicate_username_is_409(client, make_user):
    make_user("amy")
    errors = assert_field_errors(post_json(client, {"username": "amy", "email": "other@example.org"}), 409, {"username"})
    assert errors[0]["message"] == "is already taken"
    assert row_count() == 1


@pytest.mark.parametrize("email", ["amy@example.org", "AMY@EXAMPLE.ORG", "Amy@example.org"])
def test_duplicate_email_ignoring_case_is_409(client, make_user, email):
    make_user("amy", email="amy@example.org")
    assert_field_errors(post_json(client, {"username": "bob", "email": email}), 409, {"email"})
    assert row_count() == 1


def test_users_without_email_do_not_conflict(client, make_user):
    make_user("amy")
    make_user("bob", email=None)
    assert row_count() == 2


INVALID_BODIES = [
    ({}, {"username"}),
    ({"email": "a@example.org"}, {"username"}),
    ({"username": ""}, {"username"}),
    ({"username": "a" * 33}, {"username"}),
    ({"username": "Abc"}, {"username"}),
    ({"username": "a b"}, {"username"}),
    ({"username": "abc\n"}, {"username"}),
    ({"username": "\nabc"}, {"username"}),
    ({"username": "ab\x00c"}, {"username"}),
    ({"username": "_abc"}, {"username"}),
    ({"username": "abc/def"}, {"username"}),
    ({"username": "ábc"}, {"username"}),
    ({"username": 1}, {"username"}),
    ({"username": ["abc"]}, {"username"}),
    ({"username": {"name": "abc"}}, {"username"}),
    ({"username": True}, {"username"}),
    ({"username": None}, {"username"}),
    ({"username": "amy", "email": "not-an-email"}, {"email"}),
    ({"username": "amy", "email": "a@b"}, {"email"}),
    ({"username": "amy", "email": "@example.org"}, {"email"}),
    ({"username": "amy", "email": "a b@example.org"}, {"email"}),
    ({"username": "amy", "email": "a@@example.org"}, {"email"}),
    ({"username": "amy", "email": "a@example.org\n"}, {"email"}),
    ({"username": "amy", "email": "a@example..org"}, {"email"}),
    ({"username": "amy", "email": "a\x00@example.org"}, {"email"}),
    ({"username": "amy", "email": ""}, {"email"}),
    ({"username": "amy", "email": "a" * 243 + "@example.org"}, {"email"}),
    ({"username": "amy", "email": 5}, {"email"}),
    ({"username": "amy", "email": ["a@example.org"]}, {"email"}),
    ({"username": "amy", "full_name": "x" * 201}, {"full_name"}),
    ({"username": "amy", "full_name": "a\x00b"}, {"full_name"}),
    ({"username": "amy", "full_name": "a\nb"}, {"full_name"}),
    ({"username": "amy", "full_name": "a\tb"}, {"full_name"}),
    ({"username": "amy", "full_name": "\x1b[31mred"}, {"full_name"}),
    ({"username": "amy", "full_name": "a\x7f"}, {"full_name"}),
    ({"username": "amy", "full_name": 5}, {"full_name"}),
    ({"username": "amy", "full_name": False}, {"full_name"}),
    ({"username": "amy", "nickname": "x"}, {"nickname"}),
    ({"username": "amy", "Username": "x"}, {"Username"}),
    ({"username": "amy", "id": 7}, {"id"}),
    ({"username": "amy", "created_at": "2020-01-01T00:00:00Z"}, {"created_at"}),
    ({"username": "amy", "updated_at": "2020-01-01T00:00:00Z"}, {"updated_at"}),
    ({"username": "amy", "version": 9}, {"version"}),
    ({"username": "ABC", "email": "x", "full_name": "\x00"}, {"username", "email", "full_name"}),
    ([], {"(body)"}),
    ([{"username": "amy"}], {"(body)"}),
    ("amy", {"(body)"}),
    (1, {"(body)"}),
    (None, {"(body)"}),
    (True, {"(body)"}),
]


@pytest.mark.parametrize(("document", "fields"), INVALID_BODIES, ids=[repr(body)[:60] for body, _ in INVALID_BODIES])
def test_invalid_create_is_422_per_field(client, document, fields):
    assert_field_errors(post_json(client, document), 422, fields)
    assert row_count() == 0


@pytest.mark.parametrize("full_name", ["a\x85b", "\x9b31m"])
def test_full_name_rejects_c1_control_characters(client, full_name):
    assert_field_errors(post_json(client, {"username": "amy", "full_name": full_name}), 422, {"full_name"})


@pytest.mark.parametrize(
    "body",
    [
        b'{"username": "amy"',
        b"{'username': 'amy'}",
        b'{"username": "amy",}',
        b"username=amy",
        b"\xff\xfe{}",
        b'{"username": "\xff"}',
        b'{"username": "amy", "full_name": "\\ud800"}',
        b"NaN",
        b"[1] [2]",
        b"   ",
        b"\n",
    ],
)
def test_malformed_json_is_400(client, body):
    result = client.simulate_post("/users", body=body, headers={"Content-Type": JSON})
    assert_problem(result, 400)
    assert row_count() == 0


def test_empty_body_is_400(client):
    for headers in ({"Content-Type": JSON}, {"Content-Type": JSON, "Content-Length": "0"}):
        body = assert_problem(client.simulate_post("/users", headers=headers), 400)
        assert "empty" in body["detail"]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", "application/json-patch+json", "text/json", ""],
)
def test_other_content_types_are_415(client, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    result = client.simulate_post("/users", body=b'{"username": "amy"}', headers=headers)
    assert_problem(result, 415)
    assert row_count() == 0


def test_body_over_the_limit_with_content_length_is_413(small_client):
    fits = b'{"username": "amy"}'.ljust(300)
    too_big = b'{"username": "bob"}'.ljust(301)
    assert_problem(small_client.simulate_post("/users", body=too_big, headers={"Content-Type": JSON}), 413)
    assert_user(small_client.simulate_post("/users", body=fits, headers={"Content-Type": JSON}), 201)
    assert row_count() == 1


def test_declared_length_over_the_limit_is_413_without_reading(small_client):
    stream = CountingStream(b'{"username": "amy"}')
    result = small_client.simulate_post(
        "/users", headers={"Content-Type": JSON, "Content-Length": str(10**9)}, extras={"wsgi.input": stream}
    )
    assert_problem(result, 413)
    assert stream.bytes_read == 0


def test_body_over_the_limit_without_content_length_is_413(small_client):
    result, stream = post_without_length(small_client, b'{"username": "bob"}'.ljust(301))
    assert_problem(result, 413)
    result, stream = post_without_length(small_client, b'{"username": "bob", "full_name": "' + b"x" * 10**6 + b'"}')
    assert_problem(result, 413)
    assert stream.bytes_read <= 301, "the app read past the limit"
    result, _ = post_without_length(small_client, b'{"username": "amy"}'.ljust(300))
    assert assert_user(result, 201)["username"] == "amy"
    assert row_count() == 1


def test_empty_body_without_content_length_is_400(client):
    result, _ = post_without_length(client, b"")
    assert_problem(result, 400)


def test_the_default_body_limit_is_16_kib(client, settings):
    assert settings.max_body_bytes == 16 * 1024
    result = client.simulate_post("/users", body=b'{"username": "amy"}'.ljust(16 * 1024 + 1), headers={"Content-Type": JSON})
    assert_problem(result, 413)


# ---------------------------------------------------------------- PATCH /users/{id}


@pytest.mark.parametrize("content_type", [JSON, "application/merge-patch+json"])
def test_patch_changes_only_the_given_fields(client, make_user, content_type):
    user = make_user("amy", email="amy@example.org", full_name="Amy")
    make_user("bob", full_name="Bob")
    result = patch_json(client, user["id"], {"full_name": "Amy Z"}, content_type)
    updated = assert_user(result)
    assert result.headers["etag"] == '"2"'
    assert updated == {**user, "full_name": "Amy Z", "updated_at": updated["updated_at"]}
    assert updated["created_at"] == user["created_at"]
    assert datetime.fromisoformat(updated["updated_at"]) > datetime.fromisoformat(user["updated_at"])
    assert client.simulate_get(f"/users/{user['id']}").json == updated
    assert client.simulate_get("/users/2").json["full_name"] == "Bob"


def test_patch_username_and_email(client, make_user):
    user = make_user("amy", email="amy@example.org")
    updated = assert_user(patch_json(client, user["id"], {"username": "amy2", "email": "AMY@example.org"}))
    assert (updated["username"], updated["email"]) == ("amy2", "AMY@example.org")
    assert_user(patch_json(client, user["id"], {"username": "amy2"}))  # its own name is no conflict
    assert client.simulate_get(f"/users/{user['id']}").headers["etag"] == '"3"'


def test_patch_null_clears_email_and_full_name(client, make_user):
    user = make_user("amy", email="amy@example.org", full_name="Amy")
    updated = assert_user(patch_json(client, user["id"], {"email": None, "full_name": None}))
    assert (updated["email"], updated["full_name"], updated["username"]) == (None, None, "amy")


@pytest.mark.parametrize(
    ("document", "fields"),
    [
        ({}, {"(body)"}),
        ({"username": None}, {"username"}),
        ({"username": "Amy"}, {"username"}),
        ({"username": "a" * 33}, {"username"}),
        ({"email": "nope"}, {"email"}),
        ({"full_name": "x" * 201}, {"full_name"}),
        ({"full_name": "a\nb"}, {"full_name"}),
        ({"id": 2}, {"id"}),
        ({"version": 5}, {"version"}),
        ({"created_at": "2020-01-01T00:00:00Z"}, {"created_at"}),
        ({"full_name": "x", "nickname": "y"}, {"nickname"}),
        ([], {"(body)"}),
        ("x", {"(body)"}),
        (None, {"(body)"}),
    ],
)
def test_invalid_patch_is_422(client, make_user, document, fields):
    user = make_user("amy", full_name="Amy")
    assert_field_errors(patch_json(client, user["id"], document), 422, fields)
    after = client.simulate_get(f"/users/{user['id']}")
    assert after.json == user
    assert after.headers["etag"] == '"1"'


def test_patch_to_a_taken_username_is_409(client, make_user):
    make_user("amy", email="amy@example.org")
    bob = make_user("bob")
    assert_field_errors(patch_json(client, bob["id"], {"username": "amy"}), 409, {"username"})
    after = client.simulate_get(f"/users/{bob['id']}")
    assert (after.json, after.headers["etag"]) == (bob, '"1"')


def test_patch_to_a_taken_email_is_409(client, make_user):
    make_user("amy", email="amy@example.org")
    bob = make_user("bob")
    assert_field_errors(patch_json(client, bob["id"], {"email": "AMY@example.org"}), 409, {"email"})
    assert client.simulate_get(f"/users/{bob['id']}").json == bob


@pytest.mark.parametrize("headers", [{}, {"If-Match": '"1"'}, {"If-Match": "*"}])
def test_patch_unknown_user_is_404(client, headers):
    assert_problem(patch_json(client, 999, {"full_name": "x"}, **headers), 404)


@pytest.mark.parametrize("if_match", ['"1"', "*", '"7", "1"'])
def test_patch_with_a_matching_if_match(client, make_user, if_match):
    user = make_user("amy")
    result = patch_json(client, user["id"], {"full_name": "Amy"}, **{"If-Match": if_match})
    assert assert_user(result)["full_name"] == "Amy"
    assert result.headers["etag"] == '"2"'


@pytest.mark.parametrize(
    "if_match",
    [
        '"1"',  # stale after the first change
        'W/"2"',  # If-Match compares strongly
        '"abc"',
        '"02x"',
        '"99999999999999999999"',
        '"\xb2"',
    ],
)
def test_patch_with_a_stale_if_match_is_412(client, make_user, if_match):
    user = make_user("amy")
    current = patch_json(client, user["id"], {"full_name": "Amy"}).headers["etag"]
    assert current == '"2"'
    assert_problem(patch_json(client, user["id"], {"full_name": "Lost"}, **{"If-Match": if_match}), 412)
    after = client.simulate_get(f"/users/{user['id']}")
    assert (after.json["full_name"], after.headers["etag"]) == ("Amy", current)


def test_etags_chain_through_successive_patches(client, make_user):
    user = make_user("amy")
    etag = '"1"'
    for index in range(3):
        result = patch_json(client, user["id"], {"full_name": f"v{index}"}, **{"If-Match": etag})
        assert_user(result)
        assert result.headers["etag"] != etag
        etag = result.headers["etag"]
    assert client.simulate_get(f"/users/{user['id']}", headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"full_name": "x"}', "text/plain", 415),
        (b'{"full_name": "x"}', "application/json-patch+json", 415),
        (b'{"full_name": ', JSON, 400),
        (b"", JSON, 400),
    ],
)
def test_patch_body_errors(client, make_user, body, content_type, status):
    user = make_user("amy")
    result = client.simulate_patch(f"/users/{user['id']}", body=body, headers={"Content-Type": content_type})
    assert_problem(result, status)


def test_patch_body_over_the_limit_is_413(small_client, make_user):
    user = make_user("amy")
    result = small_client.simulate_patch(
        f"/users/{user['id']}", body=b'{"full_name": "x"}'.ljust(301), headers={"Content-Type": JSON}
    )
    assert_problem(result, 413)


# ---------------------------------------------------------------- DELETE /users/{id}


def test_delete_user(client, make_user):
    user = make_user("amy")
    keep = make_user("bob")
    result = client.simulate_delete(f"/users/{user['id']}")
    assert result.status_code == 204
    assert result.content == b""
    assert_problem(client.simulate_get(f"/users/{user['id']}"), 404)
    assert_problem(client.simulate_delete(f"/users/{user['id']}"), 404)
    assert client.simulate_get("/users").json == [keep]
    # The name is free again.
    assert_user(post_json(client, {"username": "amy"}), 201)


@pytest.mark.parametrize("if_match", ['"1"', "*"])
def test_delete_with_a_matching_if_match(client, make_user, if_match):
    user = make_user("amy")
    assert client.simulate_delete(f"/users/{user['id']}", headers={"If-Match": if_match}).status_code == 204
    assert row_count() == 0


def test_delete_with_a_stale_if_match_is_412_and_keeps_the_user(client, make_user):
    user = make_user("amy")
    patch_json(client, user["id"], {"full_name": "Amy"})
    assert_problem(client.simulate_delete(f"/users/{user['id']}", headers={"If-Match": '"1"'}), 412)
    assert client.simulate_get(f"/users/{user['id']}").status_code == 200
    assert_problem(client.simulate_delete("/users/999", headers={"If-Match": '"1"'}), 404)


# ---------------------------------------------------------------- 405, 404, Accept


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/users/1", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("POST", "/users/1", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("DELETE", "/users", {"GET", "HEAD", "POST"}),
        ("PATCH", "/users", {"GET", "HEAD", "POST"}),
        ("PUT", "/users", {"GET", "HEAD", "POST"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
        ("DELETE", "/readyz", {"GET", "HEAD"}),
        ("POST", "/openapi.json", {"GET"}),
    ],
)
def test_unsupported_methods_are_405_with_allow(client, make_user, method, path, allowed):
    make_user("amy")
    result = client.simulate_request(method, path, json={"username": "bob"})
    assert_problem(result, 405)
    allow = {name.strip() for name in result.headers["allow"].split(",")}
    assert allowed <= allow and method not in allow
    assert row_count() == 1


@pytest.mark.parametrize("path", ["/", "/nope", "/users/1/friends", "/user", "/users/abc", "/healthz/x"])
def test_unknown_paths_are_404(client, path):
    assert_problem(client.simulate_get(path), 404)


ERROR_REQUESTS = [
    ("GET", "/nope", {}, None, 404),
    ("GET", "/users/999", {}, None, 404),
    ("PUT", "/users/1", {}, None, 405),
    ("GET", "/users?limit=0", {}, None, 400),
    ("POST", "/users", {"Content-Type": JSON}, b"{", 400),
    ("POST", "/users", {"Content-Type": "text/plain"}, b"{}", 415),
    ("POST", "/users", {"Content-Type": JSON}, b"{}", 422),
    ("POST", "/users", {"Content-Type": JSON}, b'{"username": "amy"}', 409),
    ("PATCH", "/users/1", {"Content-Type": JSON, "If-Match": '"9"'}, b'{"full_name": "x"}', 412),
]


@pytest.mark.parametrize("accept", [None, "text/html", "application/xml", "*/*", "application/json", "text/plain;q=0.5, image/png"])
@pytest.mark.parametrize(("method", "path", "headers", "body", "status"), ERROR_REQUESTS, ids=[f"{r[0]}-{r[4]}" for r in ERROR_REQUESTS])
def test_errors_are_problem_json_whatever_the_accept_header(client, make_user, accept, method, path, headers, body, status):
    make_user("amy")
    if accept is not None:
        headers = {**headers, "Accept": accept}
    path, _, query = path.partition("?")
    assert_problem(client.simulate_request(method, path, query_string=query, headers=headers, body=body), status)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError('Traceback: SELECT password FROM users -- psycopg2 File "models.py"'),
        peewee.ProgrammingError('syntax error at or near "SELECT" DETAIL: constraint users_pkey'),
    ],
    ids=["RuntimeError", "ProgrammingError"],
)
def test_unexpected_errors_are_500_problems_without_details(client, make_user, monkeypatch, caplog, error):
    make_user("amy")

    def fail(**kwargs):
        raise error

    monkeypatch.setattr(models, "list_users", fail)
    body = assert_problem(client.simulate_get("/users", headers={"Accept": "text/html"}), 500)
    assert "logged" in body["detail"]
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records), "not logged"
    monkeypatch.undo()
    assert client.simulate_get("/users").status_code == 200


# ---------------------------------------------------------------- health, readiness, database down


def test_healthz_and_readyz(client):
    for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
        result = client.simulate_get(path)
        assert result.status_code == 200
        assert result.headers["content-type"] == JSON
        assert result.json == {"status": status}
        head = client.simulate_head(path)
        assert (head.status_code, head.content) == (200, b"")


UNAVAILABLE_REQUESTS = [
    ("GET", "/readyz", None),
    ("GET", "/users", None),
    ("GET", "/users/1", None),
    ("POST", "/users", {"username": "amy"}),
    ("PATCH", "/users/1", {"full_name": "x"}),
    ("DELETE", "/users/1", None),
]


@pytest.mark.parametrize(("method", "path", "document"), UNAVAILABLE_REQUESTS)
def test_database_down_is_503_with_retry_after(dead_client, method, path, document):
    result = dead_client.simulate_request(method, path, json=document)
    assert_problem(result, 503)
    assert int(result.headers["retry-after"]) >= 1
    head = dead_client.simulate_head("/readyz")
    assert_problem(head, 503, head=True)
    assert head.headers["retry-after"] == result.headers["retry-after"]


def test_liveness_and_validation_need_no_database(dead_client):
    result = dead_client.simulate_get("/healthz")
    assert (result.status_code, result.json) == (200, {"status": "ok"})
    assert dead_client.simulate_get("/openapi.json").status_code == 200
    assert_field_errors(dead_client.simulate_post("/users", json={"username": "A"}), 422, {"username"})


def test_a_dropped_connection_is_one_503_then_the_app_reconnects(client, make_user, database_url):
    make_user("amy")
    pid = models.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    admin = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            assert cursor.fetchone() == (True,)
    finally:
        admin.close()
    result = client.simulate_get("/users")
    assert_problem(result, 503)
    assert result.headers["retry-after"] == "1"
    result = client.simulate_get("/users")
    assert result.status_code == 200
    assert [user["username"] for user in result.json] == ["amy"]


def test_rebinding_forgets_the_previous_binding(settings):
    separator = "&" if "?" in settings.database_url else "?"
    create_app(replace(settings, database_url=settings.database_url + separator + "client_encoding=LATIN1"))
    try:
        client = testing.TestClient(create_app(settings))
        models.db.execute_sql("TRUNCATE users RESTART IDENTITY")
        assert models.db.execute_sql("SHOW client_encoding").fetchone() == ("UTF8",)
        assert_user(post_json(client, {"username": "amy", "full_name": "😀"}), 201)
    finally:
        forget_binding()


# ---------------------------------------------------------------- OpenAPI


def test_openapi_document_is_served(client, settings):
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"] == JSON
    document = result.json
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {"/users", "/users/{user_id}", "/healthz", "/readyz", "/openapi.json"}
    limit = document["paths"]["/users"]["get"]["parameters"][0]
    assert limit["schema"]["maximum"] == settings.page_max
    assert limit["schema"]["default"] == settings.page_default
