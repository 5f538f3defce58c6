"""How a feed shard is started: its command line and the environment its CLI reads.

Spelled once for every writer (the operator's planner, local mode, the test harness) and the
reader (`quantcore feed`'s argument parser, `quantcore.feed.commands.feed`).
"""

from __future__ import annotations

from quantcore.events import Topics

# Inside a pod the shard serves /metrics and /healthz here on every interface.
POD_METRICS_PORT = 9090

DEPTH_LEVELS_ENV = "QUANTCORE_DEPTH_LEVELS"
DEPTH_INTERVAL_ENV = "QUANTCORE_DEPTH_INTERVAL_MS"
TRADES_ENV = "QUANTCORE_TRADES"
BOOK_TICKER_ENV = "QUANTCORE_BOOK_TICKER"
METRICS_PORT_ENV = "QUANTCORE_METRICS_PORT"
METRICS_HOST_ENV = "QUANTCORE_METRICS_HOST"


def topic_env(kind: str) -> str:
    """The variable naming the topic of one kind: raw -> QUANTCORE_TOPIC_RAW."""
    return f"QUANTCORE_TOPIC_{kind.upper()}"


def shard_args(
    *,
    routing: str,
    shard: int,
    kafka: str,
    ws_url: str,
    rest_url: str,
    metrics_port: int | None = None,
    topic_prefix: str | None = None,
) -> list[str]:
    """`quantcore feed ...`'s arguments (without the program) for one shard."""
    args = [
        "feed",
        "--routing", routing,
        "--shard", str(shard),
        "--kafka", kafka,
        "--ws-url", ws_url,
        "--rest-url", rest_url,
    ]  # fmt: skip
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port)]
    if topic_prefix:
        args += ["--topic-prefix", topic_prefix]
    return args


def shard_environment(
    *, levels: int, interval_ms: int, trades: bool, book_ticker: bool, topics: Topics
) -> dict[str, str]:
    """The stream settings and topic names a shard reads from its environment."""
    env = {
        DEPTH_LEVELS_ENV: str(levels),
        DEPTH_INTERVAL_ENV: str(interval_ms),
        TRADES_ENV: str(trades).lower(),
        BOOK_TICKER_ENV: str(book_ticker).lower(),
    }
    env.update({topic_env(kind): name for kind, name in topics.by_kind().items()})
    return env
