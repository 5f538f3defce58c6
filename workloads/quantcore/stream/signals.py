"""Every signal as Spark SQL expressions: built-in functions only, all of them compiled by
Spark's code generation.

No Python UDF (rows never leave the JVM to be computed) and no shuffle or state: each book
record carries its own top-N book and the previous top of book, and each trade-flow record its
windows' buy and sell volumes (kept by the feed shard, quantcore.feed.tradeflow), so every
signal is a projection of one row. Output columns are named after the fields of the protobuf messages
(quantcore.v1.BookSignals / TradeFlow / Hops) so the relay fills them by name.

Per-level sums are written out level by level (`get(array, i)`, at most MAX_LEVELS levels)
and per-level checks use sorted arrays, instead of higher-order functions (`aggregate`,
`forall`, `zip_with`):
Spark runs those outside generated code, and in Spark 4.2 every array element read there
(UnsafeArrayData.get -> PhysicalDataType -> TypeOps -> SQLConf.get) builds a new SQLConf on
a task thread. Measured: about 75 ms of CPU per book row, so the job could not keep up with
a few hundred updates/s in either trigger mode.

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
- Trade-flow imbalance over W in {1 s, 5 s, 30 s}: (buy volume - sell volume) / (buy + sell
  volume) of the flow record's window W (the trades with trade time in (as_of - W, as_of],
  the aggressor bought unless `buyer_is_maker`); null when both are 0. volume_Ws = buy + sell,
  window_end_ms = as_of_ms, sequence = the record's own.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from quantcore.events import BookRecord, TradeFlowRecord, TradeRecord
from quantcore.stream.schema import required_fields, spark_schema

OBI_LEVELS = (1, 5, 10, 20)
# The largest `max_levels`: the sums are written out level by level, so it bounds their size
# (the feed publishes at most 20 levels; deeper books are read to max_levels).
MAX_LEVELS = 50
FLOW_WINDOWS_S = (1, 5, 30)
BPS = 1e4


Record = type[BookRecord] | type[TradeRecord] | type[TradeFlowRecord]


def parse(kafka: DataFrame, model: Record) -> DataFrame:
    """Kafka rows -> `r` (the record parsed once; null fields where the JSON did not fit) plus
    the Kafka coordinates and append time. Unparseable JSON yields a null `r`, not an error."""
    return kafka.select(
        F.from_json(
            F.col("value").cast("string"), spark_schema(model), {"mode": "PERMISSIVE"}
        ).alias("r"),
        "topic",
        "partition",
        "offset",
        kafka_append_ns(),
    )


def kafka_append_ns() -> Column:
    """A Kafka row's append time (the broker's timestamp) in ns: the hop the broker adds."""
    return (F.unix_micros(F.col("timestamp")) * F.lit(1000)).alias("kafka_append_ns")


def _all_present(model: Record) -> Column:
    cond = F.col("r").isNotNull()
    for name in required_fields(model):
        cond = cond & F.col(f"r.{name}").isNotNull()
    return cond


def _level(values: Column, i: int) -> Column:
    """Level i (from 0) of an array column; null beyond its end (even in ANSI mode)."""
    return F.get(values, i)


def _sum(terms: list[Column]) -> Column:
    """0.0 + t0 + t1 + ..., left to right (the order `aggregate` would add them in)."""
    return reduce(lambda acc, t: acc + t, terms, F.lit(0.0))


def _first_levels(values: Column, levels: int) -> Column:
    """The sum of the first `levels` values; a level beyond the array's end adds 0 (a shallow
    book sums what it has)."""
    return _sum([F.coalesce(_level(values, i), F.lit(0.0)) for i in range(levels)])


def _ratio(num: Column, den: Column) -> Column:
    return F.when(den != 0, num / den)


def _smallest_is(values: Column, ok: Callable[[Column], Column]) -> Column:
    """`ok` holds for the smallest value, and no value is null: an ascending sort puts nulls
    first, so the first sorted element is null when any is."""
    return ok(_level(F.sort_array(values, asc=True), 0))


def _levels_ok(px: Column, qty: Column) -> Column:
    return (
        (F.size(px) > 0)
        & (F.size(px) == F.size(qty))
        & _smallest_is(px, lambda p: p > 0)
        & _smallest_is(qty, lambda q: q >= 0)
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


def _weighted(px: Column, qty: Column, mid: Column, levels: int) -> Column:
    """Sum over the first `levels` levels of qty / (1 + |price - mid| / mid * 1e4)."""
    terms = []
    for i in range(levels):
        p, q = _level(px, i), _level(qty, i)
        terms.append(F.coalesce(q / (F.lit(1.0) + F.abs(p - mid) / mid * BPS), F.lit(0.0)))
    return _sum(terms)


def _ofi(r: Column) -> Column:
    bp, bq = _level(r.bid_px, 0), _level(r.bid_qty, 0)
    ap, aq = _level(r.ask_px, 0), _level(r.ask_qty, 0)
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


def _checked(parsed: DataFrame, valid: Column) -> DataFrame:
    """The Kafka coordinates, `valid` as a column of its own (every expression after it names
    `r`, and would otherwise repeat the whole check) and `r` for valid rows only: invalid rows
    keep only their coordinates, since computing on them could fail (ANSI mode)."""
    return parsed.select(
        "topic",
        "partition",
        "offset",
        "kafka_append_ns",
        valid.alias("valid"),
        F.when(valid, F.col("r")).alias("r"),
    )


def _update_columns(r: Column, sequence: Column) -> dict[str, Column]:
    """What every output row starts with: validity, symbol, sequence and the hop stamps."""
    return {
        "valid": F.col("valid"),
        "symbol": r.symbol,
        "sequence": sequence,
        "event_time_ms": r.event_time_ms,
        "exchange_event_ns": r.event_time_ms * F.lit(1_000_000),
        "feed_receive_ns": r.recv_time_ns,
        "feed_publish_ns": r.publish_time_ns,
        "kafka_append_ns": F.col("kafka_append_ns"),
    }


def book_signals(parsed: DataFrame, max_levels: int) -> DataFrame:
    """One output row per book record (malformed ones too, flagged `valid = false`)."""
    if not 1 <= max_levels <= MAX_LEVELS:
        raise ValueError(f"max_levels must be within 1..{MAX_LEVELS}, got {max_levels}")
    checked = _checked(parsed, book_valid())
    # Three projections, each naming what the next one reuses: the top of book and mid, then
    # the per-side sums, then the signals. Written as one, every ratio would repeat its sums
    # (numerator and denominator) and every weighted term the mid, and Spark's optimizer
    # walks that whole tree again for every batch.
    r = F.col("r")
    top = checked.select(
        "*",
        _level(r.bid_px, 0).alias("bb"),
        _level(r.ask_px, 0).alias("ba"),
        _level(r.bid_qty, 0).alias("bbq"),
        _level(r.ask_qty, 0).alias("baq"),
        ((_level(r.bid_px, 0) + _level(r.ask_px, 0)) / F.lit(2.0)).alias("mid"),
    )
    mid = F.col("mid")
    # Only the first max_levels levels count at all (obi_20 with max_levels 7 uses 7).
    depths = sorted({min(n, max_levels) for n in (*OBI_LEVELS, max_levels)})
    sums = top.select(
        "*",
        *(_first_levels(r.bid_qty, n).alias(f"bid_{n}") for n in depths),
        *(_first_levels(r.ask_qty, n).alias(f"ask_{n}") for n in depths),
        _weighted(r.bid_px, r.bid_qty, mid, max_levels).alias("bid_weighted"),
        _weighted(r.ask_px, r.ask_qty, mid, max_levels).alias("ask_weighted"),
    )

    def imbalance(side: str) -> Column:
        b, a = F.col(f"bid_{side}"), F.col(f"ask_{side}")
        return _ratio(b - a, b + a)

    bb, ba, bbq, baq = F.col("bb"), F.col("ba"), F.col("bbq"), F.col("baq")
    spread = ba - bb
    columns: dict[str, Column] = {
        **_update_columns(r, r.seq),
        "best_bid": bb,
        "best_ask": ba,
        "best_bid_qty": bbq,
        "best_ask_qty": baq,
        "mid": mid,
        "microprice": _ratio(bb * baq + ba * bbq, bbq + baq),
        "spread": spread,
        "spread_bps": spread / mid * BPS,
        "spread_ticks": spread / r.tick_size,
        **{f"obi_{n}": imbalance(str(min(n, max_levels))) for n in OBI_LEVELS},
        "obi_max": imbalance(str(max_levels)),
        "max_levels": F.lit(max_levels),
        "obi_weighted": imbalance("weighted"),
        "ofi_l1": _ofi(r),
    }
    return sums.select(
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


def flow_valid() -> Column:
    r = F.col("r")
    volumes = [r[f"{side}_volume_{w}s"] >= 0 for w in FLOW_WINDOWS_S for side in ("buy", "sell")]
    return F.coalesce(
        reduce(lambda a, b: a & b, volumes, _all_present(TradeFlowRecord) & (r.sequence >= 0)),
        F.lit(False),
    )


def trade_flow(parsed: DataFrame) -> DataFrame:
    """One output row per trade-flow record (malformed ones too, flagged `valid = false`):
    the windows' ratios and totals, a projection (the shard keeps the windows)."""
    checked = _checked(parsed, flow_valid())
    r = F.col("r")
    columns = _update_columns(r, r.sequence)
    for w in FLOW_WINDOWS_S:
        buy, sell = r[f"buy_volume_{w}s"], r[f"sell_volume_{w}s"]
        columns[f"tfi_{w}s"] = _ratio(buy - sell, buy + sell)
        columns[f"volume_{w}s"] = buy + sell
    columns["window_end_ms"] = r.as_of_ms
    return checked.select(
        "topic", "partition", "offset", *(col.alias(name) for name, col in columns.items())
    )
