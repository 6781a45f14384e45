"""The one hub REST client (spawners.hub_api) against a small stand-in of the hub's API on a free port:
the token in the header, the hub's pages followed to the end, its refusals and its silence as
HubAPIError, and the callers that page through it (the reaper, the progress service's groups)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from assessments.progress.groups import HubGroups
from spawners.hub_api import HubAPI, HubAPIError
from spawners.reaper import hub_records

TOKEN = "service-secret-token"
MAX_LIMIT = 3       # the stand-in's api_page_max_limit: seven users make three pages
USERS = [{"name": f"learner{i}", "servers": {"": {"state": {"job_id": str(100 + i)}}}} for i in range(7)]
GROUPS = [{"name": f"workshop-{i}", "users": ["learner1"]} for i in range(5)]


class StandInHub:
    """/hub/api as JupyterHub answers it: pages (only with the pagination Accept header, like the
    real hub), JSON refusals, a root that needs no token, and a route that answers too late."""

    def __init__(self):
        self.calls: list[tuple[str, str, object]] = []
        hub = self

        class Api(web.RequestHandler):
            def prepare(self):
                body = json.loads(self.request.body) if self.request.body else None
                hub.calls.append((self.request.method, self.request.uri, body))
                if self.request.path != "/hub/api/" and self.request.headers.get("Authorization") != f"token {TOKEN}":
                    raise web.HTTPError(403)

            def write_error(self, status_code, **kwargs):
                self.finish({"status": status_code, "message": f"stand-in refuses with {status_code}"})

            async def get(self, path):
                if path == "":
                    return self.finish({"version": "6.1.1"})
                if path == "slow":
                    await asyncio.sleep(3)
                    return self.finish({})
                if path in ("users", "groups"):
                    return self.collection(USERS if path == "users" else GROUPS)
                raise web.HTTPError(404)

            def collection(self, items):
                offset = int(self.get_argument("offset", "0"))
                limit = min(int(self.get_argument("limit", str(MAX_LIMIT))), MAX_LIMIT)
                page = items[offset:offset + limit]
                if "application/jupyterhub-pagination+json" not in self.request.headers.get("Accept", ""):
                    return self.finish(json.dumps(page))
                more = offset + limit < len(items)
                self.finish({"items": page, "_pagination": {
                    "offset": offset, "limit": limit, "total": len(items),
                    "next": {"offset": offset + limit, "limit": limit, "url": "http://elsewhere/"} if more else None}})

            def post(self, path):
                self.set_status(201)
                self.finish({"path": path, "received": json.loads(self.request.body)})

            def delete(self, path):
                self.set_status(204)

        self.loop = asyncio.new_event_loop()
        sockets = bind_sockets(0, "127.0.0.1")
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/hub/api"
        started = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.server = HTTPServer(web.Application([(r"/hub/api/(.*)", Api)]))
            self.server.add_sockets(sockets)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def stand_in_hub():
    hub = StandInHub()
    yield hub
    hub.stop()


def test_every_call_carries_the_token_and_json_in_both_directions(stand_in_hub):
    api = HubAPI(stand_in_hub.url, TOKEN)
    answer = api.request("POST", "/groups/workshop-1/users", {"users": ["learner1"]})
    assert answer == {"path": "groups/workshop-1/users", "received": {"users": ["learner1"]}}
    assert api.request("DELETE", "/users/learner1/server") is None   # 204: no body
    assert stand_in_hub.calls[0] == ("POST", "/hub/api/groups/workshop-1/users", {"users": ["learner1"]})


def test_a_wrong_token_is_refused_with_the_hubs_status_and_reason_and_never_echoes_the_token(stand_in_hub):
    with pytest.raises(HubAPIError) as refused:
        HubAPI(stand_in_hub.url, "not-the-token").request("GET", "/users")
    assert refused.value.status == 403
    assert "GET /users" in str(refused.value) and "stand-in refuses with 403" in str(refused.value)
    assert "not-the-token" not in str(refused.value)


def test_a_missing_resource_is_a_404_the_caller_can_tell_apart(stand_in_hub):
    with pytest.raises(HubAPIError) as missing:
        HubAPI(stand_in_hub.url, TOKEN).request("GET", "/groups/nobody")
    assert missing.value.status == 404
    assert isinstance(missing.value, OSError)    # callers' "the hub did not answer" handling catches it


def test_the_api_root_answers_without_a_token(stand_in_hub):
    assert HubAPI(stand_in_hub.url, "", timeout=3).request("GET", "/") == {"version": "6.1.1"}


def test_items_follows_the_hubs_pages_where_one_plain_request_sees_only_the_first(stand_in_hub):
    api = HubAPI(stand_in_hub.url, TOKEN)
    assert len(api.request("GET", "/users")) == MAX_LIMIT     # what the old clients saw of a big hub
    assert [u["name"] for u in api.items("/users")] == [u["name"] for u in USERS]
    pages = [uri for method, uri, _ in stand_in_hub.calls if uri.startswith("/hub/api/users?offset")]
    assert pages == [f"/hub/api/users?offset={o}&limit=200" for o in (0, 3, 6)]


def test_the_reaper_knows_the_job_of_every_user_however_many_pages(stand_in_hub):
    known, _ = hub_records(asyncio.run(HubAPI(stand_in_hub.url, TOKEN).users()))
    assert known == {str(100 + i) for i in range(7)}     # the last page's job is not an orphan


def test_stop_server_deletes_the_default_or_the_named_server(stand_in_hub):
    api = HubAPI(stand_in_hub.url, TOKEN)

    async def go():
        await api.stop_server("learner1")
        await api.stop_server("learner1", "gpu")
    asyncio.run(go())
    assert [(m, uri) for m, uri, _ in stand_in_hub.calls] == [
        ("DELETE", "/hub/api/users/learner1/server"), ("DELETE", "/hub/api/users/learner1/servers/gpu")]


def test_a_hub_that_answers_too_late_is_an_error_at_the_timeout_not_a_hang(stand_in_hub):
    started = time.monotonic()
    with pytest.raises(HubAPIError) as late:
        HubAPI(stand_in_hub.url, TOKEN, timeout=0.5).request("GET", "/slow")
    assert late.value.status == 0 and "did not answer GET /slow" in str(late.value)
    assert time.monotonic() - started < 2.5


def test_a_hub_that_is_not_there_is_status_0():
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    sockets[0].close()      # a port nobody listens on
    with pytest.raises(HubAPIError) as absent:
        asyncio.run(HubAPI(f"http://127.0.0.1:{port}/hub/api", TOKEN, timeout=3).request_async("GET", "/users"))
    assert absent.value.status == 0


def test_the_async_calls_leave_the_event_loop_free_while_the_hub_thinks(stand_in_hub):
    api = HubAPI(stand_in_hub.url, TOKEN, timeout=0.8)

    async def go():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1
        ticker = asyncio.create_task(tick())
        with pytest.raises(HubAPIError):
            await api.request_async("GET", "/slow")
        ticker.cancel()
        return ticks
    assert asyncio.run(go()) >= 8       # ~16 if the loop ran while the call waited, 0 if it blocked


def test_the_progress_services_group_filter_offers_groups_from_every_page(stand_in_hub):
    groups = HubGroups(stand_in_hub.url, TOKEN)
    offered = asyncio.run(groups.offered("llm-101", ["learner1"]))
    assert offered == [g["name"] for g in GROUPS]       # five groups, pages of three
