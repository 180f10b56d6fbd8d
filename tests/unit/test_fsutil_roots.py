"""PathRoots: a path is under a root only once `~`, `..` and links are resolved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from velostream.errors import ConfigurationError
from velostream.fsutil import PathRoots, client_folder


def test_paths_under_a_root_pass_and_come_back_resolved(tmp_path: Path) -> None:
    roots = PathRoots.of([tmp_path / "a", tmp_path / "b"])
    assert roots.check(tmp_path / "a" / "x.csv", "sink") == (tmp_path / "a" / "x.csv").resolve()
    assert roots.check(tmp_path / "b", "source") == (tmp_path / "b").resolve()
    assert roots.check(f"{tmp_path}/a/new/deeper/x.csv", "sink").name == "x.csv"
    assert roots.check(f"{tmp_path}/a/*.csv", "source") == (tmp_path / "a").resolve()


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "{tmp}/a/../c/x.csv", "{tmp}/ab/x.csv", "{tmp}/c/*.csv", "~/x.csv"],
)
def test_paths_outside_every_root_are_refused_naming_path_and_roots(
    tmp_path: Path, path: str
) -> None:
    roots = PathRoots.of([tmp_path / "a"])
    with pytest.raises(ConfigurationError) as caught:
        roots.check(path.format(tmp=tmp_path), "out.path")
    message = str(caught.value)
    assert message.startswith("out.path ") and str((tmp_path / "a").resolve()) in message


def test_a_link_under_a_root_to_elsewhere_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "a" / "link")
    with pytest.raises(ConfigurationError):
        PathRoots.of([tmp_path / "a"]).check(tmp_path / "a" / "link" / "x.csv", "source")


def test_a_relative_path_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    roots = PathRoots.of([tmp_path])
    assert roots.check("data/x.csv", "source") == (tmp_path / "data" / "x.csv").resolve()
    with pytest.raises(ConfigurationError):
        roots.check("../x.csv", "source")


def test_a_client_folder_under_the_roots_comes_back_resolved(tmp_path: Path) -> None:
    (tmp_path / "a" / "app").mkdir(parents=True)
    roots = PathRoots.of([tmp_path / "a"])
    assert client_folder(f"{tmp_path}/a/app", roots) == (tmp_path / "a" / "app").resolve()
    assert client_folder(str(tmp_path), None) == tmp_path.resolve()


@pytest.mark.parametrize(
    ("folder", "says"),
    [
        ("{tmp}/b", "is outside the server's roots"),
        ("{tmp}/a/../b", "is outside the server's roots"),
        ("a/app", "is not an absolute path"),
        ("{tmp}/a/missing", "is not a folder on the server"),
    ],
)
def test_a_client_folder_is_refused_saying_why(tmp_path: Path, folder: str, says: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ConfigurationError, match=says):
        client_folder(folder.format(tmp=tmp_path), PathRoots.of([tmp_path / "a"]))
