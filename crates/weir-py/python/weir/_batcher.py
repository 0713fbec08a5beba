"""Placeholder until the batcher lands."""
from .errors import NotSupportedError


class BatchStats:  # noqa: D101
    pass


class DynamicBatcher:  # noqa: D101
    def __init__(self, *a, **k):
        raise NotSupportedError("DynamicBatcher is not supported yet")


class TokenBatcher(DynamicBatcher):  # noqa: D101
    pass
