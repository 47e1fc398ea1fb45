"""The HTTP contract's finer points: conditional requests exactly as RFC 9110 §13 says,
links that are never scheme-relative, RFC 9110 reason phrases, one rule for "the same
email", what a display name may hold, media types per method, repeated JSON keys."""

from __future__ import annotations

import socket
import unicodedata

import orjson
import pytest

from harness.checks import JSON, assert_field_errors, assert_problem, assert_user, next_link, patch_json, post_json
from harness.processes import Gunicorn

MERGE_PATCH = "application/merge-patch+json"

# ------------------------------------------------------------------ conditional requests


@pytest.mark.parametrize(
    ("if_match", "status"),
    [
        ('"1"', 200),
        ('"01"', 412),  # strong comparison: another opaque tag, even if the number is the same
        ('W/"1"', 412),  # a weak tag never matches strongly
        ('"7", "1"', 200),
        ('"7",, "1"', 200),  # empty list elements are allowed
        ("*", 200),
        ("", 412),  # an empty list: no tag matches
        ('"99999999999999999999"', 412),  # past bigint: no version, no database error
    ],
)
def test_if_match_compares_strongly_on_every_method(client, make_user, if_match, status):
    make_user("amy")
    result = client.simulate_get("/users/1", headers={"If-Match": if_match})
    assert result.status_code == status, result.text
    patched = patch_json(client, 1, {"full_name": "x"}, **{"If-Match": if_match})
    assert patched.status_code == status, patched.text
    if status == 412:
        assert_problem(patched, 412)
        assert client.simulate_get("/users/1").headers["etag"] == '"1"'


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
@pytest.mark.parametrize("value", ["1", '"1', '"a"b', '*, "1"', 'w/"1"'])
def test_malformed_conditions_are_400(client, make_user, header, value):
    make_user("amy")
    for result in (client.simulate_get("/users/1", headers={header: value}), client.simulate_delete("/users/1", headers={header: value})):
        assert header in assert_problem(result, 400)["detail"]
    assert client.simulate_get("/users/1").status_code == 200


def test_if_none_match_on_unsafe_methods_is_412(client, make_user):
    make_user("amy")
    for value in ('"1"', 'W/"1"', "*"):  # weak comparison: W/"1" matches "1"
        assert_problem(patch_json(client, 1, {"full_name": "x"}, **{"If-None-Match": value}), 412)
        assert_problem(client.simulate_delete("/users/1", headers={"If-None-Match": value}), 412)
    assert_user(patch_json(client, 1, {"full_name": "x"}, **{"If-None-Match": '"7"'}))
    assert client.simulate_delete("/users/1", headers={"If-None-Match": '"1"'}).status_code == 204  # now version 2
    # A missing user is a 404 whatever the conditions (RFC 9110 §13.2.1).
    assert_problem(client.simulate_delete("/users/1", headers={"If-None-Match": "*"}), 404)


def test_if_none_match_on_get_is_304_with_weak_comparison(client, make_user):
    make_user("amy")
    for value in ('"1"', 'W/"1"', '"5", W/"1"', "*"):
        result = client.simulate_get("/users/1", headers={"If-None-Match": value})
        assert (result.status_code, result.headers["etag"], result.content) == (304, '"1"', b"")
    assert client.simulate_get("/users/1", headers={"If-None-Match": '"01"'}).status_code == 200


def test_the_collection_has_no_etag_only_star_matches_it(client, make_user):
    make_user("amy")
    assert client.simulate_get("/users", headers={"If-None-Match": "*"}).status_code == 304
    assert_problem(client.simulate_get("/users", headers={"If-Match": '"1"'}), 412)
    assert client.simulate_get("/users", headers={"If-Match": "*"}).status_code == 200
    assert_problem(_post(client, {"username": "bob"}, {"If-None-Match": "*"}), 412)
    assert _post(client, {"username": "bob"}, {"If-Match": "*"}).status_code == 201


def _post(client, document, headers):
    return client.simulate_post("/users", body=orjson.dumps(document), headers={"Content-Type": JSON, **headers})


def test_the_version_never_overflows(client, make_user, db):
    make_user("amy")
    db.execute_sql("UPDATE users SET version = 2147483647 WHERE id = 1")  # a 4-byte integer's last value
    result = patch_json(client, 1, {"full_name": "x"}, **{"If-Match": '"2147483647"'})
    assert assert_user(result) and result.headers["etag"] == '"2147483648"'


# ------------------------------------------------------------------ paths and links


