"""HTTP resources: parse and check the request, call a query in `models`, serialize."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

import falcon
import orjson
from falcon.routing import BaseConverter

from database import Database
from models import MAX_ID
from preconditions import Conditions, precondition_failed
from problems import Problem, invalid
from queries import Conflict, UserStore
from schemas import USERNAME_PREFIX_PATTERN, matches, validate_create, validate_update
from settings import Settings

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
LIST_PARAMS = frozenset(("limit", "after", "username_prefix"))
DIGITS = re.compile(r"[0-9]{1,19}")
EMPTY_SEGMENTS = re.compile(r"//+")
USER_ID = re.compile(r"[1-9][0-9]{0,18}")
# A body is a flat object; this much nesting is far past any valid one.
MAX_NESTING = 32


def _json(resp: falcon.Response, document: Any) -> None:
    resp.data = orjson.dumps(document)
    resp.content_type = falcon.MEDIA_JSON


def _etag(version: int) -> str:
    return f'"{version}"'


def _send_user(resp: falcon.Response, user: dict[str, Any], version: int) -> None:
    resp.etag = _etag(version)
    _json(resp, user)


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate key")
    return document


# orjson keeps the last of repeated keys and cannot say it saw any; this second, stdlib
# parse (about 2 µs for a typical body) only looks for them. It runs after orjson and the
# nesting check, so it never meets input that orjson refused or that nests deeply.
_DUPLICATE_KEY_CHECK = json.JSONDecoder(object_pairs_hook=_refuse_duplicate_keys)


class BodyReader:
    """Reads a JSON object body, refusing oversized bodies before reading them."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def __call__(self, req: falcon.Request, media_types: tuple[str, ...] = (JSON,)) -> Any:
        media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
        if media_type not in media_types:
            raise Problem(falcon.HTTP_415, f"Send the body as {' or '.join(media_types)}.")
        if req.content_length is not None and req.content_length > self.max_bytes:
            raise self._too_large()
        try:
            if req.content_length is not None:
                raw = req.bounded_stream.read()
            else:
                # Chunked: no length up front, so read at most one byte past the limit.
                raw = req.stream.read(self.max_bytes + 1)
        except TimeoutError:  # the client stopped sending (see pre_request in gunicorn.conf.py)
            raise Problem(falcon.HTTP_408, "The request body did not arrive in time.") from None
        except Exception:  # the server's reader failed: bad chunked framing, or the client left
            raise Problem(falcon.HTTP_400, "The request body could not be read; check its framing.") from None
        if len(raw) > self.max_bytes:
            raise self._too_large()
        if req.content_length is not None and len(raw) < req.content_length:
            raise Problem(falcon.HTTP_400, "The request body is shorter than its Content-Length.")
        if not raw.strip():
            raise Problem(falcon.HTTP_400, "The request body is empty; send a JSON object.")
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Problem(falcon.HTTP_400, "The request body is not valid JSON.") from None
        if _nested_deeper_than(document, MAX_NESTING):
            # Valid bodies are flat; validating a deep one would exhaust the recursion limit.
            raise Problem(falcon.HTTP_400, f"The request body nests deeper than {MAX_NESTING} levels.")
        try:
            _DUPLICATE_KEY_CHECK.decode(raw.decode())
        except ValueError:
            # Another parser in front of this service may have kept the first value, not the last.
            raise Problem(falcon.HTTP_400, "The request body repeats a key in an object.") from None
        return document

    def _too_large(self) -> Problem:
        return Problem(falcon.HTTP_413, f"The body must not exceed {self.max_bytes} bytes.")


