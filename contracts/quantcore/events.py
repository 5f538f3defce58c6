"""Records on the normalized Kafka topics: the one schema the feed writes and the stream reads.

JSON on the wire (one object per record, key = symbol). The stream job derives its Spark
schema from these models (`quantcore.stream` must not declare the fields a second time).
Prices and quantities are floats: every value was validated finite and non-negative by the
feed before it got here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BookRecord(_Record):
    """A validated top-N order book after applying one exchange update (topic `book`)."""

    symbol: str
    seq: int = Field(description="exchange sequence: the update's final id (Binance `u`)")
    first_seq: int = Field(description="first update id folded into this record (Binance `U`)")
    event_time_ms: int = Field(description="exchange event time (Binance `E`)")
    recv_time_ns: int = Field(description="feed shard receive time of the frame")
    publish_time_ns: int = Field(description="feed shard hand-off to the producer")
    tick_size: float = Field(gt=0, description="price increment, for spread in ticks")
    bid_px: list[float] = Field(description="best first, strictly decreasing")
    bid_qty: list[float]
    ask_px: list[float] = Field(description="best first, strictly increasing")
    ask_qty: list[float]
    prev_bid_px: float | None = Field(
        description="top of book before this update (None on the first record after a (re)sync)"
    )
    prev_bid_qty: float | None
    prev_ask_px: float | None
    prev_ask_qty: float | None


class TradeRecord(_Record):
    """One exchange trade (topic `trades`)."""

    symbol: str
    trade_id: int
    price: float
    qty: float
    buyer_is_maker: bool = Field(description="True: the aggressor sold")
    trade_time_ms: int
    event_time_ms: int
    recv_time_ns: int
    publish_time_ns: int


class TradeFlowRecord(_Record):
    """A symbol's buy and sell volume over trailing windows of exchange time (topic `flow`),
    computed by the feed shard (quantcore.feed.tradeflow) on every trade and on decay ticks."""

    symbol: str
    sequence: int = Field(
        description="last_trade_id * 1024 + decay ticks since that trade: grows per symbol"
    )
    as_of_ms: int = Field(description="exchange time the windows end at (inclusive)")
    buy_volume_1s: float = Field(description="aggressor-bought quantity in (as_of - 1 s, as_of]")
    sell_volume_1s: float
    buy_volume_5s: float
    sell_volume_5s: float
    buy_volume_30s: float
    sell_volume_30s: float
    last_trade_id: int
    event_time_ms: int = Field(description="the trade's event time (E), or as_of for a tick")
    recv_time_ns: int = Field(
        description="feed shard receive time of the trade frame, or when the tick was emitted"
    )
    publish_time_ns: int = Field(description="feed shard hand-off to the producer")
    tick: bool = Field(description="a decay tick (windows rolled on, no new trade)")


class QuarantineRecord(_Record):
    """Input the feed refused, with why (topic `quarantine`)."""

    symbol: str | None
    reason: str
    stream: str | None
    recv_time_ns: int
    frame: str = Field(description="the offending frame, truncated to a bounded size")


# Default topic names (a MarketFeed may override them).
RAW_TOPIC = "quantcore.raw"
BOOK_TOPIC = "quantcore.book"
TRADES_TOPIC = "quantcore.trades"
QUARANTINE_TOPIC = "quantcore.quarantine"
FLOW_TOPIC = "quantcore.flow"


def signals_topic(book_topic: str) -> str:
    """The stream job's output topic (computed signal rows, key = symbol) for a feed whose book
    topic is `book_topic`: derived from it, so feeds with their own topics never share one."""
    return f"{book_topic}.signals"


SIGNALS_TOPIC = signals_topic(BOOK_TOPIC)


@dataclass(frozen=True, slots=True)
class Topics:
    """A feed's topic names: the five its shards write (by kind) and the stream job's output.

    The one place topic names are derived: the shard's CLI, the operator (from a MarketFeed's
    `kafka.topics`), local mode and the test harness all build theirs here.
    """

    raw: str = RAW_TOPIC
    book: str = BOOK_TOPIC
    trades: str = TRADES_TOPIC
    quarantine: str = QUARANTINE_TOPIC
    flow: str = FLOW_TOPIC

    @classmethod
    def with_prefix(cls, prefix: str | None) -> Topics:
        """`acme` -> acme.raw, acme.book, ... (no prefix: the defaults, quantcore.*)."""
        if not prefix:
            return cls()
        p = prefix.rstrip(".")
        return cls(f"{p}.raw", f"{p}.book", f"{p}.trades", f"{p}.quarantine", f"{p}.flow")

    @property
    def signals(self) -> str:
        return signals_topic(self.book)

    def by_kind(self) -> dict[str, str]:
        """kind ("raw", "book", "trades", "quarantine", "flow") -> topic: what a shard writes."""
        return {
            "raw": self.raw,
            "book": self.book,
            "trades": self.trades,
            "quarantine": self.quarantine,
            "flow": self.flow,
        }

    def all(self) -> list[str]:
        """Every topic of the feed, the signals topic last."""
        return [*self.by_kind().values(), self.signals]
