"""The staging rules every output follows: umask permissions, publish, discard, replace."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import dicomarray
from dicomarray import staging
from dicomarray.errors import WriteError

from .conftest import patient_series
from .export_helpers import lazy_hu


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    """Run the test under this umask (the process's), restoring the old one after."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of root and of everything under it, by path relative to root."""
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in paths}


def assert_plain_permissions(root: Path, mask: int) -> None:
    """What plain open() and mkdir() give under ``mask``: 0666 and 0777 less the mask."""
    for name, mode in modes_under(root).items():
        expected = (0o777 if (root / name).is_dir() else 0o666) & ~mask
        assert mode == expected, f"{name}: {oct(mode)} instead of {oct(expected)}"


def small_tree(root: Path, patients: tuple[str, ...] = ("P1",)) -> Path:
    return patient_series(root, [{"PatientID": patient} for patient in patients])


# --------------------------------------------------------------------------------------------
# Permissions: every kind of output, under two umasks
# --------------------------------------------------------------------------------------------


def test_exports_and_pictures_get_the_umask_permissions(make_series, tmp_path, umask):
    volume = lazy_hu(dicomarray.open_series(make_series()[0].parent))
    out = tmp_path / "out"
    out.mkdir(mode=0o777 & ~umask)
    volume.dicom.to_npy(out / "ct.npy")
    volume.dicom.to_zarr(out / "ct.zarr")
    volume.dicom.to_nifti(out / "ct.nii.gz", json_path=out / "nifti.json")
    volume.dicom.to_dicom(out / "dcm", template=volume)
    volume.dicom.to_jpg(out / "slice.jpg")
    volume.dicom.montage(out / "montage.png")
    volume.dicom.orthogonal(out / "orthogonal.jpg")
    assert {"ct.npy", "ct.zarr", "ct.nii.gz", "dcm", "slice.jpg"} <= {p.name for p in out.iterdir()}
    assert_plain_permissions(out, umask)


def test_batch_outputs_and_report_get_the_umask_permissions(tmp_path, umask):
    from dicomarray.batch import convert

    tree = small_tree(tmp_path / "in")
    out = tmp_path / "out"
    report = convert(tree, out, formats=("npy", "jpg"), workers=0, progress=False)
    assert list(report["status"]) == ["ok"]
    assert_plain_permissions(out, umask)


def test_the_sample_study_gets_the_umask_permissions(tmp_path, umask):
    from dicomarray.demo import ensure_sample_study

    root = ensure_sample_study(n_patients=1, root=tmp_path / "sample")
    assert_plain_permissions(root, umask)
    assert [p.name for p in tmp_path.iterdir()] == ["sample"]  # no partial left beside it


# --------------------------------------------------------------------------------------------
# One overwrite policy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("picture", ["to_jpg", "montage", "orthogonal"])
def test_a_picture_never_replaces_a_file_without_overwrite(make_series, tmp_path, picture):
    volume = dicomarray.open_series(make_series()[0].parent)
    path = tmp_path / "mine.jpg"
    path.write_bytes(b"my own picture")
    with pytest.raises(WriteError, match="pass overwrite=True"):
        getattr(volume.dicom, picture)(path)
    assert path.read_bytes() == b"my own picture"
    getattr(volume.dicom, picture)(path, overwrite=True)
    assert path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG now
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.jpg", "series0"]


def test_demo_keeps_complete_outputs_unless_overwrite(tmp_path):
    from dicomarray.demo import run_demo

    tree = small_tree(tmp_path / "in")
    out = tmp_path / "out"
    assert list(run_demo(out, data=tree)["status"]) == ["ok"]
    (picture,) = out.rglob("middle.jpg")
    before = picture.stat().st_mtime_ns
    assert list(run_demo(out, data=tree)["status"]) == ["skipped"]
    assert picture.stat().st_mtime_ns == before
    assert list(run_demo(out, data=tree, overwrite=True)["status"]) == ["ok"]


def test_messages_never_suggest_overwrite_when_it_would_not_help(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "file").write_text("mine")
    for path, kwargs in [
        (folder, {}),  # a folder is no file
        (tmp_path / "file", {"folder": True, "replaceable": lambda p: True}),
        (folder, {"folder": True}),  # a folder with no rule of what it may replace
        (folder, {"folder": True, "replaceable": lambda p: False}),
    ]:
        for overwrite in (False, True):
            with pytest.raises(WriteError) as caught:
                staging.stage(path, overwrite=overwrite, **kwargs)
            assert "overwrite" not in str(caught.value) and str(path) in str(caught.value)
    assert (tmp_path / "file").read_text() == "mine" and folder.is_dir()


# --------------------------------------------------------------------------------------------
# The primitive itself
# --------------------------------------------------------------------------------------------


