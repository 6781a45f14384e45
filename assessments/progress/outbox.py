"""For emitters (the hub's spawner, the exchange): spool progress events to disk, send them later.

    box = Outbox("/var/lib/academy/progress-outbox/hub")
    box.emit("session_started", user="learner1", payload={"session": "...", "profile": "...", "gpus": 1})
    box.start_flusher("http://127.0.0.1:8003/services/academy-progress/api/events", token)

`emit` returns once the event is on disk: one JSON file per call (a list of events), written to
a temporary name, fsynced and renamed, so a crash leaves either the whole file or none. The
flusher POSTs the oldest files in batches with the emitter's hub service token and deletes
them only after a 2xx; when the service is down they wait, and a batch sent twice (the answer
was lost) is harmless: the service ignores event ids it has. An event the service refuses as
invalid is moved to rejected/ with the reason, so it can neither block the others nor vanish.
Standard library only: this runs inside the hub and other services.

    python -m assessments.progress.outbox SPOOL_DIR URL     send what is spooled now
                                                            (token from $JUPYTERHUB_API_TOKEN)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("academy.progress.outbox")
BATCH = 500                 # events per POST: well under the service's body limit at 4 KiB a payload
_NAMESPACE = uuid.UUID("0b5f3c8e-6a1d-4f0e-9d7c-2a4b6c8d0e1f")


def stable_id(*parts: object) -> str:
    """An event id derived from what the event is about, e.g. stable_id("submitted", submission_id):
    an emitter that reports the same fact twice (a retried request) sends the same id."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


@dataclass
class FlushResult:
    sent: int = 0           # events the service recorded
    duplicates: int = 0     # events it already had
    rejected: int = 0       # events it refused as invalid (now in rejected/)
    pending: int = 0        # spool files still waiting
    error: str = ""         # why sending stopped, if it did


