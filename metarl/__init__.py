"""metarl core: configuration, episodes, sampling, optimisation helpers, logging; no task family or policy class."""

from __future__ import annotations
