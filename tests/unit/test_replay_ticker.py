"""The replay's ticker overrides and which recordings `quantcore replay` serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantcore.feed.commands.replay import RECORDINGS_ENV, recording_files
from quantcore.feed.ticker import TickerOverrideError, parse_overrides

SERVED = ["BTCUSDT", "ETHUSDT"]


def test_overrides_name_symbols_in_any_case_with_numbers_or_numeric_strings() -> None:
    body = b'{"btcusdt": 1e9, "ETHUSDT": "5e8", "BTCUSDT": 0}'
    assert parse_overrides(body, SERVED) == {"BTCUSDT": 0.0, "ETHUSDT": 5e8}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "JSON object"),
        (b'{"XRPUSDT": 1}', "XRPUSDT is not a symbol"),
        (b'{"BTCUSDT": "lots"}', "must be a number"),
        (b'{"BTCUSDT": true}', "must be a number"),
        (b'{"BTCUSDT": null}', "must be a number"),
        (b'{"BTCUSDT": -1}', ">= 0"),
        (b'{"BTCUSDT": "nan"}', "finite"),
    ],
)
def test_bad_overrides_are_refused_with_a_reason(body: bytes, error: str) -> None:
    with pytest.raises(TickerOverrideError, match=error):
        parse_overrides(body, SERVED)


def test_recording_files_expand_directories_and_fall_back_to_the_environment(
    tmp_path: Path,
) -> None:
    (tmp_path / "btcusdt_1.gz").write_bytes(b"")
    (tmp_path / "ethusdt_1.gz").write_bytes(b"")
    (tmp_path / "README.md").write_text("not a recording")
    expected = [tmp_path / "btcusdt_1.gz", tmp_path / "ethusdt_1.gz"]
    assert recording_files([tmp_path], {}) == expected
    assert recording_files([], {RECORDINGS_ENV: str(tmp_path)}) == expected
    assert recording_files([tmp_path / "ethusdt_1.gz"], {}) == expected[1:]


@pytest.mark.parametrize(
    ("given", "env", "error"),
    [
        ([], {}, "set QUANTCORE_RECORDINGS"),
        ([Path("/nonexistent/x.gz")], {}, "no such recording"),
    ],
)
def test_recording_files_say_what_is_missing(
    given: list[Path], env: dict[str, str], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        recording_files(given, env)


def test_a_directory_without_recordings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no recordings"):
        recording_files([tmp_path], {})
