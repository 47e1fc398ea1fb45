"""The WSGI application: `create_app(settings)` wires it; `api` is what gunicorn serves."""

from __future__ import annotations

from typing import Any

import falcon

import embedded
import migrations
import problems
from auth import Access, Guard, build_authenticator
from database import Database
from metrics import InstrumentedDatabase, MetricsResource
from openapi import build_document
from queries import UserStore
from resources import (
    BodyReader,
    CollapseEmptySegments,
    Health,
    OpenAPIDocument,
    Ready,
    UserCollection,
    UserIdConverter,
    UserItem,
)
from settings import Settings, load_settings
from telemetry import Telemetry
from tokens import METRICS, READ, WRITE, TokenStore


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded.expected_url(settings.embedded_pg_dir)


def service_database(settings: Settings) -> Database:
    """The database the service runs on; opens nothing (each thread connects on its first query)."""
    database = InstrumentedDatabase if settings.operations.metrics else Database
    return database(
        database_url(settings),
        statement_timeout_ms=settings.statement_timeout_ms,
        connect_timeout=settings.connect_timeout,
        schema_version=migrations.latest(),
        prepared_statements=settings.prepared_statements,
        # gthread: a connection per thread; gevent: a greenlet per client, so a bounded pool.
        pool_size=settings.db_pool_size if settings.worker_class == "gevent" else None,
        pool_timeout=settings.connect_timeout,
    )


def create_app(settings: Settings, db: Database | None = None) -> falcon.App:
    """Build the app on `db` (by default the one `settings` name). Opens no connection."""
    db = db or service_database(settings)
    users = UserStore(db, lookup_lanes=settings.lookup_lanes)
    operations = settings.operations
    read_body = BodyReader(settings.max_body_bytes)
    user_collection = UserCollection(users, settings, read_body)
    user_item = UserItem(users, read_body)
    metrics_resource = MetricsResource(multiprocess_mode=operations.metrics_dir is not None)
    user_access = Access(read=READ if operations.read_access == "token" else None, write=WRITE)
    guard = Guard(
        build_authenticator(operations, TokenStore(db)),
        {user_collection: user_access, user_item: user_access, metrics_resource: Access(read=METRICS, write=None)},
    )
    telemetry = Telemetry(metrics_enabled=operations.metrics, access_log_enabled=settings.access_log)
    middleware: list[Any] = [telemetry, CollapseEmptySegments(), guard]  # telemetry first: it times and ids everything, refusals included
    app = falcon.App(media_type=falcon.MEDIA_JSON, middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.router_options.converters["user_id"] = UserIdConverter
    problems.install(app, db)
    app.add_route("/users", user_collection)
    app.add_route("/users/{user_id:user_id}", user_item)
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Ready(db))
    app.add_route("/openapi.json", OpenAPIDocument(build_document(settings)))
    if operations.metrics:
        app.add_route("/metrics", metrics_resource)
    return app


api = create_app(load_settings())