class Outbox:
    def __init__(self, spool_dir: str | os.PathLike):
        self.dir = Path(spool_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()          # one flush at a time in this process
        self._thread: threading.Thread | None = None

    # --- emitting ------------------------------------------------------------------------------

    def emit(self, type: str, *, user: str | None = None, course: str | None = None,
             assignment: str | None = None, payload: dict | None = None, occurred_at: float | None = None,
             event_id: str | None = None) -> str:
        """Spool one event; its id (`event_id`, or a new UUID) once it is safely on disk."""
        event = {"id": event_id or str(uuid.uuid4()), "type": type,
                 "occurred_at": time.time() if occurred_at is None else occurred_at, "payload": payload or {}}
        event.update({k: v for k, v in (("user", user), ("course", course), ("assignment", assignment))
                      if v is not None})
        self.emit_many([event])
        return event["id"]

    def emit_many(self, events: list[dict]) -> None:
        """Spool several events at once (one fsync per BATCH of them: e.g. feedback for a whole cohort)."""
        for e in events:
            e.setdefault("id", str(uuid.uuid4()))
            e.setdefault("occurred_at", time.time())
        for i in range(0, len(events), BATCH):
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json"
            self._write_atomically(self.dir / name, events[i:i + BATCH])
        if events:
            self._wake.set()

    def _write_atomically(self, path: Path, events: list[dict]) -> None:
        tmp = path.with_name(f".tmp-{path.name}")
        data = json.dumps(events, separators=(",", ":"), allow_nan=False).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._fsync_dir(path.parent)

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def pending_files(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("*.json") if not p.name.startswith("."))

    def _read(self, path: Path) -> list[dict] | None:
        try:
            events = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None                       # sent meanwhile by another flusher
        except ValueError:
            self._reject(path, [], "the spool file is not JSON")
            return None
        if not isinstance(events, list):
            self._reject(path, [], "the spool file is not a JSON list")
            return None
        return events

    def _reject(self, path: Path, events: list[dict], reason: str) -> None:
        bad = self.dir / "rejected"
        bad.mkdir(exist_ok=True, mode=0o700)
        if events:
            self._write_atomically(bad / path.name, events)
        else:
            os.replace(path, bad / path.name)
        (bad / f"{path.name}.error").write_text(reason + "\n")
        log.error("progress events in %s refused: %s (kept in %s)", path.name, reason, bad)

    # --- sending -------------------------------------------------------------------------------

    def flush(self, url: str, token: str, batch: int = BATCH, timeout: float = 30) -> FlushResult:
        """Send everything spooled, oldest first, until done or the service fails to answer 2xx."""
        with self._lock:
            result = FlushResult()
            files, loaded = self.pending_files(), {}
            while files:
                chunk, events = [], []      # whole files, up to `batch` events
                while files:
                    content = loaded.pop(files[0], None) or self._read(files[0])
                    if content is None:
                        files.pop(0)
                        continue
                    if events and len(events) + len(content) > batch:
                        loaded[files[0]] = content
                        break
                    chunk.append((files.pop(0), len(events), content))
                    events.extend(content)
                if not events:
                    break
                status, body = self._post(url, token, events, timeout)
                if 200 <= status < 300:
                    result.sent += int(body.get("accepted", 0))
                    result.duplicates += int(body.get("duplicates", 0))
                    for path, _, _ in chunk:
                        path.unlink(missing_ok=True)
                    continue
                if status == 400 and isinstance(body.get("rejected"), list):
                    # Nothing of this batch was recorded: set the bad events aside, retry the rest.
                    result.rejected += self._set_aside(chunk, body["rejected"])
                    files, loaded = self.pending_files(), {}
                    continue
                result.error = f"HTTP {status}: {body.get('message', '')}" if status else body.get("message", "")
                break
            result.pending = len(self.pending_files())
            return result

    def _set_aside(self, chunk: list[tuple[Path, int, list[dict]]], rejected: list[dict]) -> int:
        errors = {r.get("index"): r.get("error", "invalid") for r in rejected}
        count = 0
        for path, start, content in chunk:
            bad = [(e, errors[start + i]) for i, e in enumerate(content) if start + i in errors]
            if not bad:
                continue
            count += len(bad)
            self._reject(path, [e for e, _ in bad], "; ".join(reason for _, reason in bad))
            good = [e for i, e in enumerate(content) if start + i not in errors]
            if good:
                self._write_atomically(path, good)
            else:
                path.unlink(missing_ok=True)
        return count

    @staticmethod
    def _post(url: str, token: str, events: list[dict], timeout: float) -> tuple[int, dict]:
        request = urllib.request.Request(
            url, data=json.dumps({"events": events}).encode(), method="POST",
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as e:
            return e.code, _json(e.read())
        except (urllib.error.URLError, OSError) as e:
            return 0, {"message": f"progress service unreachable: {getattr(e, 'reason', e)}"}

    # --- the background flusher ----------------------------------------------------------------

    def start_flusher(self, url: str, token: str, interval: float = 5, max_backoff: float = 120) -> None:
        """Send in a daemon thread: at once after each emit, every `interval` s, backing off on failure."""
        if self._thread is not None:
            return

        def loop():
            delay = interval
            while not self._stop.is_set():
                result = self.flush(url, token)
                if result.error:
                    log.warning("progress events not sent (%d files waiting): %s", result.pending, result.error)
                    delay = min(max_backoff, delay * 2)
                else:
                    delay = interval
                self._wake.wait(delay)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="progress-outbox", daemon=True)
        self._thread.start()

    def stop_flusher(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._stop.clear()


def _json(data: bytes) -> dict:
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        return {"message": data[:200].decode(errors="replace")}
    return body if isinstance(body, dict) else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="send the progress events spooled in a directory")
    parser.add_argument("spool_dir")
    parser.add_argument("url", help="the service's api/events URL")
    args = parser.parse_args(argv)
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not token:
        parser.error("set JUPYTERHUB_API_TOKEN to a hub service token with scope custom:academy-progress:ingest")
    result = Outbox(args.spool_dir).flush(args.url, token)
    print(f"sent {result.sent}, duplicates {result.duplicates}, rejected {result.rejected}, "
          f"files still waiting {result.pending}" + (f": {result.error}" if result.error else ""))
    return 1 if result.error else 0


if __name__ == "__main__":
    raise SystemExit(main())
