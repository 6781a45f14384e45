"""The workshop service: a hub-managed process that runs each workshop's clock.

Every round (workshops.interval), for each workshop not yet ended:
- from ``prewarm_minutes`` before the start: its seats' hub users are made afresh (an earlier
  use's tokens, groups, shares and login cookies gone with the old user), in the workshop's
  group and the course's learners; joining opens then;
- from then until ``keep_warm_minutes`` after the start: each free seat's session is started,
  unassigned (a pooled account's own server, in the reservation);
- after that: warm sessions nobody took are stopped (a late attendee starts cold);
- at the window's end: every session stops, the pooled accounts' tokens and shares are revoked
  and their Unix accounts locked, their files archived for the trainer or wiped, the
  platform's reservation deleted. Hub users and groups stay: the progress pages' cohort.

    python -m hub.workshops.service   (started by the hub; config from ACADEMY_CONFIG)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time

from spawners.hub_api import HubAPI, HubAPIError

from . import accounts, reservation
from .model import Workshop
from .store import Store

log = logging.getLogger("academy.workshops")
STOP_WAIT_S = 60
WARM_AT_ONCE = 8    # session starts the service asks for at once (each takes a Slurm job and a server start)


class WorkshopService:
    def __init__(self, cfg: dict, hub: HubAPI, store: Store | None = None):
        self.cfg, self.hub = cfg, hub
        ip = cfg["hub"].get("ip", "127.0.0.1")
        self.proxy_url = f"http://{'127.0.0.1' if ip in ('0.0.0.0', '') else ip}:{cfg['hub'].get('port', 8000)}"
        self.store = store or Store.from_config(cfg)
        settings = cfg["workshops"]
        self.prewarm_s = settings["prewarm_minutes"] * 60
        self.keep_warm_s = settings["keep_warm_minutes"] * 60

    async def api(self, method: str, path: str, body=None, missing_ok: bool = False):
        try:
            return await self.hub.request_async(method, path, body)
        except HubAPIError as e:
            if missing_ok and e.status == 404:
                return None
            raise

    async def round(self, now: float | None = None) -> None:
        for w in self.store.all():
            if w.state == "ended":
                continue
            now_ = time.time() if now is None else now
            try:
                if now_ >= w.ends_at:
                    await self.end(w)
                    continue
                if w.join != "code" or now_ < w.starts_at - self.prewarm_s:
                    continue
                if not w.prepared_at:
                    await self.prepare(w)
                if self.prewarm_s and now_ < w.starts_at + self.keep_warm_s:
                    await self.warm(w, now_)
                elif now_ >= w.starts_at + self.keep_warm_s:
                    await self.release(w)
            except (HubAPIError, OSError) as e:
                log.error("workshop %s: %s (tried again next round)", w.name, e)

    async def prepare(self, w: Workshop) -> None:
        """Each seat's hub user made afresh, in the workshop's group and the course's learners."""
        for account in w.accounts:
            await self.api("DELETE", f"/users/{account}", missing_ok=True)
            await self.api("POST", f"/users/{account}", {})
        for group in (w.group, f"{w.course}-learners"):
            if await self.api("GET", f"/groups/{group}", missing_ok=True) is None:
                await self.api("POST", f"/groups/{group}", {})
            await self.api("POST", f"/groups/{group}/users", {"users": w.accounts})
        w.prepared_at = time.time()
        self.store.update(w)
        log.info("workshop %s: %d seats' hub users made; joining is open", w.name, len(w.accounts))

    async def _server(self, account: str) -> dict | None:
        user = await self.api("GET", f"/users/{account}", missing_ok=True)
        return ((user or {}).get("servers") or {}).get("")

    async def warm(self, w: Workshop, now: float) -> None:
        """Start each free seat's session, several at once (each start waits for its server)."""
        limit = asyncio.Semaphore(WARM_AT_ONCE)

        async def warm_one(seat: dict) -> bool:
            async with limit:
                if await self._server(seat["account"]) is None:
                    try:
                        await self.api("POST", f"/users/{seat['account']}/server",
                                       {"profile": w.profile, "course": w.course})
                    except HubAPIError as e:
                        log.error("workshop %s: warming seat %s failed: %s", w.name, seat["account"], e)
                        return False
                await asyncio.to_thread(self._first_visit, w, seat["account"])
                self.store.mark(w.name, seat["number"], warmed_at=now)
                return True

        seats = [s for s in self.store.seats(w.name) if not s["key_hash"] and not s["warmed_at"]]
        warmed = await asyncio.gather(*(warm_one(s) for s in seats))
        if seats:
            log.info("workshop %s: %d of %d free seats warm", w.name, sum(warmed), len(seats))

    def _first_visit(self, w: Workshop, account: str) -> None:
        """What the attendee's first visit would pay, paid now: the notebook fetched into the seat's
        home; JupyterLab's page, the kernel specs and the notebook's model served once by the new server."""
        import urllib.error
        import urllib.request
        from urllib.parse import quote, urlencode

        base = f"{self.proxy_url}/user/{account}"
        query = urlencode({"course": w.course, "assignment": w.assignment, "notebook": w.notebook})
        model = quote(w.notebook_path)
        # (the notebook's model too: a server's first one imports and builds nbformat's validator)
        for path in (f"/academy/open?{query}", "/lab", "/api/kernelspecs", f"/api/contents/{model}?content=1"):
            request = urllib.request.Request(base + path, headers={"Authorization": f"token {self.hub.token}"})
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    r.read()
            except (urllib.error.URLError, OSError) as e:   # a warm-up only: joining does it again if needed
                log.warning("workshop %s: warming %s%s: %s", w.name, account, path.split("?")[0], e)

    async def release(self, w: Workshop) -> None:
        for seat in self.store.seats(w.name):
            if seat["warmed_at"] and not seat["key_hash"]:
                await self.api("DELETE", f"/users/{seat['account']}/server", missing_ok=True)
                self.store.mark(w.name, seat["number"], warmed_at=None)
                log.info("workshop %s: warm session of free seat %s stopped", w.name, seat["account"])

    async def end(self, w: Workshop) -> None:
        seats = self.store.seats(w.name)
        users = [s["account"] for s in seats]
        for account in users:
            await self.api("DELETE", f"/users/{account}/server", missing_ok=True)
        deadline = time.monotonic() + STOP_WAIT_S
        for account in users:
            while await self._server(account) is not None and time.monotonic() < deadline:
                await asyncio.sleep(1)
        for account in w.accounts:
            await self._revoke(account)
            await asyncio.to_thread(accounts.lock, account)
        if w.accounts:
            if w.files == "export":
                archive = accounts.export(w.accounts, accounts.archive_path(self.cfg["workshops"]["export_dir"], w.name))
                log.info("workshop %s: attendees' files archived in %s", w.name, archive)
            for account in w.accounts:
                await asyncio.to_thread(accounts.wipe_home, account)
        if w.reservation and w.reservation_owned:
            await asyncio.to_thread(reservation.delete, self.cfg["slurm"]["bin_dir"], w.reservation)
        w.state = "ended"
        self.store.update(w)
        log.info("workshop %s ended: %d sessions stopped, %d pooled accounts locked (files %sed)", w.name, len(users),
                 len(w.accounts), w.files)

    async def _revoke(self, account: str) -> None:
        """Every token of the account's hub user, and every share of its server."""
        tokens = await self.api("GET", f"/users/{account}/tokens", missing_ok=True) or {}
        for token in tokens.get("api_tokens", []) + tokens.get("oauth_tokens", []):
            await self.api("DELETE", f"/users/{account}/tokens/{token['id']}", missing_ok=True)
        await self.api("DELETE", f"/shares/{account}/", missing_ok=True)


async def run_forever(service: WorkshopService, interval: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            await service.round()
        except Exception:   # one bad round must not end the service; the next one retries
            log.exception("workshop round failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except asyncio.TimeoutError:
            pass


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    cfg = json.loads(os.environ["ACADEMY_SERVICE_CONFIG"])   # hub/configurer.py SERVICE_CONFIG
    service = WorkshopService(cfg, HubAPI.from_env())
    asyncio.run(run_forever(service, cfg["workshops"]["interval"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
