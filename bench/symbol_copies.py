"""Recordings copied under other symbol names, for the benchmarks: the logic lives in the
feed (`quantcore.feed.copies`, which the replay server's `--symbols` also uses)."""

from __future__ import annotations

from quantcore.feed.copies import DEPTH_INTERVAL_NS, QUOTE, copy_name, renamed, write_copies

__all__ = ["DEPTH_INTERVAL_NS", "QUOTE", "copy_name", "renamed", "write_copies"]
