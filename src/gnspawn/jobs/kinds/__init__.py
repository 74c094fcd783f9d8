"""The kinds of job, one module each: every Kind subclass defined here is registered."""

from __future__ import annotations

import importlib
import pkgutil

from gnspawn.jobs.context import Kind
from gnspawn.names import JobType


def _load() -> dict[JobType, Kind]:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    kinds = {cls.type: cls() for cls in Kind.__subclasses__()}
    missing = set(JobType) - set(kinds)
    assert not missing, f"no module in {__name__} for job types {sorted(missing)}"
    return kinds


KINDS: dict[JobType, Kind] = _load()
"""Each job type's kind."""
