"""One error shape for every response: RFC 9457 problem details as JSON.

Whatever the request's Accept header, errors are `application/problem+json`. Details of
unexpected failures go to the log, never to the client.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import falcon
import orjson
import peewee

from database import Database, Misconfigured, SchemaNotReady, StatementFailed, first_line

log = logging.getLogger("orgapi")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = "1"
# Misconfigurations gunicorn's master logged at start (gunicorn.conf.py). Its workers are
# forked later and inherit this set, so they do not log those again: the log says it once.
SAID_AT_START: set[str] = set()


class Problem(falcon.HTTPError):
    """An HTTP error with a detail for people and, for bad fields, one entry per field."""

    def __init__(
        self,
        status: str,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, description=detail, headers=headers)
        self.errors = errors


def invalid(errors: list[dict[str, str]], detail: str = "The request body is not valid.") -> Problem:
    return Problem(falcon.HTTP_422, detail, errors=errors)


# RFC 9110 §15 renamed these; Python's http.HTTPStatus (3.11) and Falcon still carry older names.
_RFC_9110_PHRASES = {413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable", 422: "Unprocessable Content"}


def reason_phrase(status: int) -> str:
    """RFC 9110's reason phrase: the status line's and the problem's title."""
    return _RFC_9110_PHRASES.get(status) or HTTPStatus(status).phrase


_DEFAULT_DETAILS = {
    404: "Nothing is at this path.",
    405: "This path does not take this method; see the Allow header.",
}


def problem_body(status: int, detail: str | None = None, errors: list[dict[str, str]] | None = None) -> bytes:
    body: dict[str, Any] = {
        "type": "about:blank",
        # With type "about:blank", RFC 9457 asks for the status phrase as the title.
        "title": reason_phrase(status),
        "status": status,
    }
    detail = detail or _DEFAULT_DETAILS.get(status)
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    return orjson.dumps(body)


def serialize(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    resp.status = f"{error.status_code} {reason_phrase(error.status_code)}"
    resp.data = problem_body(error.status_code, error.description, getattr(error, "errors", None))
    resp.content_type = PROBLEM_JSON


def write_server_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's own error answer (bad request line, oversized headers, ...), as problem+json.

    gunicorn has no hook for these and writes an HTML page; gunicorn.conf.py puts this
    function in place of `gunicorn.util.write_error`, which its workers call by name.
    """
    from gunicorn.util import write_nonblock

    body = problem_body(status, message or None)
    head = (
        f"HTTP/1.1 {status} {reason_phrase(status)}\r\n"
        f"Connection: close\r\nContent-Type: {PROBLEM_JSON}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    write_nonblock(sock, head.encode("latin-1") + body)


_STATEMENT_DETAILS = {
    "timeout": "The database did not finish this request within its time limit; retry shortly.",
    "deadlock": "The request collided with a concurrent one (a deadlock) and was not applied; retry it.",
    "serialization": "The request collided with a concurrent one and was not applied; retry it.",
}


def install(app: falcon.App, db: Database) -> None:
    """problem+json for every error; database failures answered 503 and their connection discarded."""
    causes_logged = set(SAID_AT_START)

    def database_unavailable(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
        db.discard()
        log.warning("database unavailable during %s %s: %s", req.method, req.path, first_line(exc))
        raise Problem(
            falcon.HTTP_503,
            "The database is unavailable; retry shortly.",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )

    def schema_not_ready(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
        # Said once at start by gunicorn.conf.py; each request only answers it.
        log.debug("%s %s: %s", req.method, req.path, exc)
        raise Problem(
            falcon.HTTP_503,
            f"The service is not ready: {exc}.",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )

    def misconfigured(req: falcon.Request, resp: falcon.Response, exc: Misconfigured, params: dict) -> None:
        # Once per cause: at start by gunicorn's master, or, when it begins later, once per worker.
        if exc.cause not in causes_logged:
            causes_logged.add(exc.cause)
            log.error("the database refuses this configuration: %s; fix DATABASE_URL or the database", exc.cause)
        # No Retry-After: waiting does not heal it; someone has to fix the configuration.
        raise Problem(
            falcon.HTTP_503,
            f"The database refuses this service's configuration ({exc.cause}); fix DATABASE_URL or the database.",
        )

    def statement_failed(req: falcon.Request, resp: falcon.Response, exc: StatementFailed, params: dict) -> None:
        # One statement failed; its connection is healthy and stays.
        log.warning("%s %s: %s", req.method, req.path, exc)
        raise Problem(falcon.HTTP_503, _STATEMENT_DETAILS[exc.reason], headers={"Retry-After": RETRY_AFTER_SECONDS})

    def unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
        if isinstance(exc, peewee.DatabaseError):
            # A failed statement can leave the connection in an unknown state; start clean.
            db.discard()
        log.exception("unhandled error during %s %s", req.method, req.path)
        raise Problem(falcon.HTTP_500, "An unexpected error occurred; it has been logged.")

    app.set_error_serializer(serialize)
    app.add_error_handler(Exception, unexpected)
    for error in (peewee.OperationalError, peewee.InterfaceError):
        app.add_error_handler(error, database_unavailable)
    app.add_error_handler(SchemaNotReady, schema_not_ready)
    app.add_error_handler(Misconfigured, misconfigured)
    app.add_error_handler(StatementFailed, statement_failed)
