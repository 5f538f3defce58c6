"""The stream job compacting its own lake sink while it writes it: every `every_s` seconds, one
quantcore.lakecompaction pass over the windows the sink can no longer add to.

In the job's driver because the job owns its sink: it has the sink's location and the
credentials that write it (the same S3 settings as its checkpoints), and no other process may
merge a sink a job is writing. A failed pass (the object store away, a bad file) is logged and
tried again at the next; it never stops the queries.
"""

from __future__ import annotations

import logging
import threading

from quantcore import lakecompaction, lakemerge

log = logging.getLogger(__name__)

EVERY_S = 300.0


class LakeCompactor:
    def __init__(
        self,
        location: str,
        every_s: float = EVERY_S,
        window_ms: int = lakemerge.HOUR_MS,
        margin_ms: int = lakemerge.CLOCK_MARGIN_MS,
    ) -> None:
        self.location = location
        self.every_s = every_s
        self.window_ms = window_ms
        self.margin_ms = margin_ms
        self.passes = 0  # passes finished, failed ones included
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lake-compactor", daemon=True)

    def start(self) -> LakeCompactor:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the pass under way, if any (a merge is not cut short)."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                lakecompaction.compact_running(
                    self.location, window_ms=self.window_ms, margin_ms=self.margin_ms
                )
            except Exception as error:  # the next pass tries again; the queries go on
                log.warning(
                    "lake compaction of %s failed: %s",
                    self.location,
                    error,
                    exc_info=True,
                    extra={"event": "lake_compaction_failed"},
                )
            self.passes += 1
