"""quantcore.ownership: what quantcore may delete or overwrite, on a real filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantcore import ownership
from quantcore.devcluster import kubeconfig
from quantcore.devcluster.certs import KeyPair
from quantcore.devservices.cache import cache_root
from quantcore.ownership import MARKER, FileBeside, NotOurs


def foreign(directory: Path) -> Path:
    """A directory holding a file of the user's own."""
    directory.mkdir(parents=True)
    (directory / "thesis.tex").write_text("years of work")
    return directory


def test_claim_creates_the_directory_with_its_marker(tmp_path: Path) -> None:
    directory = ownership.claim(tmp_path / "a" / "b", "--dir")
    assert (directory / MARKER).is_file()
    assert ownership.is_ours(directory)
    assert not ownership.is_ours(tmp_path / "a")  # a parent made on the way is not claimed


def test_claim_takes_an_empty_directory_and_keeps_a_marked_one(tmp_path: Path) -> None:
    ownership.claim(tmp_path, "--dir")
    (tmp_path / "state.json").write_text("{}")
    ownership.claim(tmp_path, "--dir")  # ours already: its contents do not matter
    assert (tmp_path / "state.json").read_text() == "{}"


def test_claim_refuses_a_non_empty_directory_without_the_marker(tmp_path: Path) -> None:
    directory = foreign(tmp_path / "home")
    with pytest.raises(NotOurs) as refused:
        ownership.fresh(directory, "--dir")
    message = str(refused.value)
    assert str(directory) in message
    assert "--dir" in message
    assert (directory / "thesis.tex").read_text() == "years of work"
    assert not (directory / MARKER).exists()


def test_claim_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "notes"
    path.write_text("mine")
    with pytest.raises(NotOurs, match="not a directory"):
        ownership.claim(path, "--dir")
    assert path.read_text() == "mine"


def test_a_linked_marker_does_not_make_a_directory_ours(tmp_path: Path) -> None:
    elsewhere = ownership.claim(tmp_path / "ours", "--dir") / MARKER
    directory = foreign(tmp_path / "theirs")
    (directory / MARKER).symlink_to(elsewhere)
    assert not ownership.is_ours(directory)
    with pytest.raises(NotOurs):
        ownership.clear(directory)
    assert (directory / "thesis.tex").exists()


def test_what_sits_in_our_directory_is_ours_but_not_through_a_link(tmp_path: Path) -> None:
    cache = ownership.claim(tmp_path / "cache", "QUANTCORE_CACHE")
    entry = cache / "tools" / "checkov"
    entry.mkdir(parents=True)
    (entry / "half-built").write_text("")
    ownership.fresh(entry, "CHECKOV_HOME=")  # made by an earlier version, inside our cache
    assert sorted(p.name for p in entry.iterdir()) == [MARKER]
    outside = foreign(tmp_path / "outside")
    (cache / "link").symlink_to(outside)
    with pytest.raises(NotOurs):
        ownership.fresh(cache / "link", "--dir")
    assert sorted(p.name for p in outside.iterdir()) == ["thesis.tex"]


def test_fresh_empties_our_directory_without_following_links_out(tmp_path: Path) -> None:
    outside = foreign(tmp_path / "outside")
    directory = ownership.claim(tmp_path / "run", "--dir")
    (directory / "logs").mkdir()
    (directory / "logs" / "feed.log").write_text("old")
    (directory / "logs" / "outside-inner").symlink_to(outside)
    (directory / "outside").symlink_to(outside)
    (directory / "thesis-link").symlink_to(outside / "thesis.tex")
    ownership.fresh(directory, "--dir")
    assert sorted(p.name for p in directory.iterdir()) == [MARKER]
    assert (outside / "thesis.tex").read_text() == "years of work"


def test_fresh_spares_what_a_command_reuses(tmp_path: Path) -> None:
    directory = ownership.claim(tmp_path / "run", "--dir")
    (directory / "tls").mkdir()
    (directory / "tls" / "ca.crt").write_text("kept")
    (directory / "logs").mkdir()
    ownership.fresh(directory, "--dir", keep=("tls",))
    assert sorted(p.name for p in directory.iterdir()) == sorted([MARKER, "tls"])
    assert (directory / "tls" / "ca.crt").read_text() == "kept"


def test_remove_deletes_our_directory_and_refuses_another(tmp_path: Path) -> None:
    directory = ownership.claim(tmp_path / "venv", "VENV=")
    (directory / "bin").mkdir()
    ownership.remove(directory)
    assert not directory.exists()
    theirs = foreign(tmp_path / "theirs")
    with pytest.raises(NotOurs):
        ownership.remove(theirs)
    assert (theirs / "thesis.tex").exists()


def test_file_beside_refuses_an_existing_file_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "btcusdt.gz"
    out.write_bytes(b"irreplaceable")
    with pytest.raises(NotOurs) as refused:
        FileBeside(out, replace=False, remedy="Pass --force to replace it.")
    assert str(out) in str(refused.value)
    assert "--force" in str(refused.value)
    assert out.read_bytes() == b"irreplaceable"

    replacing = FileBeside(out, replace=True, remedy="")
    assert replacing.temporary.parent == out.parent
    replacing.temporary.write_bytes(b"new")
    assert out.read_bytes() == b"irreplaceable"  # untouched until complete
    replacing.publish()
    assert out.read_bytes() == b"new"
    assert not replacing.temporary.exists()


def test_file_beside_keeps_a_file_that_appeared_while_writing(tmp_path: Path) -> None:
    out = tmp_path / "rec.gz"
    target = FileBeside(out, replace=False, remedy="Choose another --out.")
    target.temporary.write_bytes(b"ours")
    out.write_bytes(b"theirs")
    with pytest.raises(NotOurs, match=str(target.temporary)):
        target.publish()
    assert out.read_bytes() == b"theirs"
    assert target.temporary.read_bytes() == b"ours"  # named in the message, so kept


def test_file_beside_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(NotOurs, match="does not exist"):
        FileBeside(tmp_path / "no" / "rec.gz", replace=False, remedy="Choose another --out.")


def test_kubeconfig_replaces_its_own_file_and_refuses_the_users(tmp_path: Path) -> None:
    pair = KeyPair(tmp_path / "admin.crt", tmp_path / "admin.key")
    config = kubeconfig.render(
        server="https://127.0.0.1:1", ca_cert=tmp_path / "ca.crt", user="admin", client=pair
    )
    users = tmp_path / "config"
    users.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(NotOurs) as refused:
        kubeconfig.write(users, config)
    assert "--kubeconfig" in str(refused.value)
    assert users.read_text() == "apiVersion: v1\nkind: Config\n"

    ours = tmp_path / "dev" / "kubeconfig"
    kubeconfig.write(ours, config)
    config["current-context"] = "second"
    kubeconfig.write(ours, config)  # a second `up` replaces its own
    assert "current-context: second" in ours.read_text()
    assert ours.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in ours.parent.iterdir()) == ["kubeconfig"]


def test_a_cache_directory_of_someone_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = foreign(tmp_path / "elsewhere")
    monkeypatch.setenv("QUANTCORE_CACHE", str(directory))
    with pytest.raises(NotOurs, match="QUANTCORE_CACHE"):
        cache_root()
    monkeypatch.setenv("QUANTCORE_CACHE", str(tmp_path / "new-cache"))
    assert ownership.is_ours(cache_root())
