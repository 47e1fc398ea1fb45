"""Conditional requests as RFC 9110 §13 defines them: If-Match and If-None-Match, every method.

If-Match compares strongly (a weak tag never matches; `"01"` is not `"1"`), If-None-Match
weakly. `*` means "the resource exists". A header whose value is not `*` or a list of
entity tags is a 400. A safe method whose If-None-Match matches gets 304; any other
method gets 412, as does a failed If-Match. Writes are not checked here but in their
UPDATE or DELETE statement (`Versions`), so no other write can slip in between.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import falcon

from problems import Problem

ANY = "*"
# RFC 9110: `"*" / #entity-tag`, entity-tag = [ W/ ] DQUOTE *etagc DQUOTE. Header values
# arrive decoded as latin-1, so obs-text is \x80-\xff. A list may hold empty elements (§5.6.1).
_TAG = r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"'
_ELEMENT = rf"[ \t]*(?:{_TAG}[ \t]*)?"
ETAG_LIST_PATTERN = rf"^(\*|{_ELEMENT}(,{_ELEMENT})*)$"
_ETAG_LIST = re.compile(ETAG_LIST_PATTERN[:-1] + r"\Z")
_EACH_TAG = re.compile(_TAG)
# This service's ETags are a version: a bigint in plain digits.
VERSION = re.compile(r"[1-9][0-9]{0,18}")
MAX_VERSION = 2**63 - 1

Tags = list[tuple[bool, str]]  # (weak, opaque value)


def _parse(req: falcon.Request, name: str) -> str | Tags | None:
    """`*`, the listed tags (possibly none), or None when the header is absent."""
    raw = req.get_header(name)
    if raw is None:
        return None
    raw = raw.strip(" \t")
    if _ETAG_LIST.match(raw) is None:
        raise Problem(falcon.HTTP_400, f'{name} must be "*" or a list of entity tags such as "1" or W/"1".')
    if raw == ANY:
        return ANY
    return [(weak == "W/", opaque) for weak, opaque in _EACH_TAG.findall(raw)]


@dataclass(frozen=True)
class Conditions:
    if_match: str | Tags | None
    if_none_match: str | Tags | None

    @classmethod
    def of(cls, req: falcon.Request) -> Conditions:
        return cls(_parse(req, "If-Match"), _parse(req, "If-None-Match"))

    def check(self, req: falcon.Request, current: str | None) -> bool:
        """Evaluate against a resource that exists, whose strong ETag value is `current`
        (None: it has none). Raises 412; False when a safe method gets 304."""
        if self.if_match is not None and not _matches(self.if_match, current, strong=True):
            raise precondition_failed()
        if self.if_none_match is not None and _matches(self.if_none_match, current, strong=False):
            if req.method in ("GET", "HEAD"):
                return False
            raise precondition_failed()
        return True

    def versions(self) -> Versions:
        """The same conditions as versions a write may apply to, for its WHERE clause."""
        allowed = _versions(tag for weak, tag in self.if_match if not weak) if isinstance(self.if_match, list) else None
        excluded = _versions(tag for _, tag in self.if_none_match) if isinstance(self.if_none_match, list) else []
        return Versions(allowed, excluded, refuse_existing=self.if_none_match == ANY)


@dataclass(frozen=True)
class Versions:
    allowed: list[int] | None  # None: any version
    excluded: list[int]
    refuse_existing: bool  # If-None-Match: * on a write: no existing user may be changed


def _matches(condition: str | Tags, current: str | None, *, strong: bool) -> bool:
    if not isinstance(condition, list):
        return True  # `*`: the resource exists
    return any(tag == current and not (strong and weak) for weak, tag in condition)


def _versions(tags) -> list[int]:
    return [int(tag) for tag in tags if VERSION.fullmatch(tag) and int(tag) <= MAX_VERSION]


def precondition_failed() -> Problem:
    return Problem(falcon.HTTP_412, "A precondition (If-Match or If-None-Match) does not hold for the current state.")
