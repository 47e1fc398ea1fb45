"""The framework-and-server ceiling: a minimal Falcon app returning a fixed small JSON.

Served by the same gunicorn configuration as the real app (`gunicorn load.hello_app:api`).
"""

import falcon

BODY = b'{"id":1,"username":"e60202a4","email":null,"full_name":null}'


class Hello:
    def on_get(self, req: falcon.Request, resp: falcon.Response, user_id: int) -> None:
        resp.data = BODY
        resp.content_type = falcon.MEDIA_JSON


api = falcon.App()
api.add_route("/users/{user_id:int}", Hello())