@pytest.mark.parametrize("path", ["/users", "//users", "///users", "/users/"])
def test_links_are_never_scheme_relative(client, make_user, path):
    make_user("amy")
    make_user("bob")
    result = client.simulate_get(path, query_string="limit=1")
    assert result.status_code == 200
    assert next_link(result) == "/users?limit=1&after=1"


@pytest.mark.parametrize("path", ["/users/1", "//users/1", "/users//1", "//users//1/"])
def test_empty_segments_are_answered_the_same_everywhere(client, make_user, path):
    make_user("amy")
    assert client.simulate_get(path).json["username"] == "amy"


# ------------------------------------------------------------------ reason phrases


def test_titles_and_status_lines_are_rfc_9110_reason_phrases(small_client):
    invalid = post_json(small_client, {"username": "Bad Name"})
    assert invalid.status == "422 Unprocessable Content"
    assert assert_problem(invalid, 422)["title"] == "Unprocessable Content"
    too_large = post_json(small_client, {"username": "x" * 400})
    assert too_large.status == "413 Content Too Large"
    assert assert_problem(too_large, 413)["title"] == "Content Too Large"


@pytest.mark.e2e
def test_gunicorns_own_answers_use_the_same_phrases(database_url, tmp_path):
    with Gunicorn({"DATABASE_URL": database_url}, "--workers", "1", log_path=tmp_path / "g.log") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = raw.recv(65536).decode()
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 414 URI Too Long\r\n"), head
    assert orjson.loads(body)["title"] == "URI Too Long"


# ------------------------------------------------------------------ the same email


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("kim@example.org", "\u212aim@example.org"),  # U+212A KELVIN SIGN is "K" under NFC
        ("\u212aim@example.org", "kim@example.org"),
        ("zo\u00eb@example.org", "zoe\u0308@example.org"),  # NFC and NFD spellings
        ("ZOE\u0308@example.org", "zo\u00eb@example.org"),
    ],
)
def test_one_address_spelled_two_ways_is_one_user(client, first, second):
    created = assert_user(post_json(client, {"username": "first", "email": first}), 201)
    assert_field_errors(post_json(client, {"username": "second", "email": second}), 409, {"email"})
    assert created["email"] == unicodedata.normalize("NFC", first)  # stored in NFC


# ------------------------------------------------------------------ display names


@pytest.mark.parametrize(
    ("full_name", "status"),
    [
        ("Ada Lovelace", 201),
        ("\U0001f469\u200d\U0001f4bb", 201),  # woman technologist: an emoji ZWJ sequence
        ("\U0001f44d\U0001f3fd", 201),  # skin-tone modifier
        ("\u2764\ufe0f", 201),  # variation selector (a mark)
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", 201),  # Persian, with ZERO WIDTH NON-JOINER
        ("\u202eexe.png", 422),  # RIGHT-TO-LEFT OVERRIDE
        ("a\u2066b\u2069", 422),  # bidi isolates
        ("a\u200bb", 422),  # ZERO WIDTH SPACE
        ("a\u2060b", 422),  # WORD JOINER
        ("\ufeffAda", 422),  # BOM
        ("Ada\u00ad", 422),  # SOFT HYPHEN
        ("Ada\U000e0041", 422),  # a TAG character: invisible text
        ("Ada\u2028", 422),  # LINE SEPARATOR
    ],
)
def test_what_a_display_name_may_hold(client, full_name, status):
    result = post_json(client, {"username": "holder", "full_name": full_name})
    if status == 201:
        assert assert_user(result, 201)["full_name"] == full_name
    else:
        assert_field_errors(result, 422, {"full_name"})


# ------------------------------------------------------------------ media types, empty patch


def test_post_takes_only_application_json(client):
    result = post_json(client, {"username": "amy"}, content_type=MERGE_PATCH)
    assert "application/json" in assert_problem(result, 415)["detail"]
    assert client.simulate_get("/users").json == []


# ------------------------------------------------------------------ repeated keys


@pytest.mark.parametrize(
    "body",
    [
        b'{"username":"BAD!","username":"ok"}',
        b'{"username":"ok","username":"ok"}',
        b'{"username":"ok","full_name":"a","full_name":null}',
    ],
)
def test_a_repeated_key_is_400(client, make_user, body):
    assert "repeats a key" in assert_problem(client.simulate_post("/users", body=body, headers={"Content-Type": JSON}), 400)["detail"]
    make_user("amy")
    result = client.simulate_patch("/users/1", body=b'{"full_name":"a","full_name":"b"}', headers={"Content-Type": JSON})
    assert_problem(result, 400)
    assert client.simulate_get("/users").json[0]["full_name"] is None
