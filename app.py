"""The WSGI application: `create_app(settings)` wires it; `api` is what gunicorn serves."""

from __future__ import annotations

import falcon

import embedded
import migrations
import problems
from database import Database
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


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded.expected_url(settings.embedded_pg_dir)


def service_database(settings: Settings) -> Database:
    """The database the service runs on; opens nothing (each thread connects on its first query)."""
    return Database(
        database_url(settings),
        statement_timeout_ms=settings.statement_timeout_ms,
        connect_timeout=settings.connect_timeout,
        schema_version=migrations.latest(),
    )


def create_app(settings: Settings, db: Database | None = None) -> falcon.App:
    """Build the app on `db` (by default the one `settings` name). Opens no connection."""
    db = db or service_database(settings)
    users = UserStore(db)
    app = falcon.App(media_type=falcon.MEDIA_JSON, middleware=[CollapseEmptySegments()])
    app.req_options.strip_url_path_trailing_slash = True
    app.router_options.converters["user_id"] = UserIdConverter
    problems.install(app, db)
    read_body = BodyReader(settings.max_body_bytes)
    app.add_route("/users", UserCollection(users, settings, read_body))
    app.add_route("/users/{user_id:user_id}", UserItem(users, read_body))
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Ready(db))
    app.add_route("/openapi.json", OpenAPIDocument(build_document(settings)))
    return app


api = create_app(load_settings())
