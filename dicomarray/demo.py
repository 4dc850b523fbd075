"""The main job, ``dicomarray demo``: the built-in sample study from index to pictures."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from .index import scan
from .volume import open_series

logger = logging.getLogger(__name__)


def run_demo(output: str | Path, *, n_patients: int = 10) -> list[Path]:
    """Write the sample study under ``output/sample_study`` (once) and one JPG per patient.

    Each picture is the middle axial slice of the patient's head series in the brain
    window, as ``output/<PatientID>.jpg``. Returns the picture paths.
    """
    output = Path(output)
    study = ensure_sample_study(output / "sample_study", n_patients=n_patients)
    index = scan(study)
    pictures = []
    for patient, rows in index[index["Rows"].notna()].groupby("PatientID", sort=True):
        head = rows[rows["ImageType"].map(lambda t: "LOCALIZER" not in (t or []))]
        uid = head["SeriesInstanceUID"].value_counts().index[0]
        volume = open_series(head, uid)
        # the middle axial slice (the default index) reads one file
        path = volume.dicom.to_jpg(output / f"{patient}.jpg", preset="brain")
        pictures.append(path)
        logger.info("%s: %d slices, %s", patient, volume.sizes["z"], path)
    return pictures


def ensure_sample_study(root: Path, *, n_patients: int) -> Path:
    """The sample study at ``root``, written atomically the first time it is asked for."""
    from .sample import make_study

    if (root / "README.txt").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sample-", dir=root.parent))
    try:
        make_study(staging, n_patients=n_patients)
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
