"""`mlops_ci.atomic`: writes that readers see whole or not at all, and that fail with a message
where the folder cannot be made."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mlops_ci import atomic


@pytest.mark.parametrize("payload", [b"x", b""], ids=["bytes", "empty"])
def test_a_folder_that_is_a_dangling_symlink_is_an_error_not_a_hang(
    tmp_path: Path, payload: bytes
) -> None:
    """The folder is made only when the open finds none; when it cannot be made because a
    dangling symlink has its name (a checkout can hold one), the write fails at once. It
    looped for ever once, taking mkdir's "exists" for a clash of temporary names, and an
    empty create said the file existed."""
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    target = tmp_path / "out" / "report.md"
    outcome: list[BaseException | object] = []

    def write() -> None:
        try:
            outcome.append(atomic.create_bytes(target, payload))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the write never returned"
    (error,) = outcome
    assert isinstance(error, NotADirectoryError) and str(tmp_path / "out") in str(error)
    with pytest.raises(NotADirectoryError):
        atomic.write_bytes(target, payload)
    assert not (tmp_path / "gone").exists()


def test_writes_make_the_missing_folders_and_replace_whole(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.txt"
    atomic.write_bytes(target, b"one")
    atomic.write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert atomic.create_bytes(tmp_path / "x" / "marker", b"")
    assert not atomic.create_bytes(tmp_path / "x" / "marker", b"")
    assert sorted(p.name for p in target.parent.iterdir()) == ["c.txt"]  # no temporary left
