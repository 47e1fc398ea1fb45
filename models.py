"""The peewee models: each field declared once.

A model says which of its fields the API shows (`public`) and which a client may set
(`writable`); the queries, the JSON Schemas and the OpenAPI document derive from that.
The tables themselves are made by the numbered files in `migrations/`: adding a field
takes a field here and a migration there.
"""

from __future__ import annotations

from peewee import BigAutoField, BigIntegerField, CharField, Field, Model
from playhouse.postgres_ext import DateTimeTZField

MAX_ID = 2**63 - 1  # ids are bigint keys


class User(Model):
    id = BigAutoField()
    username = CharField(
        max_length=32,
        unique=True,
        collation='"C"',
        help_text="Lowercase letters, digits, '_', '.' and '-'; starts with a letter or digit.",
    )
    # Unique as an address: Unicode NFC, then lower case (migrations/0004); stored in NFC.
    email = CharField(
        max_length=254,
        null=True,
        help_text="An email address, unique when present (spellings equal after Unicode NFC and lower-casing are one address); "
        "stored in NFC; null clears it.",
    )
    full_name = CharField(
        max_length=200,
        null=True,
        help_text="A display name: any text but control characters, line or paragraph separators and invisible format characters "
        "(bidirectional overrides, zero-width spaces, ...); U+200C and U+200D, which scripts and emoji sequences need, are allowed. "
        "null clears it.",
    )
    # Bumped by every update; the ETag. Defaults (here and for the times) are the database's own.
    version = BigIntegerField()
    created_at = DateTimeTZField()
    updated_at = DateTimeTZField()

    class Meta:
        table_name = "users"
        public = ("id", "username", "email", "full_name", "created_at", "updated_at")
        writable = ("username", "email", "full_name")
        # The unique indexes (made in migrations/) and the field each protects, to name it in a 409.
        unique_indexes = {"users_username": "username", "users_email_same_address": "email"}


def public_names(model: type[Model]) -> tuple[str, ...]:
    return model._meta.public  # type: ignore[attr-defined]


def writable_names(model: type[Model]) -> tuple[str, ...]:
    return model._meta.writable  # type: ignore[attr-defined]


def unique_index_fields(model: type[Model]) -> dict[str, str]:
    return model._meta.unique_indexes  # type: ignore[attr-defined]


def public_fields(model: type[Model]) -> list[Field]:
    return [model._meta.fields[name] for name in public_names(model)]


def writable_fields(model: type[Model]) -> list[Field]:
    return [model._meta.fields[name] for name in writable_names(model)]


def required_on_create(field: Field) -> bool:
    return not field.null and field.default is None
