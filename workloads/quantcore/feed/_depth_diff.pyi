# Stub of the compiled diff-frame parser (_depth_diff.c); binance.python_parse_depth_diff is
# its reference.
from quantcore.feed.messages import Level

def parse(frame: bytes) -> tuple[str, int, int, int, list[Level], list[Level]] | None: ...
