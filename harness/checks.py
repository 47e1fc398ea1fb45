"""Assertions and request helpers that the tests share: one definition each.

They work on falcon.testing results (`status_code`, `headers`, `json`, `text`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from models import User, public_names

JSON = "application/json"
PROBLEM = "application/problem+json"
PUBLIC_FIELDS = set(public_names(User))
# Nothing of the implementation may reach a client in an error body.
LEAKS = ("Traceback", 'File "', "psycopg2", "peewee", "SELECT ", "INSERT INTO", 'UPDATE "', "DETAIL:", "constraint", "127.0.0.1", "refused")
# Well-formed but issued by nobody: checking it reaches the database like a real one.
UNKNOWN_TOKEN = "orgapi_1_" + "A" * 43
NEXT_LINK = re.compile(r'<(/users\?[^>]*)>; rel="next"')


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(result, status: int | set[int], *, head: bool = False) -> dict:
    """An error response: the status (or one of them), problem+json, and a well-formed body (none for HEAD)."""
    statuses = {status} if isinstance(status, int) else status
    assert result.status_code in statuses, (result.status_code, result.text[:300])
    assert result.headers["content-type"] == PROBLEM, result.headers
    if head:
        assert result.content == b""
        return {}
    body = result.json
    assert set(body) <= {"type", "title", "status", "detail", "errors"}, body
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    assert type(body["status"]) is int and body["status"] == result.status_code
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


def post_json(client, document, content_type: str = JSON, path: str = "/users"):
    return client.simulate_post(path, body=orjson.dumps(document), headers={"Content-Type": content_type})


def patch_json(client, user_id, document, content_type: str = JSON, **headers):
    return client.simulate_patch(f"/users/{user_id}", body=orjson.dumps(document), headers={"Content-Type": content_type, **headers})


def next_link(result) -> str | None:
    link = result.headers.get("link")
    if link is None:
        return None
    match = NEXT_LINK.fullmatch(link)
    assert match, link
    return match.group(1)


def walk(client, url: str, between_pages: Callable[[list[dict]], None] = lambda page: None, max_pages: int = 200) -> list[list[dict]]:
    """Every page from `url` on, following Link rel="next" to the end; `between_pages(page)` runs after each but the last."""
    pages: list[list[dict]] = []
    while url is not None:
        path, _, query = url.partition("?")
        result = client.simulate_get(path, query_string=query)
        assert result.status_code == 200, result.text
        assert result.headers["content-type"] == JSON
        pages.append(result.json)
        url = next_link(result)
        assert len(pages) < max_pages, "the Link chain does not end"
        if url is not None:
            between_pages(result.json)
    return pages
