"""POST /users: creating users, validation, conflicts, body framing and limits."""

from __future__ import annotations

import io
from datetime import datetime

import pytest
from falcon import testing

from harness.checks import (
    JSON,
    assert_field_errors,
    assert_problem,
    assert_user,
    post_json,
)


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
def test_create_with_only_a_username(client, content_type, users):
    user = assert_user(post_json(client, {"username": "amy"}, content_type), 201)
    assert (user["email"], user["full_name"]) == (None, None)
    assert users.count() == 1


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


def test_duplicate_username_is_409(client, make_user, users):
    make_user("amy")
    errors = assert_field_errors(post_json(client, {"username": "amy", "email": "other@example.org"}), 409, {"username"})
    assert errors[0]["message"] == "is already taken"
    assert users.count() == 1


@pytest.mark.parametrize("email", ["amy@example.org", "AMY@EXAMPLE.ORG", "Amy@example.org"])
def test_duplicate_email_ignoring_case_is_409(client, make_user, email, users):
    make_user("amy", email="amy@example.org")
    assert_field_errors(post_json(client, {"username": "bob", "email": email}), 409, {"email"})
    assert users.count() == 1


def test_users_without_email_do_not_conflict(client, make_user, users):
    make_user("amy")
    make_user("bob", email=None)
    assert users.count() == 2


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
def test_invalid_create_is_422_per_field(client, document, fields, users):
    assert_field_errors(post_json(client, document), 422, fields)
    assert users.count() == 0


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
def test_malformed_json_is_400(client, body, users):
    result = client.simulate_post("/users", body=body, headers={"Content-Type": JSON})
    assert_problem(result, 400)
    assert users.count() == 0


def test_empty_body_is_400(client):
    for headers in ({"Content-Type": JSON}, {"Content-Type": JSON, "Content-Length": "0"}):
        body = assert_problem(client.simulate_post("/users", headers=headers), 400)
        assert "empty" in body["detail"]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json-patch+json",
        "text/json",
        "",
    ],
)
def test_other_content_types_are_415(client, content_type, users):
    headers = {} if content_type is None else {"Content-Type": content_type}
    result = client.simulate_post("/users", body=b'{"username": "amy"}', headers=headers)
    assert_problem(result, 415)
    assert users.count() == 0


def test_body_over_the_limit_with_content_length_is_413(small_client, users):
    fits = b'{"username": "amy"}'.ljust(300)
    too_big = b'{"username": "bob"}'.ljust(301)
    assert_problem(small_client.simulate_post("/users", body=too_big, headers={"Content-Type": JSON}), 413)
    assert_user(small_client.simulate_post("/users", body=fits, headers={"Content-Type": JSON}), 201)
    assert users.count() == 1


def test_declared_length_over_the_limit_is_413_without_reading(small_client):
    stream = CountingStream(b'{"username": "amy"}')
    result = small_client.simulate_post(
        "/users", headers={"Content-Type": JSON, "Content-Length": str(10**9)}, extras={"wsgi.input": stream}
    )
    assert_problem(result, 413)
    assert stream.bytes_read == 0


def test_body_over_the_limit_without_content_length_is_413(small_client, users):
    result, stream = post_without_length(small_client, b'{"username": "bob"}'.ljust(301))
    assert_problem(result, 413)
    result, stream = post_without_length(small_client, b'{"username": "bob", "full_name": "' + b"x" * 10**6 + b'"}')
    assert_problem(result, 413)
    assert stream.bytes_read <= 301, "the app read past the limit"
    result, _ = post_without_length(small_client, b'{"username": "amy"}'.ljust(300))
    assert assert_user(result, 201)["username"] == "amy"
    assert users.count() == 1


def test_empty_body_without_content_length_is_400(client):
    result, _ = post_without_length(client, b"")
    assert_problem(result, 400)


def test_the_default_body_limit_is_16_kib(client, settings):
    assert settings.max_body_bytes == 16 * 1024
    result = client.simulate_post("/users", body=b'{"username": "amy"}'.ljust(16 * 1024 + 1), headers={"Content-Type": JSON})
    assert_problem(result, 413)
