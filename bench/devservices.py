"""Time to provide the dev services: jar resolution (cold and cached) and each start.

`python -m bench.devservices` measures the cached path; `--cold` first resolves the jars
into an empty temporary cache and Maven repository (downloads everything, takes minutes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from quantcore.devservices.kafka import KafkaBroker, kafka_jars
from quantcore.devservices.redis import RedisServer
from quantcore.devservices.spark import spark_jars
from quantcore.stream.session import build_session

T = TypeVar("T")


def timed(label: str, action: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = action()
    print(f"{label:<34} {time.perf_counter() - start:8.2f} s")
    return result


def resolve_all(label: str) -> None:
    timed(f"{label}: kafka jars", kafka_jars)
    timed(f"{label}: spark connector jars", spark_jars)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="also resolve into an empty cache")
    args = parser.parse_args()
    if args.cold:
        with tempfile.TemporaryDirectory() as empty:
            saved = {k: os.environ.get(k) for k in ("QUANTCORE_CACHE", "MAVEN_OPTS")}
            os.environ["QUANTCORE_CACHE"] = str(Path(empty) / "cache")
            os.environ["MAVEN_OPTS"] = f"-Dmaven.repo.local={Path(empty) / 'm2'}"
            try:
                resolve_all("cold")
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
    resolve_all("cached")
    with tempfile.TemporaryDirectory() as work:
        kafka = KafkaBroker(Path(work) / "kafka")
        redis = RedisServer(Path(work) / "redis")
        try:
            timed("start kafka (until metadata)", kafka.start)
            timed("start redis (until PING)", redis.start)
        finally:
            timed("stop kafka", kafka.stop)
            timed("stop redis", redis.stop)
    jars = [str(j) for j in spark_jars()]
    session = timed("start spark session", lambda: build_session("bench", jars))
    timed("spark: first query (range count)", lambda: session.range(1000).count())
    session.stop()


if __name__ == "__main__":
    main()
