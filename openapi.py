"""The OpenAPI 3.1 document of the service, built from the same schemas it validates with."""

from __future__ import annotations

from typing import Any

from models import MAX_ID
from preconditions import ETAG_LIST_PATTERN
from schemas import PROBLEM, USER, USER_CREATE, USER_UPDATE, USERNAME_PREFIX_PATTERN
from settings import Settings
from tokens import METRICS, READ, WRITE


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }
    if headers:
        response["headers"] = headers
    return response


def _user(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"ETag": {"$ref": "#/components/headers/ETag"}, **(headers or {})},
        "content": {"application/json": {"schema": _ref("User")}},
    }


def _json_body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {"schema": _ref(schema)},
            "application/merge-patch+json": {"schema": _ref(schema)},
        }
        if schema == "UserUpdate"
        else {"application/json": {"schema": _ref(schema)}},
    }


UNAVAILABLE = _problem(
    "The database is unavailable, or gave up on this request (statement timeout, deadlock, serialization failure): "
    "retry after the given seconds. Without Retry-After: the database refuses the service's configuration; retrying will not help.",
    {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}},
)
COMMON = {"503": UNAVAILABLE, "default": _problem("Any other error, as problem details.")}
BAD_BODY = {
    "400": _problem("The body is empty, not valid JSON, or repeats a key in an object."),
    "413": _problem("The body is larger than the configured limit."),
    "415": _problem("The body is not application/json (PATCH also takes application/merge-patch+json)."),
    "422": _problem("A field is missing, unknown or invalid; `errors` names each one."),
}
USER_ID = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "description": "A user's id; anything else is a 404.",
}


def _condition(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": ETAG_LIST_PATTERN},
        "description": description + ' A value that is not "*" or a list of entity tags is a 400.',
    }


# RFC 9110 §13, on every method of /users and /users/{user_id}.
CONDITIONS = [
    _condition(
        "If-Match",
        'Go ahead only if the current ETag is one of these (strong comparison: W/"1" and "01" never match "1"), '
        'or, for "*", if the resource exists; otherwise 412. The collection /users has no ETag: only "*" matches it.',
    ),
    _condition(
        "If-None-Match",
        'Go ahead only if the current ETag is none of these (weak comparison), or, for "*", if the resource does not exist; '
        "otherwise 304 for GET and HEAD, 412 for other methods.",
    ),
]
CONDITION_FAILED = {
    "400": _problem("A malformed If-Match or If-None-Match (or, for the collection, a query parameter)."),
    "412": _problem("If-Match or If-None-Match does not hold for the current state."),
}
NOT_MODIFIED = {"304": {"description": "If-None-Match matched the current ETag (or is * on an existing resource)."}}


_CHALLENGE = {
    "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer, with RFC 6750's error code when a token was sent."}
}


def _secured(scope: str | None) -> dict[str, Any]:
    """An operation's security requirement and the answers it adds; nothing for a public operation."""
    if scope is None:
        return {"security": []}
    return {
        "security": [{"bearer": [scope]}],
        "responses": {
            "401": _problem("No bearer token, or one that is not valid (unknown, malformed, expired or revoked).", _CHALLENGE),
            "403": _problem(f"The token lacks the scope {scope}.", _CHALLENGE),
        },
    }


def _with_security(operation: dict[str, Any], scope: str | None) -> dict[str, Any]:
    secured = _secured(scope)
    return {**operation, "security": secured["security"], "responses": {**operation["responses"], **secured.get("responses", {})}}


def build_document(settings: Settings) -> dict[str, Any]:
    read = READ if settings.operations.read_access == "token" else None
    document = _document(settings)
    paths = document["paths"]
    for template, item in paths.items():
        for method in ("get", "post", "patch", "delete"):
            if method in item:
                scope = (read if method == "get" else WRITE) if template.startswith("/users") else None
                item[method] = _with_security(item[method], scope)
    if settings.operations.metrics:
        paths["/metrics"] = {"get": _with_security(METRICS_OPERATION, METRICS)}
    return document


