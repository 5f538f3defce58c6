"""Trade-flow records a shard publishes for the recordings, with and without pacing.

    python -m bench.flow_pacing [--gap-ms 10]

Every trade-flow record crosses Kafka, Spark, the relay, Redis and the serving tier, so their
number and burstiness set the load behind which book updates queue. This counts, for the
recordings run through the shard's normalizer (deterministic: no I/O, receive times as the
clock), the records per second and the most records within any 100 ms of receive time, with a
record per trade (gap 0) and with the pacing gap, for the --symbols copies of the recordings
that `bench.end_to_end` replays (bench.symbol_copies).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

from bench.symbol_copies import write_copies
from quantcore.events import TradeFlowRecord
from quantcore.feed.recording import FLOW, publish_recording, read_recording
from quantcore.localmode.source import default_recordings_dir, recordings_in

WINDOW_NS = 100_000_000


def flow_figures(paths: list[Path], gap_ns: int) -> tuple[int, float, int]:
    """(records, records per second, most records in one 100 ms of receive time)."""
    published = publish_recording(*paths, flow_min_gap_ns=gap_ns)
    flows = [TradeFlowRecord.model_validate_json(v) for v in published.values(FLOW)]
    per_window = Counter(f.recv_time_ns // WINDOW_NS for f in flows)
    times = [line.recv_ns for p in paths for line in read_recording(p)]
    seconds = (max(times) - min(times)) / 1e9
    return len(flows), len(flows) / seconds, max(per_window.values(), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--symbols", type=int, default=30)
    args = parser.parse_args()
    sources = sorted(recordings_in(default_recordings_dir(), None))
    with tempfile.TemporaryDirectory(prefix="bench-flow-pacing-") as tmp:
        paths = write_copies(sources, Path(tmp), -(-args.symbols // len(sources)))
        base = flow_figures(paths, 0)
        paced = flow_figures(paths, int(args.gap_ms * 1_000_000))
    print(f"trade-flow records of {len(paths)} symbols (copies of {len(sources)} recordings)")
    print(f"{'':24}{'records':>9}{'per s':>9}{'most in 100 ms':>16}")
    for name, (n, rate, burst) in (
        ("a record per trade", base),
        (f"paced, {args.gap_ms:g} ms gap", paced),
    ):
        print(f"{name:24}{n:>9}{rate:>9.1f}{burst:>16}")
    print(
        f"records: {base[0] / paced[0]:.1f}x fewer; worst 100 ms: {base[2] / paced[2]:.1f}x fewer"
    )


if __name__ == "__main__":
    main()
