"""`weir.extras`: DynamicBatcher and TokenBatcher (see _batcher)."""

from __future__ import annotations

from ._batcher import BatchStats, DynamicBatcher, TokenBatcher

__all__ = ["BatchStats", "DynamicBatcher", "TokenBatcher"]
