"""Log lines: plain text (the default) or one JSON object a line (LOG_FORMAT=json), for the
service's own logs and gunicorn's alike, each carrying the id of the request it is about.

gunicorn.conf.py names `GunicornLogger` as gunicorn's logger class; the service's
"orgapi" logger writes through the same handlers.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson
from gunicorn.glogging import Logger

# Kept when a client or proxy sends one: bounded, and nothing that could break a log line.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
TEXT_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"

# A context variable, not a thread-local: under the gevent worker a thread serves many requests at once.
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class _RequestIds:
    """New ids: 16 random hex digits per process, then a counter. Unique without a read of
    the kernel's random source per request (ids need to be distinct, not secret)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_new_ids = _RequestIds()
# gunicorn forks its workers from a master that imported this module: each gets its own prefix.
os.register_at_fork(after_in_child=_new_ids.restart)


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a valid one, else a new one."""
    if header is not None and REQUEST_ID.fullmatch(header):
        return header
    return _new_ids.new()


def set_request_id(request_id: str | None) -> None:
    _request_id.set(request_id)


def current_request_id() -> str | None:
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request its thread is handling, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class TextFormatter(logging.Formatter):
    """gunicorn's own line format, with the request id appended when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, TEXT_DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} request_id={request_id}" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, pid, message, request_id, an access record's fields, a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        access = getattr(record, "access", None)
        if access:
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def style_handlers(handlers: list[logging.Handler], log_format: str) -> None:
    for handler in handlers:
        handler.setFormatter(formatter(log_format))
        if not any(isinstance(existing, RequestIdFilter) for existing in handler.filters):
            handler.addFilter(RequestIdFilter())


class GunicornLogger(Logger):
    """gunicorn's logger with this service's line format (LOG_FORMAT) and request ids."""

    log_format = "text"  # set by gunicorn.conf.py from the settings

    def setup(self, cfg) -> None:
        super().setup(cfg)
        style_handlers(self.error_log.handlers + self.access_log.handlers, self.log_format)


def route_app_logs(error_log: logging.Logger, access_log_enabled: bool) -> None:
    """The service's "orgapi" loggers write wherever gunicorn's error log goes; the access log at info whatever LOG_LEVEL says."""
    app_log = logging.getLogger("orgapi")
    app_log.handlers = list(error_log.handlers)
    app_log.setLevel(error_log.level)
    app_log.propagate = False
    access = logging.getLogger("orgapi.access")
    access.setLevel(logging.INFO if access_log_enabled else logging.CRITICAL + 1)
