"""A sub-model whose fit waits while a file exists, so a test can kill a
worker at a known point: in the middle of a fit.

It is the TF-IDF + logistic regression built-in with one more parameter,
``hold_file``: ``fit`` first touches ``<hold_file>.fitting`` (the test's sign
that the fit has begun), then waits while ``hold_file`` exists (at most
``max_hold_seconds``), then fits as the built-in does. A Celery worker loads it
with ``--include tests.iterations.held_submodel``; importing the module
registers it there. Test processes register it only for the tests that use it
(see ``held`` in test_training_worker.py), so the registry other tests see
holds the built-ins alone.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from ml.submodels import TfidfLogReg, register
from ml.submodels.tfidf import TfidfLogRegParams

NAME = "test_held_tfidf"


@dataclass
class HeldTfidfParams(TfidfLogRegParams):
    hold_file: str = ""
    max_hold_seconds: float = 120.0


@register
class HeldTfidf(TfidfLogReg):
    name = NAME
    version = "1"
    Params = HeldTfidfParams

    def _fit(self, frame, y, seed):
        hold = Path(self.params.hold_file) if self.params.hold_file else None
        if hold is not None:
            hold.with_name(hold.name + ".fitting").touch()
            deadline = time.monotonic() + self.params.max_hold_seconds
            while hold.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        super()._fit(frame, y, seed)
