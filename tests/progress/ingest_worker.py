"""Ingest batches forever, saying where it is: the process the kill-safety tests SIGKILL.

    python -m tests.progress.ingest_worker URL RUN PAUSE_S

Batch n holds the events random_events(BATCH, "RUN-n"). Each batch is one transaction, written
in two halves; "half n" is printed between them (after PAUSE_S the second half follows), and
"committed n" once the transaction has committed.
"""

import sys
import time

from assessments.progress import db
from assessments.progress.events import ingest

from .eventgen import random_events

BATCH = 300


def main() -> None:
    url, run, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    engine = db.engine_for(url)
    n = 0
    while True:
        evs = random_events(BATCH, f"{run}-{n}")
        with db.write_transaction(engine) as conn:
            ingest(conn, evs[:BATCH // 2], source="worker")
            print(f"half {n}", flush=True)
            time.sleep(pause)
            ingest(conn, evs[BATCH // 2:], source="worker")
        print(f"committed {n}", flush=True)
        n += 1


if __name__ == "__main__":
    main()
