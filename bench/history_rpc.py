"""How fast the History RPC delivers one symbol-day of signals, against a local read.

The lake is Spark's: the repository's recordings go through the stream job's own expressions
(quantcore.stream.signals, quantcore.stream.lakerows) into its file sink
(quantcore.stream.lakesink), each book signal repeated, shifted by the recording's length, until
the copies cover one UTC day (a day of a symbol as busy as the recording). Then a real server
(`MarketDataServer`, TLS and a bearer token, a real redis-server for its live side) serves it,
and a client pages through the whole day with the default limits (calls of 100000 rows, pages of
5000), decoding every page; the same rows read locally through DuckDB (as `quantcore history`
does) are the reference.

    python -m bench.history_rpc [--symbol BTCUSDT] [--lake DIR]   # --lake: keep or reuse it
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from quantcore import lake, lakereader
from quantcore.client.history import HistoryPages, HistoryQuery
from quantcore.client.security import ClientCredentials
from quantcore.devservices import certs, kafkalike
from quantcore.devservices.redis import RedisServer
from quantcore.events import BookRecord
from quantcore.feed.recording import records_from_recording
from quantcore.historyrows import decode_columns
from quantcore.localmode.source import default_recordings_dir
from quantcore.redisacl import SERVE
from quantcore.serve.credentials import TlsFiles
from quantcore.serve.server import MarketDataServer, ServerConfig

DAY_MS = 86_400_000
TOKEN = "bench-token-0123456789abcdef"


def write_day_lake(root: Path, work: Path) -> str:
    """A day of book signals per symbol in `root` (one sink); returns the day."""
    from pyspark.sql import functions as F

    from quantcore.stream import lakerows, signals
    from quantcore.stream.lakesink import lake_writer
    from quantcore.stream.session import build_session

    books = [
        r
        for r in records_from_recording(*sorted(default_recordings_dir().glob("*.gz")))
        if isinstance(r, BookRecord)
    ]
    first = min(r.event_time_ms for r in books)
    period = max(r.event_time_ms for r in books) - first + 100
    day_start = first - first % DAY_MS
    copies = -(-DAY_MS // period)
    seq_span = max(r.seq for r in books) + 1
    inputs = work / "inputs"
    inputs.mkdir()
    kafkalike.write(inputs / "books.json", enumerate(books))
    spark = build_session("bench-history-lake", [])
    rows = signals.book_signals(
        signals.parse(spark.readStream.schema(kafkalike.schema()).json(str(inputs)), BookRecord),
        20,
    )
    # Copy k of the recording starts k periods after the day's start.
    shift = F.col("copy") * F.lit(period) + F.lit(day_start - first)
    day = (
        rows.crossJoin(spark.range(copies).withColumnRenamed("id", "copy"))
        .withColumn("event_time_ms", F.col("event_time_ms") + shift)
        .withColumn("sequence", F.col("sequence") + F.col("copy") * F.lit(seq_span))
        .where(F.col("event_time_ms") < F.lit(day_start + DAY_MS))
        .drop("copy")
    )
    query = (
        lake_writer(lakerows.published(day), str(root / "sink"), "signals", str(work / "ckpt"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    spark.stop()
    return lake.partition_date(day_start)


async def read_day(target: str, credentials: ClientCredentials, symbol: str, day: str) -> None:
    span = lake.interval(day, day)
    pager = HistoryPages(target, HistoryQuery(symbol, span.start_ms, span.end_ms), credentials)
    rows = 0
    started = time.perf_counter()
    async for page in pager.pages():
        rows += len(decode_columns(page)[1])
    elapsed = time.perf_counter() - started
    print(
        f"History, {symbol} {day}: {rows} rows, {pager.stats.pages} pages,"
        f" {pager.stats.calls} calls in {elapsed:.1f} s: {rows / elapsed:,.0f} rows/s"
        " (TLS, bearer token, every page decoded)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--lake", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="history-bench-") as temp:
        work = Path(temp)
        root = args.lake or work / "lake"
        if not (root / "sink" / "signals" / lake.METADATA_DIR).is_dir():
            started = time.perf_counter()
            day = write_day_lake(root, work)
            print(f"lake of a day written by Spark in {time.perf_counter() - started:.0f} s")
        else:
            day = min(
                d
                for d in (lake.date_dir_day(p.name) for p in (root / "sink" / "signals").iterdir())
                if d
            )
        span = lake.interval(day, day)
        started = time.perf_counter()
        plan = lakereader.plan(root, "signals", args.symbol, span)
        page = lakereader.read_page(plan, None, 10**9)
        elapsed = time.perf_counter() - started
        print(
            f"local DuckDB read, {args.symbol} {day}: {len(page.rows)} rows, {len(plan.files)}"
            f" files in {elapsed:.1f} s: {len(page.rows) / elapsed:,.0f} rows/s"
        )
        ca = certs.new_ca("bench CA")
        server_pair = certs.issue(ca, "serve", names=("127.0.0.1",), server=True)
        certs.write_pair(work / "tls", server_pair, "tls.crt", "tls.key")
        certs.write_public(work / "ca.crt", ca.cert_pem)
        (work / "tokens").write_text(f"bench {TOKEN}\n")
        redis = RedisServer(work / "redis")
        with redis:

            async def serve_and_read() -> None:
                server = MarketDataServer(
                    ServerConfig(
                        redis_url=redis.address,
                        redis_auth=redis.auth(SERVE),
                        host="127.0.0.1",
                        port=0,
                        tls=TlsFiles.from_dir(work / "tls", False),
                        tokens_path=work / "tokens",
                        lake_path=root,
                    )
                )
                await server.start()
                try:
                    credentials = ClientCredentials(ca=work / "ca.crt", token=TOKEN)
                    await read_day(f"127.0.0.1:{server.port}", credentials, args.symbol, day)
                finally:
                    await server.stop(grace=1)

            asyncio.run(serve_and_read())


if __name__ == "__main__":
    main()
