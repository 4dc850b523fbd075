"""Hostile files: scan never raises, opening raises only DicomArrayError, the CLI stays calm."""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dicomarray
from dicomarray.header import read_header
from dicomarray.sample import head_phantom, write_series


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("valid")
    hu = head_phantom(1, 16, 16, slice_spacing=5.0, pixel_spacing=(14.0, 14.0))
    (path,) = write_series(folder, hu, pixel_spacing=(14.0, 14.0))
    return path.read_bytes()


def regions(data: bytes) -> dict[str, int]:
    """Byte offsets inside each region of a Part-10 file."""
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    meta_end = data.find(b"\x08\x00", 132)
    return {
        "preamble": 60,
        "prefix": 130,
        "meta": (132 + meta_end) // 2,
        "header": (meta_end + pixel_tag) // 2,
        "pixel_tag": pixel_tag + 2,
        "pixels": (pixel_tag + len(data)) // 2,
    }


def mutations(data: bytes) -> dict[str, bytes]:
    cases = {f"cut-{name}": data[:offset] for name, offset in regions(data).items()}
    rows = data.find(b"\x28\x00\x10\x00US")
    cases["huge-length"] = _patch(data, data.find(b"\x08\x00\x60\x00") + 6, b"\xf0\xff")
    cases["bad-vr"] = _patch(data, rows + 4, b"ZZ")
    cases["rows-zero"] = _patch(data, rows + 8, struct.pack("<H", 0))
    cases["rows-bomb"] = _patch(data, rows + 8, struct.pack("<H", 65535))
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    endless = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\xff\xff\xff\xff"
    cases["endless-sequence"] = data[:pixel_tag] + endless + b"\x10\x00\x10\x00PN\x04\x00ABCD" * 4
    cases["pixel-length-lie"] = _patch(data, pixel_tag + 8, struct.pack("<I", 0x7FFFFFF0))
    cases["empty"] = b""
    cases["only-prefix"] = data[:132]
    return cases


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def check_entry_points(path: Path) -> None:
    index = dicomarray.scan(path.parent)  # must never raise
    assert len(index) + len(index.attrs["skipped"]) == len(list(path.parent.iterdir()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dicomarray.open_series(path).compute()
        except dicomarray.DicomArrayError as exc:
            assert path.name in str(exc) or str(path.parent) in str(exc)


def test_mutation_corpus(valid, tmp_path):
    for name, data in mutations(valid).items():
        folder = tmp_path / name
        folder.mkdir()
        path = folder / f"{name}.dcm"
        path.write_bytes(data)
        check_entry_points(path)


def test_mutation_corpus_through_the_cli(valid, tmp_path):
    for name in ("cut-header", "rows-bomb", "endless-sequence", "pixel-length-lie"):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(mutations(valid)[name])
        result = subprocess.run(
            [sys.executable, "-m", "dicomarray", "info", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode in (0, 1), name
        if result.returncode == 1:
            assert len(result.stderr.strip().splitlines()) == 1, (name, result.stderr)
            assert "Traceback" not in result.stderr


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8)
)
def test_random_byte_flips(valid, tmp_path_factory, flips):
    data = bytearray(valid)
    for offset, value in flips:
        data[offset % len(data)] = value
    folder = tmp_path_factory.mktemp("flip")
    path = folder / "flipped.dcm"
    path.write_bytes(bytes(data))
    check_entry_points(path)


def test_header_reader_never_hangs_on_a_sequence_without_end(valid, tmp_path):
    path = tmp_path / "endless.dcm"
    path.write_bytes(mutations(valid)["endless-sequence"])
    try:
        read_header(path)
    except Exception:  # noqa: BLE001, S110 - scan records these; what matters is returning
        pass


@pytest.mark.parametrize("frames", [b"1000000000", b"-5", b"0"])
def test_absurd_number_of_frames_is_refused_before_expansion(valid, tmp_path, frames):
    data = valid
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    rows = data.find(b"\x28\x00\x10\x00US")
    value = frames + (b" " if len(frames) % 2 else b"")
    element = b"\x28\x00\x08\x00IS" + struct.pack("<H", len(value)) + value
    path = tmp_path / "frames.dcm"
    path.write_bytes(data[:rows] + element + data[rows:pixel_tag] + data[pixel_tag:])
    with pytest.raises(dicomarray.PixelDataError, match="NumberOfFrames"):
        dicomarray.open_series(path)


# -- the fuzzing harness (benchmarks/fuzz): it finds what it claims to find ------------------


@pytest.fixture(scope="module")
def corpus():
    from benchmarks.fuzz.corpus import load_corpus

    return load_corpus()


def test_fuzz_corpus_covers_every_transfer_syntax_family(corpus):
    from benchmarks.fuzz.corpus import syntaxes

    expected = {
        "native", "implicit", "big endian", "RLE", "JPEG baseline", "JPEG extended",
        "JPEG lossless", "JPEG-LS", "JPEG 2000", "deflate", "enhanced multi-frame", "DICOMDIR",
    }  # fmt: skip
    assert set(syntaxes(corpus)) == expected


def test_fuzz_cases_are_reproducible_from_their_number_and_seed(corpus):
    from benchmarks.fuzz.runner import make_case

    numbers = range(len(corpus), len(corpus) + 60)
    first = [make_case(n, 7, corpus) for n in numbers]
    again = [make_case(n, 7, corpus) for n in numbers]
    other = [make_case(n, 8, corpus) for n in numbers]
    assert [c.files for c in first] == [c.files for c in again]
    assert [c.mutations for c in first] == [c.mutations for c in again]
    assert [c.files for c in first] != [c.files for c in other]
    changed = [c.files[c.target] != corpus[c.id % len(corpus)].files[c.target] for c in first]
    assert sum(changed) >= 0.9 * len(first)  # an edit may rewrite a value as it was


def _run_one(corpus, tmp_path, monkeypatch, call, **limits):
    from benchmarks.fuzz import stages
    from benchmarks.fuzz.runner import Limits, make_case, run_case

    real = stages._call
    monkeypatch.setattr(stages, "_call", lambda stage, *args: call(stage, real, *args))
    # a seed unchanged, not counted as a control: the stage itself misbehaves here
    case = dataclasses.replace(make_case(0, 0, corpus), control=False)
    return run_case(case, tmp_path / "case", b"", Limits(**limits), ("scan", "open"))


def test_fuzz_runner_reports_a_busy_loop_as_a_timeout_with_its_stage(corpus, tmp_path, monkeypatch):
    def spin(stage, real, *args):
        while stage == "open":
            pass
        return real(stage, *args)

    record = _run_one(corpus, tmp_path, monkeypatch, spin, seconds=1, wall_seconds=60)
    assert (record["status"], record["stage"], record["reason"]) == ("timeout", "open", "cpu")


def test_fuzz_runner_kills_a_blocked_case_after_its_wall_clock_budget(
    corpus, tmp_path, monkeypatch
):
    import time

    def block(stage, real, *args):
        time.sleep(60)

    record = _run_one(corpus, tmp_path, monkeypatch, block, seconds=1, wall_seconds=3)
    assert (record["status"], record["stage"], record["reason"]) == (
        "timeout",
        "scan",
        "wall-clock",
    )
    assert record["wall_s"] < 10


def test_fuzz_runner_counts_an_allocation_over_budget_as_a_memory_finding(
    corpus, tmp_path, monkeypatch
):
    import numpy as np

    from benchmarks.fuzz.summary import findings

    def allocate(stage, real, *args):
        if stage == "open":
            return np.ones(300 * 2**20, dtype=np.uint8)
        return real(stage, *args)

    record = _run_one(corpus, tmp_path, monkeypatch, allocate, memory_mb=200)
    assert record["status"] == "done"
    assert [f["kind"] for f in findings(record)] == ["memory"]


def test_fuzz_runner_reports_a_dead_child_as_a_crash(corpus, tmp_path, monkeypatch):
    import os
    import signal

    def die(stage, real, *args):
        os.kill(os.getpid(), signal.SIGSEGV)

    record = _run_one(corpus, tmp_path, monkeypatch, die)
    assert (record["status"], record["reason"]) == ("crash", "signal SIGSEGV")


def test_fuzz_summary_counts_a_non_dicomarray_error_and_an_unnamed_one(
    corpus, tmp_path, monkeypatch
):
    import dicomarray
    from benchmarks.fuzz.summary import findings

    def fail(stage, real, *args):
        if stage == "scan":
            real(stage, *args)
            raise IndexError("list index out of range")
        raise dicomarray.AssemblyError("a message that names nothing")

    record = _run_one(corpus, tmp_path, monkeypatch, fail)
    kinds = {(f["kind"], f["stage"], f["type"]) for f in findings(record)}
    assert kinds == {
        ("exception", "scan", "builtins.IndexError"),
        ("error names no file", "open", "dicomarray.errors.AssemblyError"),
    }


def test_a_small_fuzz_run_raises_only_dicomarray_errors_and_never_hangs(tmp_path):
    """200 cases of every syntax through every stage: 0 other exceptions, hangs, crashes."""
    import json

    from benchmarks.fuzz.summary import HARD

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "benchmarks.fuzz", "--n", "200", "--out", str(tmp_path)]
    subprocess.run(command, cwd=root, capture_output=True, text=True, check=False, timeout=900)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["files"] == 200
    assert set(summary["per_syntax"]) == set(summary["run"]["syntaxes"])
    hard = [f for f in summary["findings"] if f["kind"] in HARD]
    assert not hard, (tmp_path / "summary.md").read_text()
