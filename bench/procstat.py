"""What /proc says about a process's CPU time and memory, for benchmarks that report both."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")  # clock ticks per second in /proc/*/stat (USER_HZ)


def _stat_cpu_seconds(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds of each thread of this process, keyed "tid name" (librdkafka's are rdk:*)."""
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except FileNotFoundError:
            continue  # the thread just ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[f"{tid} {name}"] = _stat_cpu_seconds(stat)
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, all cores (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def rss_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a live process."""
    status = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def process_tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds of `root` and each of its live descendants, keyed "pid what" (the
    command line's most telling words: `quantcore feed`, `java ... kafka.Kafka`, ...)."""
    stats: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stats[int(entry)] = Path(f"/proc/{entry}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
    parents = {pid: int(stat.rsplit(")", 1)[1].split()[1]) for pid, stat in stats.items()}
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    out: dict[str, float] = {}
    for pid in sorted(tree):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            out[f"{pid} {_what(argv)}"] = _stat_cpu_seconds(stats[pid])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _what(argv: list[bytes]) -> str:
    words = [a.decode(errors="replace") for a in argv if a]
    if "quantcore.cli" in words:
        return "quantcore " + " ".join(words[words.index("quantcore.cli") + 1 :][:1])
    for marker, name in (("kafka.Kafka", "kafka broker"), ("pyspark", "spark driver JVM")):
        if any(marker in w for w in words):
            return name
    return os.path.basename(words[0]) if words else "?"
