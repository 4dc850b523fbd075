"""Untouched inputs, de-identified outputs, symlinks, and two batches at once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

import dicomarray
from dicomarray.batch import MANIFEST, convert
from dicomarray.sample import make_study

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("study"), n_patients=2, rows=64, columns=64)


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def head_folder(study: Path) -> Path:
    return sorted(study.glob("*/*/2_*"))[0]


def test_no_operation_changes_an_input_byte(study, tmp_path):
    before = digests(study)
    head = head_folder(study)
    dicomarray.scan(study)
    volume = dicomarray.open_series(head)
    assert volume.values.size
    hu = volume.dicom.hu()
    hu.dicom.to_jpg(tmp_path / "a.jpg")
    hu.dicom.montage(tmp_path / "m.jpg")
    hu.dicom.to_npy(tmp_path / "a.npy")
    hu.dicom.to_zarr(tmp_path / "a.zarr")
    hu.dicom.to_nifti(tmp_path / "a.nii.gz")
    dicomarray.to_dicom(hu.values, head, tmp_path / "dicom")
    dicomarray.dicom_filter(study, {"Modality": "CT"})
    dicomarray.read_tags(next(head.iterdir()))
    convert(
        study,
        tmp_path / "batch",
        formats=("zarr", "npy", "nifti", "jpg"),
        workers=0,
        progress=False,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomarray",
            "demo",
            "--data",
            str(study),
            "--out",
            str(tmp_path / "demo"),
        ],
        check=True,
        capture_output=True,
    )
    assert digests(study) == before


def identifiers(study: Path) -> list[bytes]:
    ds = pydicom.dcmread(next(head_folder(study).iterdir()))
    values = [str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.StudyDate]
    return [v.encode() for v in values if v]


def test_deidentified_batch_outputs_hold_no_identifier(study, tmp_path):
    out = tmp_path / "out"
    report = convert(
        study,
        out,
        formats=("zarr", "npy", "nifti", "jpg"),
        workers=0,
        deidentify=True,
        progress=False,
    )
    assert set(report["status"]) == {"ok"}
    secrets = identifiers(study)
    for path in out.rglob("*"):
        for secret in secrets:
            assert secret.decode() not in str(path.relative_to(out)), path
            if path.is_file():
                assert secret not in path.read_bytes(), (path, secret)


def test_writing_through_a_symlink_out_of_the_output_folder_is_refused(study, tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    patient = sorted(p.name for p in study.iterdir() if p.is_dir())[0]
    ds = pydicom.dcmread(next(head_folder(study).iterdir()))
    assert patient in ds.PatientID
    (out / ds.PatientID).symlink_to(elsewhere, target_is_directory=True)
    report = convert(study, out, formats=("npy",), workers=0, progress=False)
    refused = report[report["PatientID"] == ds.PatientID]
    assert set(refused["status"]) == {"failed"}
    assert refused["error"].str.contains("outside").all()
    assert list(elsewhere.iterdir()) == []
    assert (report[report["PatientID"] != ds.PatientID]["status"] == "ok").all()


def test_two_batches_into_one_folder_at_once(study, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dicomarray", "batch", str(study), str(out), "--workers", "0"]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    for run in runs:
        run.wait(timeout=300)
        assert run.returncode == 0, run.stderr.read()
    manifests = list(out.rglob(MANIFEST))
    assert len(manifests) == 4  # two patients, a head series and a scout each
    for manifest in manifests:
        array = np.load(manifest.parent / "image.npy")
        assert np.isfinite(array).all()
    leftovers = [p for p in out.rglob("*") if p.name.endswith((".partial", ".old"))]
    assert leftovers == []


def test_logs_at_info_and_above_name_no_patient(study, tmp_path, caplog):
    import logging
    import warnings

    caplog.set_level(logging.INFO, logger="dicomarray")
    cut = tmp_path / "cut"
    cut.mkdir()
    files = sorted(head_folder(study).iterdir())
    for path in files:
        (cut / path.name).write_bytes(path.read_bytes())
    (cut / files[0].name).write_bytes(files[0].read_bytes()[:-100])  # a failing series
    (cut / "notes.txt").write_text("junk")  # a skipped file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dicomarray.open_study(study)
        convert(cut, tmp_path / "out", formats=("npy",), workers=0, progress=False)
    assert caplog.records, "the operations above log something"
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in identifiers(study)[:3]:  # name, ID, birth date
        assert secret.decode() not in text
