"""PATCH /users/{id}: merge-patch updates, If-Match, conflicts."""

from __future__ import annotations

from datetime import datetime

import pytest

from harness.checks import (
    JSON,
    assert_field_errors,
    assert_problem,
    assert_user,
    patch_json,
)


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


def test_an_empty_merge_patch_changes_nothing(client, make_user):
    # RFC 7396: {} is a patch with no changes; the answer is the user as it is, version and all.
    user = make_user("amy", full_name="Amy")
    before = client.simulate_get(f"/users/{user['id']}")
    for content_type in ("application/json", "application/merge-patch+json"):
        result = patch_json(client, user["id"], {}, content_type=content_type)
        assert assert_user(result) == before.json
        assert result.headers["etag"] == before.headers["etag"] == '"1"'
    assert_problem(patch_json(client, user["id"], {}, **{"If-Match": '"2"'}), 412)
    assert_problem(patch_json(client, 999, {}), 404)


@pytest.mark.parametrize(
    ("document", "fields"),
    [
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
    result = small_client.simulate_patch(f"/users/{user['id']}", body=b'{"full_name": "x"}'.ljust(301), headers={"Content-Type": JSON})
    assert_problem(result, 413)
