"""The settings module: defaults that work, and one clear error per bad variable."""

from __future__ import annotations

import pytest

from settings import SettingsError, load_settings


def test_defaults_work_on_a_fresh_machine():
    settings = load_settings({})
    assert settings.database_url is None and settings.uses_embedded_database
    assert settings.port == 8000
    assert (settings.page_default, settings.page_max) == (100, 1000)
    assert settings.statement_timeout_ms < settings.worker_timeout * 1000
    operations = settings.operations
    assert (operations.read_access, operations.token_cache_seconds, operations.log_format) == ("token", 10, "text")
    assert operations.metrics and not operations.jwt_enabled and operations.metrics_dir is None


def test_values_come_from_the_environment():
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://app:secret@db:5432/orgapi",
            "PORT": "9000",
            "WEB_CONCURRENCY": "3",
            "PAGE_MAX": "50",
            "PAGE_DEFAULT": "10",
        }
    )
    assert settings.database_url == "postgresql://app:secret@db:5432/orgapi"
    assert (settings.port, settings.workers, settings.page_max, settings.page_default) == (9000, 3, 50, 10)


def test_behind_the_front_and_the_pooler():
    assert (load_settings({}).trusted_proxies, load_settings({}).prepared_statements) == ("", True)
    settings = load_settings({"TRUSTED_PROXIES": "10.213.7.2, 10.0.0.0/8", "DB_PREPARED_STATEMENTS": "false"})
    assert (settings.trusted_proxies, settings.prepared_statements) == ("10.213.7.2, 10.0.0.0/8", False)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT='eighty' is not an integer"),
        ({"PORT": "70000"}, "PORT=70000 is outside 1..65535"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY=0 is outside 1..256"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must be a postgresql:// URL"),
        ({"DATABASE_URL": "postgresql://x/y?nonsense=1"}, "DATABASE_URL is not a valid PostgreSQL URL"),
        # Values libpq would refuse on every connection attempt: refused at start, not retried forever.
        ({"DATABASE_URL": "postgresql://x@db:99999/y"}, 'DATABASE_URL is not a valid PostgreSQL URL: invalid port number: "99999"'),
        ({"DATABASE_URL": "postgresql://x@db/y?port=abc"}, "DATABASE_URL is not a valid PostgreSQL URL: invalid integer value"),
        ({"DATABASE_URL": "postgresql://x@db/y?sslmode=bogus"}, "DATABASE_URL is not a valid PostgreSQL URL: invalid sslmode value"),
        ({"STATEMENT_TIMEOUT_MS": "30000", "WORKER_TIMEOUT": "30"}, "STATEMENT_TIMEOUT_MS=30000 must be below WORKER_TIMEOUT"),
        ({"PAGE_DEFAULT": "500", "PAGE_MAX": "100"}, "PAGE_DEFAULT=500 must not exceed PAGE_MAX=100"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is not one of"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG='maybe' is not a boolean"),
        ({"EMBEDDED_DATABASE": "false"}, "DATABASE_URL is not set"),
        ({"READ_ACCESS": "everyone"}, "READ_ACCESS='everyone' is not one of public, token"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not one of text, json"),
        ({"TOKEN_CACHE_SECONDS": "-1"}, "TOKEN_CACHE_SECONDS=-1 is outside 0..3600"),
        ({"METRICS": "sometimes"}, "METRICS='sometimes' is not a boolean"),
        ({"JWT_JWKS_URL": "ftp://idp/jwks", "JWT_ISSUER": "i", "JWT_AUDIENCE": "a"}, "JWT_JWKS_URL must be an http:// or https:// URL"),
        ({"JWT_JWKS_URL": "https://idp/jwks", "JWT_JWKS_FILE": "/k.json"}, "set JWT_JWKS_URL or JWT_JWKS_FILE, not both"),
        ({"TRUSTED_PROXIES": "10.0.0.2, front"}, "TRUSTED_PROXIES: 'front' is not an IP address or network"),
        ({"DB_PREPARED_STATEMENTS": "sometimes"}, "DB_PREPARED_STATEMENTS='sometimes' is not a boolean"),
    ],
)
def test_a_bad_value_names_the_variable(env, message):
    # One line: an entry point prints it as it is.
    with pytest.raises(SettingsError, match="^" + message.replace("?", r"\?").replace(".", r"\.")):
        load_settings(env)


def test_without_the_embedded_database_a_url_is_enough():
    settings = load_settings({"EMBEDDED_DATABASE": "false", "DATABASE_URL": "postgresql://app@db/orgapi"})
    assert not settings.uses_embedded_database


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:secret@db.example.org:5432/orgapi?sslmode=require",
        "postgresql://app@/orgapi?host=/var/run/postgresql",
        "postgresql://app@[::1]:5433/orgapi",
        "postgresql://app@db1:5432,db2:5433/orgapi?target_session_attrs=read-write",
    ],
)
def test_a_valid_url_is_accepted_without_connecting(url):
    assert load_settings({"DATABASE_URL": url}).database_url == url