def _nested_deeper_than(document: Any, limit: int) -> bool:
    """Whether arrays and objects in `document` nest more than `limit` levels (no recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return False


def _whole_number(req: falcon.Request, name: str, minimum: int, maximum: int, default: int | None = None) -> int | None:
    """A query parameter of plain ASCII digits within bounds (Python's int() also takes "+1", "1_0", "١")."""
    raw = req.params.get(name)
    if raw is None:
        return default
    if not isinstance(raw, str):
        raise Problem(falcon.HTTP_400, f"Give {name} once.")
    if not DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise Problem(falcon.HTTP_400, f"{name} must be a whole number from {minimum} to {maximum}.")
    return int(raw)


class CollapseEmptySegments:
    """A path with empty segments is the path without them, on every route: `//users` is
    `/users`, `/users//1` is `/users/1` (routing alone took the first, not the second)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if "//" in req.path:
            req.path = EMPTY_SEGMENTS.sub("/", req.path)


class UserIdConverter(BaseConverter):
    """Path ids as PostgreSQL bigint keys: plain digits, 1 to 2**63-1; anything else is no route (404)."""

    def convert(self, value: str) -> int | None:
        if not USER_ID.fullmatch(value):
            return None
        number = int(value)
        return number if number <= MAX_ID else None


def _conflict(exc: Conflict) -> Problem:
    return Problem(
        falcon.HTTP_409,
        f"Another user already has this {exc.field}.",
        errors=[{"field": exc.field, "message": "is already taken"}],
    )


class UserCollection:
    def __init__(self, users: UserStore, settings: Settings, read_body: BodyReader) -> None:
        self.users = users
        self.page_default = settings.page_default
        self.page_max = settings.page_max
        self.read_body = read_body

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        unknown = sorted(set(req.params) - LIST_PARAMS)
        if unknown:
            raise Problem(falcon.HTTP_400, f"Unknown query parameter(s): {', '.join(unknown)[:200]}. Use limit, after or username_prefix.")
        limit = _whole_number(req, "limit", 1, self.page_max, self.page_default) or self.page_default
        after = _whole_number(req, "after", 0, MAX_ID)
        prefix = req.params.get("username_prefix")
        if prefix is not None and not (isinstance(prefix, str) and matches(USERNAME_PREFIX_PATTERN, prefix)):
            raise Problem(falcon.HTTP_400, "username_prefix must be 1 to 32 of: lowercase letters, digits, '_', '.', '-'.")
        # Checked once the request is known to be valid (RFC 9110 §13.2.1). The collection
        # exists and has no ETag: only `*` matches it.
        if not Conditions.of(req).check(req, None):
            resp.status = falcon.HTTP_304
            return
        # One row more than asked tells whether a next page exists, without a COUNT.
        users = self.users.list_page(limit=limit + 1, after=after, username_prefix=prefix)
        if len(users) > limit:
            users = users[:limit]
            query = {"limit": limit, "after": users[-1]["id"]}
            if prefix:
                query["username_prefix"] = prefix
            # The route's own path, not the request's: "//users" would make "<//users?...>", a link to the host "users".
            resp.append_header("Link", f'<{req.root_path}/users?{urlencode(query)}>; rel="next"')
        _json(resp, users)

    on_head = on_get

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        conditions = Conditions.of(req)
        body = self.read_body(req)
        errors = validate_create(body)
        if errors:
            raise invalid(errors)
        conditions.check(req, None)
        try:
            user, version = self.users.create(body)
        except Conflict as exc:
            raise _conflict(exc) from None
        resp.status = falcon.HTTP_201
        resp.location = f"{req.root_path}/users/{user['id']}"
        _send_user(resp, user, version)


class UserItem:
    def __init__(self, users: UserStore, read_body: BodyReader) -> None:
        self.users = users
        self.read_body = read_body

    def on_get(self, req: falcon.Request, resp: falcon.Response, user_id: int) -> None:
        found = self.users.get(user_id)
        if found is None:
            raise Problem(falcon.HTTP_404, f"There is no user {user_id}.")
        user, version = found
        if not Conditions.of(req).check(req, str(version)):
            resp.etag = _etag(version)
            resp.status = falcon.HTTP_304
            return
        _send_user(resp, user, version)

    on_head = on_get

    def on_patch(self, req: falcon.Request, resp: falcon.Response, user_id: int) -> None:
        versions = Conditions.of(req).versions()
        body = self.read_body(req, (JSON, MERGE_PATCH))
        errors = validate_update(body)
        if errors:
            raise invalid(errors)
        if versions.refuse_existing:
            raise self._missing_or_changed(user_id)
        try:
            updated = self.users.update(user_id, body, versions)
        except Conflict as exc:
            raise _conflict(exc) from None
        if updated is None:
            raise self._missing_or_changed(user_id)
        _send_user(resp, *updated)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, user_id: int) -> None:
        versions = Conditions.of(req).versions()
        if versions.refuse_existing or not self.users.delete(user_id, versions):
            raise self._missing_or_changed(user_id)
        resp.status = falcon.HTTP_204

    def _missing_or_changed(self, user_id: int) -> Problem:
        """Why a conditional write matched no row: 412 when the user exists, else 404."""
        if self.users.exists(user_id):
            return precondition_failed()
        return Problem(falcon.HTTP_404, f"There is no user {user_id}.")


class Health:
    """Liveness: the process answers; no database involved."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, {"status": "ok"})

    on_head = on_get


class Ready:
    """Readiness: the database answers with the schema this code needs (else 503, through the error handlers)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.db.ping()
        _json(resp, {"status": "ready"})

    on_head = on_get


class OpenAPIDocument:
    def __init__(self, document: dict[str, Any]) -> None:
        self.body = orjson.dumps(document)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = self.body
        resp.content_type = falcon.MEDIA_JSON

    on_head = on_get
