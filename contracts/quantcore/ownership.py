"""What quantcore may delete or overwrite: only what it created.

A directory is quantcore's when it, or a directory it really sits in (links resolved), holds
`MARKER`, written when quantcore creates the directory or takes an empty one. Only then are
its contents ever deleted, and deleting them never follows a symbolic link out of it. A non-empty directory without the marker is refused with
an error naming it and the option that chooses another.

A file written at a path the user names (a recording, a kubeconfig) is a `FileBeside`: it is
written under a temporary name in the same directory and renamed into place when complete,
and it replaces an existing file only when the caller says so.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Collection
from pathlib import Path

MARKER = ".quantcore-owned"
MARKER_TEXT = (
    "quantcore created this directory and may delete everything in it.\n"
    "Remove this file to keep quantcore from ever deleting its contents.\n"
)


class NotOurs(RuntimeError):
    """A path quantcore did not create, which it was asked to clear or overwrite."""

    def __init__(self, path: Path, why: str, remedy: str) -> None:
        super().__init__(f"refusing to use {path}: {why}; nothing was changed. {remedy}")
        self.path = path


def is_ours(directory: Path) -> bool:
    """True when `directory` or one it sits in holds the marker as a regular file (not a link
    to one). Links are resolved first: a link inside our directory to a user's is not ours."""
    real = directory.resolve()
    return any(_marked(d) for d in (real, *real.parents))


def _marked(directory: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(directory / MARKER).st_mode)
    except OSError:
        return False


def claim(directory: Path, option: str) -> Path:
    """Make `directory` quantcore's: create it, or take it when empty or already marked.

    `option` is the command-line option (or variable) that chooses another directory.
    """
    try:
        directory.mkdir(parents=True)
    except FileExistsError:
        if not directory.is_dir():
            raise NotOurs(
                directory, "it exists and is not a directory", f"Choose another with {option}."
            ) from None
        if not is_ours(directory) and any(directory.iterdir()):
            raise NotOurs(
                directory,
                f"it is not empty and holds no {MARKER} file, so quantcore did not create it",
                f"Choose another directory with {option}.",
            ) from None
    if not _marked(directory):
        (directory / MARKER).write_text(MARKER_TEXT)
    return directory


def clear(directory: Path, keep: Collection[str] = ()) -> None:
    """Delete everything in a directory of ours except the marker and the entries named in
    `keep` (state a command reuses across runs, such as certificates).

    Links are removed, never followed: what they point at outside stays untouched.
    """
    if not is_ours(directory):
        raise NotOurs(directory, f"it holds no {MARKER} file", "Nothing of quantcore's is in it.")
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name == MARKER or entry.name in keep:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)  # removes links inside without following them
            else:
                os.unlink(entry.path)


def remove(directory: Path) -> None:
    """Delete a directory of ours, itself included."""
    clear(directory)
    (directory / MARKER).unlink()
    directory.rmdir()


def fresh(directory: Path, option: str, keep: Collection[str] = ()) -> Path:
    """`directory` claimed and emptied (but for `keep`): what a command that starts from
    scratch needs."""
    claim(directory, option)
    clear(directory, keep)
    return directory


class FileBeside:
    """A file written as `.<name>.<pid>.partial` beside `path`, then renamed to `path`.

    Refused at once when `path` exists and `replace` is False; `remedy` says how to choose
    another path or allow the replacement.
    """

    def __init__(self, path: Path, *, replace: bool, remedy: str) -> None:
        self.path = path
        self.replace = replace
        self.remedy = remedy
        self.temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
        if not path.parent.is_dir():
            raise NotOurs(path, f"its directory {path.parent} does not exist", remedy)
        self._refuse_existing()

    def _refuse_existing(self) -> None:
        if not self.replace and (self.path.exists() or self.path.is_symlink()):
            raise NotOurs(self.path, "it already exists", self.remedy)

    def publish(self) -> None:
        """Give the complete temporary file its name."""
        if self.replace:
            os.replace(self.temporary, self.path)
            return
        try:
            # link() never replaces: a file that appeared at `path` meanwhile is kept.
            os.link(self.temporary, self.path)
        except FileExistsError:
            raise NotOurs(
                self.path,
                f"it appeared while quantcore wrote; what quantcore wrote is in {self.temporary}",
                self.remedy,
            ) from None
        os.unlink(self.temporary)

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """`python -m quantcore.ownership claim|fresh DIR OPTION | remove DIR`, for Makefile recipes.

    Standard library only, so it runs (PYTHONPATH=src) before the virtualenv exists.
    """
    try:
        if argv[:1] == ["claim"] and len(argv) == 3:
            claim(Path(argv[1]), argv[2])
        elif argv[:1] == ["fresh"] and len(argv) == 3:
            fresh(Path(argv[1]), argv[2])
        elif argv[:1] == ["remove"] and len(argv) == 2:
            remove(Path(argv[1]))
        else:
            print(main.__doc__, file=sys.stderr)
            return 2
    except NotOurs as refused:
        print(refused, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
