"""metarl agents: policies and meta-learners (torch)."""

from __future__ import annotations
