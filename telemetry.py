"""Falcon middleware, first in line: gives each request its id, and on the way out returns
the id, counts the request in the metrics and writes the access log line."""

from __future__ import annotations

import logging
import time

import falcon

import logs
import metrics

access_log = logging.getLogger("orgapi.access")
# Any other method string is one label value, so a client cannot grow the metrics without bound.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
UNMATCHED = "unmatched"


class Telemetry:
    def __init__(self, *, metrics_enabled: bool, access_log_enabled: bool) -> None:
        self.metrics_enabled = metrics_enabled
        self.access_log_enabled = access_log_enabled

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        req.context.request_id = request_id = logs.request_id_from(req.get_header("X-Request-ID"))
        logs.set_request_id(request_id)
        if self.metrics_enabled:
            metrics.IN_FLIGHT.inc()
            metrics.start_request()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool) -> None:
        request_id = req.context.get("request_id")
        if request_id is None:  # process_request never ran
            return
        resp.set_header("X-Request-ID", request_id)
        duration = time.perf_counter() - req.context.started
        route = req.uri_template or UNMATCHED
        method = req.method if req.method in METHODS else "OTHER"
        status = resp.status_code
        if self.metrics_enabled:
            metrics.IN_FLIGHT.dec()
            metrics.record_request(route, method, status, duration)
        if self.access_log_enabled:
            size = 0 if req.method == "HEAD" or resp.data is None else len(resp.data)
            duration_ms = round(duration * 1000, 3)
            access_log.info(
                "%s %s %s %.3fms %dB",
                method,
                route,
                status,
                duration_ms,
                size,
                extra={"access": {"method": method, "route": route, "status": status, "duration_ms": duration_ms, "bytes": size}},
            )
        logs.set_request_id(None)
