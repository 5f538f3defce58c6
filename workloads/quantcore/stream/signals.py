"""Every signal as Spark SQL expressions: built-in functions and higher-order functions only.

No Python UDF (rows never leave the JVM to be computed) and, for books, no shuffle: each
book record carries its own top-N book and the previous top of book, so every signal is a
projection of one row. Output columns are named after the fields of the protobuf messages
(quantcore.v1.BookSignals / TradeFlow / Hops) so the sink fills them by name.

Conventions (mirrored by the reference implementation in the tests):
- OBI over N levels: (sum bid qty - sum ask qty) / (sum bid qty + sum ask qty) over the first
  N levels the record carries (fewer if the book is shallower); null when both sums are 0.
- Weighted imbalance: the same ratio over every level up to `max_levels`, each quantity
  weighted by 1 / (1 + |price - mid| / mid * 1e4), i.e. by its distance from mid in bps, so
  the touch counts fully and a level 10 bps away counts 1/11.
- Level-1 OFI (Cont, Kukanov, Stoikov 2014):
  e = 1{Pb >= Pb'} qb - 1{Pb <= Pb'} qb' - 1{Pa <= Pa'} qa + 1{Pa >= Pa'} qa'
  against the previous top of book (primed) carried in the record. With no previous top
  (the first record after a (re)sync) there is no measurable flow: 0, so a running sum of
  OFI stays finite.
- Trade-flow imbalance over W in {1 s, 5 s, 30 s}: (buy qty - sell qty) / (buy + sell qty)
  of the trades with trade time in [end - W, end), where `end` is the one-second boundary
  following the symbol's latest trade; the aggressor bought unless `buyer_is_maker`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from quantcore.events import BookRecord, TradeRecord
from quantcore.stream.schema import required_fields, spark_schema

OBI_LEVELS = (1, 5, 10, 20)
FLOW_WINDOWS_S = (1, 5, 30)
BPS = 1e4


def parse(kafka: DataFrame, model: type[BookRecord] | type[TradeRecord]) -> DataFrame:
    """Kafka rows -> `r` (the record parsed once; null fields where the JSON did not fit) plus
    the Kafka coordinates and append time. Unparseable JSON yields a null `r`, not an error."""
    return kafka.select(
        F.from_json(
            F.col("value").cast("string"), spark_schema(model), {"mode": "PERMISSIVE"}
        ).alias("r"),
        "topic",
        "partition",
        "offset",
        (F.unix_micros(F.col("timestamp")) * F.lit(1000)).alias("kafka_append_ns"),
    )


def _all_present(model: type[BookRecord] | type[TradeRecord]) -> Column:
    cond = F.col("r").isNotNull()
    for name in required_fields(model):
        cond = cond & F.col(f"r.{name}").isNotNull()
    return cond


def _sum(values: Column) -> Column:
    return F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x)


def _ratio(num: Column, den: Column) -> Column:
    return F.when(den != 0, num / den)


def _levels_ok(px: Column, qty: Column) -> Column:
    return (
        (F.size(px) > 0)
        & (F.size(px) == F.size(qty))
        & F.forall(px, lambda p: p.isNotNull() & (p > 0))
        & F.forall(qty, lambda q: q.isNotNull() & (q >= 0))
    )


def book_valid() -> Column:
    r = F.col("r")
    return F.coalesce(
        _all_present(BookRecord)
        & (r.tick_size > 0)
        & (r.seq >= 0)
        & _levels_ok(r.bid_px, r.bid_qty)
        & _levels_ok(r.ask_px, r.ask_qty),
        F.lit(False),
    )


def _imbalance(bid_qty: Column, ask_qty: Column, levels: int) -> Column:
    b = _sum(F.slice(bid_qty, 1, levels))
    a = _sum(F.slice(ask_qty, 1, levels))
    return _ratio(b - a, b + a)


def _weighted(px: Column, qty: Column, mid: Column) -> Column:
    return _sum(F.zip_with(px, qty, lambda p, q: q / (F.lit(1.0) + F.abs(p - mid) / mid * BPS)))


def _ofi(r: Column) -> Column:
    bp, bq, ap, aq = r.bid_px[0], r.bid_qty[0], r.ask_px[0], r.ask_qty[0]
    pbp, pbq, pap, paq = r.prev_bid_px, r.prev_bid_qty, r.prev_ask_px, r.prev_ask_qty
    zero = F.lit(0.0)
    e = (
        F.when(bp >= pbp, bq).otherwise(zero)
        - F.when(bp <= pbp, pbq).otherwise(zero)
        - F.when(ap <= pap, aq).otherwise(zero)
        + F.when(ap >= pap, paq).otherwise(zero)
    )
    has_prev = pbp.isNotNull() & pbq.isNotNull() & pap.isNotNull() & paq.isNotNull()
    return F.when(has_prev, e).otherwise(zero)


def book_signals(parsed: DataFrame, max_levels: int) -> DataFrame:
    """One output row per book record (malformed ones too, flagged `valid = false`)."""
    if max_levels < 1:
        raise ValueError(f"max_levels must be >= 1, got {max_levels}")
    valid = book_valid()
    # Invalid rows keep only their coordinates: computing on them could fail (ANSI mode).
    r = F.when(valid, F.col("r"))
    bid_px = F.slice(r.bid_px, 1, max_levels)
    bid_qty = F.slice(r.bid_qty, 1, max_levels)
    ask_px = F.slice(r.ask_px, 1, max_levels)
    ask_qty = F.slice(r.ask_qty, 1, max_levels)
    bb, ba, bbq, baq = bid_px[0], ask_px[0], bid_qty[0], ask_qty[0]
    mid = (bb + ba) / F.lit(2.0)
    wb = _weighted(bid_px, bid_qty, mid)
    wa = _weighted(ask_px, ask_qty, mid)
    spread = ba - bb
    columns: dict[str, Column] = {
        "valid": valid,
        "symbol": r.symbol,
        "sequence": r.seq,
        "event_time_ms": r.event_time_ms,
        "exchange_event_ns": r.event_time_ms * F.lit(1_000_000),
        "feed_receive_ns": r.recv_time_ns,
        "feed_publish_ns": r.publish_time_ns,
        "kafka_append_ns": F.col("kafka_append_ns"),
        "best_bid": bb,
        "best_ask": ba,
        "best_bid_qty": bbq,
        "best_ask_qty": baq,
        "mid": mid,
        "microprice": _ratio(bb * baq + ba * bbq, bbq + baq),
        "spread": spread,
        "spread_bps": spread / mid * BPS,
        "spread_ticks": spread / r.tick_size,
        **{f"obi_{n}": _imbalance(bid_qty, ask_qty, n) for n in OBI_LEVELS},
        "obi_max": _imbalance(bid_qty, ask_qty, max_levels),
        "max_levels": F.lit(max_levels),
        "obi_weighted": _ratio(wb - wa, wb + wa),
        "ofi_l1": _ofi(r),
    }
    return parsed.select(
        "topic", "partition", "offset", *(col.alias(name) for name, col in columns.items())
    )


def trade_valid() -> Column:
    r = F.col("r")
    return F.coalesce(
        _all_present(TradeRecord) & (r.price > 0) & (r.qty >= 0) & (r.trade_id >= 0),
        F.lit(False),
    )


def malformed(parsed: DataFrame, valid: Column) -> DataFrame:
    """The coordinates of records that fail `valid`, for the sink to count."""
    return parsed.where(~valid).select("topic", "partition", "offset", F.lit(False).alias("valid"))


def trade_flow(parsed: DataFrame, watermark: str) -> DataFrame:
    """Trade-flow imbalance per symbol, updated with every batch of trades (update mode).

    Each trade is expanded into the 30 one-second-sliding windows of 30 s that contain it;
    a window's 1 s and 5 s figures are the trades in its last 1 s / 5 s. Only the window
    that ends on the second after the symbol's latest trade is emitted: the others are
    partial views of the future. Duplicate trades (same symbol and id) are counted once.
    """
    longest = max(FLOW_WINDOWS_S)
    trades = (
        parsed.where(trade_valid())
        .select("r.*", "kafka_append_ns")
        .withColumn("ts", F.timestamp_millis("trade_time_ms"))
        .withWatermark("ts", watermark)
        .dropDuplicates(["symbol", "trade_id", "ts"])
        .withColumn("w", F.window("ts", f"{longest} seconds", "1 second"))
        .withColumn(
            "signed_qty", F.when(F.col("buyer_is_maker"), -F.col("qty")).otherwise(F.col("qty"))
        )
    )
    end_ms = F.unix_millis(F.col("w.end"))
    trade_ms = F.col("trade_time_ms")
    sums = []
    for seconds in FLOW_WINDOWS_S:
        inside = trade_ms >= end_ms - F.lit(seconds * 1000)
        sums.append(F.sum(F.when(inside, F.col("qty")).otherwise(0.0)).alias(f"volume_{seconds}s"))
        sums.append(
            F.sum(F.when(inside, F.col("signed_qty")).otherwise(0.0)).alias(f"flow_{seconds}s")
        )
    latest = F.max_by(
        F.struct("trade_id", "event_time_ms", "recv_time_ns", "publish_time_ns", "kafka_append_ns"),
        F.col("trade_id"),
    )
    agg = trades.groupBy("symbol", "w").agg(
        *sums, latest.alias("last"), F.max("trade_time_ms").alias("last_trade_ms")
    )
    window_end = F.unix_millis(F.col("w.end"))
    return agg.where(F.col("last_trade_ms") >= window_end - F.lit(1000)).select(
        F.lit(True).alias("valid"),
        "symbol",
        F.col("last.trade_id").alias("sequence"),
        F.col("last.event_time_ms").alias("event_time_ms"),
        (F.col("last.event_time_ms") * F.lit(1_000_000)).alias("exchange_event_ns"),
        F.col("last.recv_time_ns").alias("feed_receive_ns"),
        F.col("last.publish_time_ns").alias("feed_publish_ns"),
        F.col("last.kafka_append_ns").alias("kafka_append_ns"),
        *(
            _ratio(F.col(f"flow_{s}s"), F.col(f"volume_{s}s")).alias(f"tfi_{s}s")
            for s in FLOW_WINDOWS_S
        ),
        *(F.col(f"volume_{s}s") for s in FLOW_WINDOWS_S),
        window_end.alias("window_end_ms"),
    )
