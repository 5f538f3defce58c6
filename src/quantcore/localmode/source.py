"""Where market data comes from in local mode: live Binance when reachable, else a replay.

The probe is one short HTTP request, so `--source auto` decides in about a second when
there is no route to the exchange.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Source:
    kind: str  # "live" or "replay"
    ws_url: str
    rest_url: str
    why: str  # shown to the user
    recordings: tuple[Path, ...] = ()
    # Replay from this time (UTC, as `quantcore replay --from` takes it): what the recordings
    # hold before it only builds the book (an archived interval's history); played once.
    start: str | None = None


def live_reachable(rest_url: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """GET <rest>/api/v3/ping; (reachable, reason)."""
    url = rest_url.rstrip("/") + "/api/v3/ping"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status == 200, f"HTTP {reply.status} from {url}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: {reason}"


def default_recordings_dir() -> Path:
    """$QUANTCORE_RECORDINGS, else the recordings kept in the repository (recordings/)."""
    env = os.environ.get("QUANTCORE_RECORDINGS")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[3]
    return repo_root / "recordings" / "binance-spot"


def recordings_in(directory: Path, symbols: list[str] | None) -> tuple[Path, ...]:
    """Recording files (`<symbol>_<date>.gz`) in `directory`, for `symbols` if given."""
    files = sorted(directory.glob("*.gz"))
    if symbols:
        wanted = {s.lower() for s in symbols}
        files = [f for f in files if f.name.split("_")[0] in wanted]
    return tuple(files)


def symbols_of(recordings: tuple[Path, ...]) -> list[str]:
    return sorted({f.name.split("_")[0].upper() for f in recordings})


def rules_file() -> Path:
    """The platform's alert rules, the one file the chart renders (charts/quantcore/files)."""
    repo_root = Path(__file__).resolve().parents[3]
    return repo_root / "charts" / "quantcore" / "files" / "alerts" / "quantcore-rules.yaml"


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None