METRICS_OPERATION = {
    "operationId": "metrics",
    "summary": "Prometheus metrics, summed over every worker.",
    "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
}


def _document(settings: Settings) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orgapi",
            "version": "1.0.0",
            "description": "The users of an organisation. Errors are RFC 9457 problem details.",
        },
        "paths": {
            "/users": {
                "get": {
                    "operationId": "listUsers",
                    "summary": "A page of users in id order (keyset pagination).",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": settings.page_max, "default": settings.page_default},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                            "description": "Return users whose id is greater than this.",
                        },
                        {
                            "name": "username_prefix",
                            "in": "query",
                            "schema": {"type": "string", "pattern": USERNAME_PREFIX_PATTERN},
                            "description": "Only users whose username starts with this.",
                        },
                        *CONDITIONS,
                    ],
                    "responses": {
                        "200": {
                            "description": 'The page; a `Link: <...>; rel="next"` header points to the next one, absent on the last.',
                            "headers": {"Link": {"schema": {"type": "string"}}},
                            "content": {"application/json": {"schema": {"type": "array", "items": _ref("User")}}},
                        },
                        **NOT_MODIFIED,
                        **CONDITION_FAILED,
                        **COMMON,
                    },
                },
                "post": {
                    "operationId": "createUser",
                    "summary": "Create a user.",
                    "parameters": CONDITIONS,
                    "requestBody": _json_body("UserCreate"),
                    "responses": {
                        "201": _user("Created.", {"Location": {"schema": {"type": "string"}}}),
                        **BAD_BODY,
                        "409": _problem("The username or email is taken (emails compare after Unicode NFC and lower-casing)."),
                        "412": CONDITION_FAILED["412"],
                        **COMMON,
                    },
                },
            },
            "/users/{user_id}": {
                "parameters": [USER_ID],
                "get": {
                    "operationId": "getUser",
                    "summary": "One user.",
                    "parameters": CONDITIONS,
                    "responses": {
                        "200": _user("The user."),
                        **NOT_MODIFIED,
                        **CONDITION_FAILED,
                        "404": _problem("No such user (whatever the conditions)."),
                        **COMMON,
                    },
                },
                "patch": {
                    "operationId": "updateUser",
                    "summary": "Change the given fields (JSON merge patch: null clears email or full_name; {} changes nothing).",
                    "parameters": CONDITIONS,
                    "requestBody": _json_body("UserUpdate"),
                    "responses": {
                        "200": _user("The updated user (unchanged, same ETag, for {})."),
                        **BAD_BODY,
                        "404": _problem("No such user."),
                        "409": _problem("The username or email is taken (emails compare after Unicode NFC and lower-casing)."),
                        **CONDITION_FAILED,
                        **COMMON,
                    },
                },
                "delete": {
                    "operationId": "deleteUser",
                    "summary": "Delete a user.",
                    "parameters": CONDITIONS,
                    "responses": {
                        "204": {"description": "Deleted."},
                        "404": _problem("No such user."),
                        **CONDITION_FAILED,
                        **COMMON,
                    },
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "liveness",
                    "summary": "The process answers (no database involved).",
                    "responses": {"200": _status("ok"), "default": COMMON["default"]},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readiness",
                    "summary": "The database answers.",
                    "responses": {"200": _status("ready"), **COMMON},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}},
                }
            },
        },
        "components": {
            "schemas": {"User": USER, "UserCreate": USER_CREATE, "UserUpdate": USER_UPDATE, "Problem": PROBLEM},
            "headers": {"ETag": {"schema": {"type": "string"}, "description": "The user's version; send it in If-Match or If-None-Match."}},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        f"An API token from `python -m scripts.tokens create`, or a JWT from the identity provider when one is "
                        f"configured. Scopes: {READ}, {WRITE} (includes {READ}), {METRICS}."
                    ),
                }
            },
        },
    }


def _status(value: str) -> dict[str, Any]:
    return {
        "description": f"status {value}",
        "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"const": value}}, "required": ["status"]}}},
    }
