"""Locust scenario for the orgapi users API, driven by Taurus (bzt-config.yml).

Traffic mix (per simulated user, weights are relative):
  * 80  GET  /users/{id}      random id in 1..LOAD_MAX_USER_ID   -> label "/users/[id]"
  * 15  GET  /users?limit=50  a list page                        -> label "/users"
  *  5  POST /users           {"username": <unique>}             -> label "POST /users"

Success rules (everything else -- other statuses, 5xx, timeouts, connection
errors -- is a failure):
  * GET /users/{id}: 200 or 404 (a deleted id is legitimate)
  * GET /users:      200
  * POST /users:     201, or 409 (duplicate name, a legitimate conflict)

Every request has a 3 s budget: connect/read timeouts are 3 s, and a response
whose total time exceeded 3 s is marked failed as well.

Environment variables:
  BASE_URL          target, default http://127.0.0.1:8000 (a Taurus
                    `default-address` / locust --host overrides it)
  LOAD_MAX_USER_ID  highest existing user id, default 1000
  LOAD_THINK_MIN / LOAD_THINK_MAX  think time between tasks in seconds,
                    default 0.5 / 1.5
  LOAD_RATE_PER_USER  when set, each user sends this many requests per second
                    (locust's constant_throughput) instead of thinking: the open-model
                    runs of load/bzt-open.yml and `python -m load.capacity`

Standalone use (without Taurus):
  .venv-load/bin/locust -f load/locustfile.py --headless -u 10 -r 5 -t 30s
"""

import os
import random
import uuid

from locust import between, constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

REQUEST_TIMEOUT_S = 3.0
MAX_USER_ID = max(1, int(os.environ.get("LOAD_MAX_USER_ID", "1000")))
THINK_MIN = float(os.environ.get("LOAD_THINK_MIN", "0.5"))
THINK_MAX = float(os.environ.get("LOAD_THINK_MAX", "1.5"))
RATE_PER_USER = float(os.environ.get("LOAD_RATE_PER_USER") or 0)
AUTH_TOKEN = os.environ.get("AUTH_TOKEN", "")


def _unique_username():
    # "lt-" + 24 hex chars = 27 chars, charset [a-z0-9-], well under 32.
    return "lt-" + uuid.uuid4().hex[:24]


def _judge(response, ok_statuses):
    """Mark a catch_response request as success/failure by our rules."""
    elapsed_ms = response.request_meta.get("response_time") or 0
    status = response.status_code
    if status in ok_statuses and elapsed_ms <= REQUEST_TIMEOUT_S * 1000:
        response.success()
    elif status in ok_statuses:
        response.failure("slower than %.0fs (%.0f ms)" % (REQUEST_TIMEOUT_S, elapsed_ms))
    elif not status:
        # status 0: timeout, connection refused/reset, ... Report the underlying error
        # without the URL, so all occurrences group into one error line per kind.
        error = getattr(response, "error", None)
        error = getattr(error, "original", None) or error
        response.failure("no response: %s: %s" % (type(error).__name__, error))
    else:
        response.failure("HTTP %s" % status)


class OrgApiUser(FastHttpUser):
    host = os.environ.get("BASE_URL", "http://127.0.0.1:8000")
    wait_time = constant_throughput(RATE_PER_USER) if RATE_PER_USER > 0 else between(THINK_MIN, THINK_MAX)
    # FastHttpUser takes its timeouts as class attributes, not per request.
    connection_timeout = REQUEST_TIMEOUT_S
    network_timeout = REQUEST_TIMEOUT_S
    # AUTH_TOKEN: an API token with users:write (load.run issues one); none when unset.
    default_headers = {"Accept": "application/json", **({"Authorization": f"Bearer {AUTH_TOKEN}"} if AUTH_TOKEN else {})}

    @task(80)
    def get_user(self):
        user_id = random.randint(1, MAX_USER_ID)
        with self.client.get("/users/%d" % user_id, name="/users/[id]", catch_response=True) as response:
            _judge(response, (200, 404))

    @task(15)
    def list_users(self):
        with self.client.get("/users?limit=50", name="/users", catch_response=True) as response:
            _judge(response, (200,))

    @task(5)
    def create_user(self):
        with self.client.post(
            "/users",
            json={"username": _unique_username()},
            name="POST /users",
            catch_response=True,
        ) as response:
            _judge(response, (201, 409))
