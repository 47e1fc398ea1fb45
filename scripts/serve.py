"""Serve the API with gunicorn (`gunicorn app:api`), once every setting has been checked.

gunicorn reads WEB_CONCURRENCY itself, with int(), while it is being imported: before any
of this project's code (gunicorn.conf.py included) runs, a bad value there is gunicorn's
own traceback or message. This command checks every variable first, with the same one
line as everywhere else, then becomes gunicorn (same process: signals reach it directly).
Options are passed on to gunicorn; they override gunicorn.conf.py.
"""

from __future__ import annotations

import os
import sys

from settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print("usage: python -m scripts.serve [gunicorn options]\n\n" + __doc__)
        return
    try:
        load_settings()
    except SettingsError as exc:
        raise SystemExit(f"orgapi: configuration error: {exc}") from None
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", *args, "app:api"])


if __name__ == "__main__":
    main()
