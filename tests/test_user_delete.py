"""DELETE /users/{id}, with and without If-Match."""

from __future__ import annotations

import pytest

from harness.checks import (
    assert_problem,
    assert_user,
    patch_json,
    post_json,
)


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
def test_delete_with_a_matching_if_match(client, make_user, if_match, users):
    user = make_user("amy")
    assert client.simulate_delete(f"/users/{user['id']}", headers={"If-Match": if_match}).status_code == 204
    assert users.count() == 0


def test_delete_with_a_stale_if_match_is_412_and_keeps_the_user(client, make_user):
    user = make_user("amy")
    patch_json(client, user["id"], {"full_name": "Amy"})
    assert_problem(client.simulate_delete(f"/users/{user['id']}", headers={"If-Match": '"1"'}), 412)
    assert client.simulate_get(f"/users/{user['id']}").status_code == 200
    assert_problem(client.simulate_delete("/users/999", headers={"If-Match": '"1"'}), 404)
