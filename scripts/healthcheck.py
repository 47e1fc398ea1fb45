"""Exit 0 when the service on this host's PORT answers /healthz with 200, else 1 with one line.

The container image's HEALTHCHECK; it needs no curl in the image.
"""

from __future__ import annotations

import argparse
import http.client

from settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.healthcheck", description=__doc__)
    parser.add_argument("--path", default="/healthz", help="the path to ask (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="how long to wait (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        port = load_settings().port
    except SettingsError as exc:
        raise SystemExit(f"unhealthy: configuration: {exc}") from None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=args.timeout)
    try:
        connection.request("GET", args.path)
        status = connection.getresponse().status
    except OSError as exc:
        raise SystemExit(f"unhealthy: GET {args.path} on port {port}: {exc}") from None
    finally:
        connection.close()
    if status != 200:
        raise SystemExit(f"unhealthy: GET {args.path} on port {port} answered {status}")


if __name__ == "__main__":
    main()
