"""GET /users: pages, limits, keyset paging, the username prefix."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from harness.checks import (
    JSON,
    PUBLIC_FIELDS,
    assert_problem,
    next_link,
    walk,
)


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


def test_default_page_is_100_and_maximum_1000(client, make_user, settings, db):
    assert (settings.page_default, settings.page_max) == (100, 1000)
    db.execute_sql("INSERT INTO users (username) SELECT 'u' || g FROM generate_series(1, 1001) g")
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


def test_a_page_holds_each_user_byte_for_byte_as_get_sends_it(client, make_user, db):
    """A user in a page is the same text as GET /users/{id} sends (awkward characters and a
    time with no fractional second included)."""
    make_user("plain")
    make_user("quoted", full_name='Say "hi" \\ back', email='"odd"@example.org')
    make_user("unicode", full_name="Zoë 👩‍💻 Ω")
    whole = make_user("whole")
    # A time with no fractional second: orjson writes no ".000000" for it.
    db.execute_sql("UPDATE users SET created_at = date_trunc('second', created_at) - interval '1 day' WHERE id = %s", (whole["id"],))
    page = client.simulate_get("/users", params={"limit": 3})
    rest = client.simulate_get("/users", params={"limit": 3, "after": 3})
    items = [client.simulate_get(f"/users/{user_id}").content for user_id in (1, 2, 3, 4)]
    assert page.content == b"[" + b",".join(items[:3]) + b"]"
    assert rest.content == b"[" + items[3] + b"]"
    assert "." not in rest.json[0]["created_at"]
