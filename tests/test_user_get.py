"""GET and HEAD /users/{id}: the user, its ETag, conditional GETs, id spellings."""

from __future__ import annotations

import pytest

from harness.checks import (
    JSON,
    assert_problem,
    assert_user,
    patch_json,
)


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