def test_staged_publishes_only_a_complete_output(tmp_path):
    target = tmp_path / "notes.txt"
    with staging.staged(target, overwrite=False) as output:
        output.partial.write_text("complete")
        assert not target.exists()
        assert output.partial.parent == tmp_path and output.partial.name.startswith(".notes.txt.")
    assert target.read_text() == "complete" and output.final == target
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("folder", [False, True])
def test_staged_discards_on_any_failure_and_keeps_the_old_output(tmp_path, error, folder):
    target = tmp_path / "out"
    with staging.staged(target, overwrite=False, folder=folder) as output:
        (output.partial / "a" if folder else output.partial).write_text("old")
    with (
        pytest.raises(error),
        staging.staged(target, overwrite=True, folder=folder, replaceable=lambda p: True) as output,
    ):
        (output.partial / "a" if folder else output.partial).write_text("half")
        raise error
    assert (target / "a" if folder else target).read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_is_replaced_whole_when_it_may_be(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old-chunk").write_text("old")
    with staging.staged(target, overwrite=True, folder=True, replaceable=lambda p: True) as output:
        (output.partial / "new-chunk").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new-chunk"]
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_publish_refuses_a_target_that_appeared_while_writing(tmp_path):
    target = tmp_path / "report.csv"
    with pytest.raises(WriteError, match="overwrite=True"):
        with staging.staged(target, overwrite=False) as output:
            output.partial.write_text("ours")
            target.write_text("someone else's")  # e.g. a concurrent run
    assert target.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_replace_rules_are_checked_again_when_publishing(tmp_path):
    target = tmp_path / "store"
    output = staging.stage(
        target, overwrite=True, folder=True, replaceable=lambda p: (p / "ours").exists()
    )
    output.partial.mkdir()
    target.mkdir()  # appeared meanwhile, and is not ours
    (target / "theirs").write_text("keep")
    with pytest.raises(WriteError, match="nothing was replaced"):
        output.publish()
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert not output.partial.exists()


# --------------------------------------------------------------------------------------------
# Partials left by killed processes
# --------------------------------------------------------------------------------------------


def partial_of_a_process_that_ended(final: Path) -> Path:
    """A partial name as a process that has ended would have made it."""
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    ours = staging.partial_path(final).name
    return final.with_name(ours.replace(f"-{os.getpid()}-", f"-{ended.stdout.strip()}-"))


def test_only_partials_of_ended_processes_are_removed(tmp_path):
    deep = tmp_path / "patient" / "study"
    deep.mkdir(parents=True)
    stale_folder = partial_of_a_process_that_ended(deep / "series")
    stale_folder.mkdir()
    (stale_folder / "image.npy").write_bytes(b"half")
    stale_file = partial_of_a_process_that_ended(tmp_path / "report.csv")
    stale_file.write_text("half")
    live = staging.partial_path(deep / "other")  # this process is running
    live.mkdir()
    host = "ffffff" if staging._HOST != "ffffff" else "000000"
    other_host = deep / f".series.{host}-1-0123abcd.partial"
    other_host.mkdir()
    lookalike = deep / ".series.partial"  # not a name staging makes: not ours to judge
    lookalike.mkdir()
    removed = staging.remove_stale_partials(tmp_path, depth=2)
    assert sorted(removed) == sorted([stale_folder, stale_file])
    assert sorted(p.name for p in deep.iterdir()) == sorted(
        [live.name, other_host.name, lookalike.name]
    )
    assert staging.remove_stale_partials(tmp_path, depth=1) == []  # too shallow for deep/


@pytest.mark.parametrize("name", ["x" * 250, "ü" * 127])
def test_partial_names_stay_short_for_long_targets(tmp_path, name):
    partial = staging.partial_path(tmp_path / name)
    assert len(os.fsencode(partial.name)) <= 255
    partial.write_text("fits")  # the file system takes the name
    assert staging.is_stale(partial) is False  # ours, and running


def test_a_failed_folder_replace_puts_the_old_one_back(tmp_path, monkeypatch):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old").write_text("old")
    output = staging.stage(target, overwrite=True, folder=True, replaceable=lambda p: True)
    output.partial.mkdir()
    rename = os.rename

    def failing(source, destination):
        if Path(source) == output.partial:
            raise OSError("disk full")
        rename(source, destination)

    monkeypatch.setattr(staging.os, "rename", failing)
    with pytest.raises(WriteError, match="store: cannot write: disk full"):
        output.publish()
    assert [p.name for p in target.iterdir()] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_a_full_disk_is_a_write_error_naming_the_output(make_series, tmp_path, monkeypatch):
    import errno

    import numpy as np
    from PIL import Image

    import dicomarray.writers.common

    volume = dicomarray.open_series(make_series()[0].parent)
    out = tmp_path / "out"
    out.mkdir()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dicomarray.writers.common.np, "memmap", full)
    with pytest.raises(WriteError, match=r"ct\.npy.*No space left on device"):
        volume.dicom.to_npy(out / "ct.npy")
    monkeypatch.setattr(dicomarray.writers.common.np, "memmap", np.memmap)
    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(WriteError, match=r"slice\.jpg: cannot write: No space left on device"):
        volume.dicom.to_jpg(out / "slice.jpg")
    assert list(out.iterdir()) == []
