# Stub of the compiled level parser (_levels.c); codec.python_plain_levels is its reference.
from quantcore.feed.messages import Level

def plain_levels(bids: bytes, asks: bytes) -> tuple[list[Level], list[Level]] | None: ...
