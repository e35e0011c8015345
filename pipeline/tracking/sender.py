"""Metric points sent to the store from a background thread, so a slow or absent store never
stalls training."""
from __future__ import annotations

import threading
import time
from typing import Optional

from mlflow import MlflowClient

from .store import tracking_uri


class MetricSender:
    """Sends a run's metric points from a background thread, oldest first. While the tracking
    store does not answer, the points wait here and the sending is retried: training goes on,
    nothing is lost, and one line says when the store stopped answering and one when it is back."""

    BATCH = 1000  # MLflow's limit of metrics per log_batch
    SLOW_S = 10.0  # a send that takes longer is reported as an outage

    def __init__(self, client: MlflowClient, run_id: str, say=None):

        self.client, self.run_id = client, run_id
        self.say = say or (lambda message: print(message, flush=True))
        self._pending: list = []
        self._sending = 0  # points taken from _pending and not yet confirmed
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=f"metrics-{run_id[:8]}", daemon=True)
        self._thread.start()

    def add(self, points: list) -> None:
        with self._changed:
            self._pending.extend(points)
            self._changed.notify_all()

    def waiting(self) -> int:
        with self._changed:
            return len(self._pending) + self._sending

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every point is stored (or ``timeout`` seconds pass); True when all are."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._sending, timeout)

    def _loop(self) -> None:
        trouble_since, delay = None, 1.0
        reported = threading.Event()  # the user has been told; said once per outage

        def report(why: str) -> None:
            if not reported.is_set():
                reported.set()
                self.say(f"the tracking store {tracking_uri()} {why}; training goes on, the metric points "
                         f"wait here ({self.waiting()} now) and are sent when it answers")

        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending)
                batch = self._pending[:self.BATCH]
                del self._pending[:len(batch)]
                self._sending = len(batch)
            began = time.monotonic()
            # MLflow retries a request for minutes before it fails: say so while it is still trying.
            slow = threading.Timer(self.SLOW_S, report, (f"has not answered for {self.SLOW_S:.0f} s",))
            slow.daemon = True
            slow.start()
            try:
                self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            except Exception as e:  # noqa: BLE001  (any failure to store: keep the points, retry)
                slow.cancel()
                with self._changed:
                    self._pending[:0] = batch
                    self._sending = 0
                    self._changed.notify_all()
                trouble_since = trouble_since or began
                report(f"does not take metrics ({str(e).splitlines()[0][:160]})")
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            slow.cancel()
            with self._changed:
                self._sending = 0
                self._changed.notify_all()
            if reported.is_set():
                self.say(f"the tracking store answers again after {time.monotonic() - (trouble_since or began):.0f} s; "
                         "the waiting metric points are sent")
                reported.clear()
            trouble_since, delay = None, 1.0


