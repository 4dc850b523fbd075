"""The seed corpus: small valid inputs covering every transfer syntax the fuzzer mutates.

Each :class:`Seed` is a little tree of files (one file, a short series, or a DICOMDIR with
the files it references) and names the one file that mutations change. Seeds come from
pydicom's shipped test files (read offline) and from series written here with known values,
so the corpus is the same on every machine with the same pydicom.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: pydicom test files used as single-file seeds, by the syntax label they stand for.
PYDICOM_SEEDS: tuple[tuple[str, str], ...] = (
    ("native", "CT_small.dcm"),
    ("native", "MR_small.dcm"),
    ("native", "SC_rgb_small_odd.dcm"),
    ("native", "MR_small_padded.dcm"),
    ("implicit", "MR_small_implicit.dcm"),
    ("implicit", "rtdose_1frame.dcm"),
    ("big endian", "MR_small_bigendian.dcm"),
    ("big endian", "SC_rgb_small_odd_big_endian.dcm"),
    ("big endian", "rtdose_expb_1frame.dcm"),
    ("RLE", "MR_small_RLE.dcm"),
    ("RLE", "SC_rgb_rle_16bit_2frame.dcm"),
    ("RLE", "SC_rgb_rle_32bit.dcm"),
    ("RLE", "rtdose_rle_1frame.dcm"),
    ("JPEG baseline", "SC_rgb_jpeg_dcmtk.dcm"),
    ("JPEG baseline", "SC_rgb_small_odd_jpeg.dcm"),
    ("JPEG extended", "JPEG-lossy.dcm"),
    ("JPEG lossless", "SC_rgb_jpeg_gdcm.dcm"),
    ("JPEG-LS", "MR_small_jpeg_ls_lossless.dcm"),
    ("JPEG-LS", "JPEGLSNearLossless_16.dcm"),
    ("JPEG-LS", "SC_rgb_jls_lossy_line.dcm"),
    ("JPEG 2000", "MR_small_jp2klossless.dcm"),
    ("JPEG 2000", "693_J2KI.dcm"),
    ("JPEG 2000", "JPEG2000.dcm"),
    ("deflate", "image_dfl.dcm"),
    ("enhanced multi-frame", "liver_1frame.dcm"),
)


#: pydicom seeds that stop at a DicomArrayError unchanged: 12-bit JPEG has no decoder here.
REFUSED = frozenset({"JPEG-lossy.dcm"})


@dataclass(frozen=True)
class Seed:
    """A valid input tree and the file in it that mutations change.

    Attributes
    ----------
    name : str
        A short unique name (the pydicom file name, or what the built seed is).
    syntax : str
        The transfer-syntax family the seed stands for ("native", "RLE", "DICOMDIR", ...).
    files : dict of str to bytes
        Every file of the tree by its relative path (``/`` separated).
    target : str
        The relative path of the file that mutations change.
    passes : bool
        Whether the seed unchanged goes through every stage without an error. False for
        seeds the package refuses by design (colour images, pydicom's JPEG with no
        decoder installed here, a File-set of instances without pixel data).
    """

    name: str
    syntax: str
    files: dict[str, bytes]
    target: str
    passes: bool = True


def load_corpus() -> list[Seed]:
    """Every seed, in a fixed order: pydicom's files, then the series built here."""
    from pydicom.data import get_testdata_file

    seeds = []
    for syntax, name in PYDICOM_SEEDS:
        path = get_testdata_file(name, download=False)
        if path is None:  # an older pydicom without this file: the run says what it covers
            continue
        passes = not name.startswith("SC_rgb") and name not in REFUSED
        seeds.append(Seed(name, syntax, {name: Path(path).read_bytes()}, name, passes))
    seeds += [builder() for builder in BUILT_SEEDS]
    return seeds


def syntaxes(seeds: list[Seed]) -> list[str]:
    """The syntax labels the seeds cover, in corpus order."""
    return list(dict.fromkeys(seed.syntax for seed in seeds))


# -- seeds built here, with known values ------------------------------------------------------


def _series_seed(transfer_syntax: str, syntax: str) -> Seed:
    """Four 16 x 16 CT slices 5 mm apart; the third is the one mutated."""
    from dicomarray.sample import head_phantom, write_series

    hu = head_phantom(4, 16, 16, slice_spacing=5.0, pixel_spacing=(14.0, 14.0))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_series(
            tmp,
            hu,
            pixel_spacing=(14.0, 14.0),
            transfer_syntax=transfer_syntax,
            names="ordered",
            seed=1,
        )
        files = {path.name: path.read_bytes() for path in paths}
    return Seed(f"series-{syntax}", syntax, files, sorted(files)[2])


def _native_series() -> Seed:
    from pydicom.uid import ExplicitVRLittleEndian

    return _series_seed(ExplicitVRLittleEndian, "native")


def _rle_series() -> Seed:
    from pydicom.uid import RLELossless

    return _series_seed(RLELossless, "RLE")


def _jpeg_series() -> Seed:
    """The native series as 8-bit grey JPEG baseline (pydicom's JPEG seeds are all colour).

    Pillow encodes the frames: pydicom has no JPEG encoder, and a grey seed is what gets
    past ``open_series`` to the decoder.
    """
    from PIL import Image
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    files = {}
    for name, data in _native_series().files.items():
        ds = dcmread(io.BytesIO(data))
        stored = ds.pixel_array.astype(np.int32)
        grey = np.clip((stored - stored.min()) * 255 // max(1, int(np.ptp(stored))), 0, 255)
        frame = io.BytesIO()
        Image.fromarray(grey.astype(np.uint8), mode="L").save(frame, "JPEG", quality=90)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate([frame.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files[name] = buffer.getvalue()
    return Seed("series-JPEG baseline", "JPEG baseline", files, sorted(files)[2])


def _enhanced_ct(transfer_syntax: str, syntax: str) -> Seed:
    """An Enhanced CT of four 16 x 16 frames with shared and per-frame functional groups."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    frames = (np.arange(4 * 16 * 16, dtype="<i2").reshape(4, 16, 16) % 700) - 200
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1.1"
    ds.SeriesInstanceUID, ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1.2", "1.2.826.0.1.3"
    ds.Modality, ds.PatientID, ds.SeriesNumber = "CT", "FUZZ", 7
    ds.Rows, ds.Columns, ds.NumberOfFrames = 16, 16, len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared, orientation, measures, rescale = Dataset(), Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [3.6, 3.6], 5.0
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, -1024, "HU"
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for z in range(len(frames)):
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [-28.8, -28.8, 5.0 * z]
        item.PlanePositionSequence = Sequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.tobytes()
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    name = f"enhanced-ct-{syntax}.dcm"
    return Seed(name, "enhanced multi-frame", {name: buffer.getvalue()}, name)


def _enhanced_native() -> Seed:
    from pydicom.uid import ExplicitVRLittleEndian

    return _enhanced_ct(ExplicitVRLittleEndian, "native")


def _enhanced_rle() -> Seed:
    from pydicom.uid import RLELossless

    return _enhanced_ct(RLELossless, "RLE")


def _dicomdir_seed() -> Seed:
    """A File-set of the native series seed: a DICOMDIR and the files it references."""
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    series = _native_series()
    with tempfile.TemporaryDirectory() as tmp:
        fileset = FileSet()
        for _, data in sorted(series.files.items()):
            fileset.add(dcmread(io.BytesIO(data)))
        fileset.write(tmp)
        root = Path(tmp)
        files = {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
    return Seed("dicomdir-series", "DICOMDIR", files, "DICOMDIR")


def _dicomdir_tiny_alpha() -> Seed:
    """pydicom's TINY_ALPHA File-set (a DICOMDIR and 30 instances without pixel data)."""
    from pydicom.data import get_testdata_file

    dicomdir = get_testdata_file("TINY_ALPHA/DICOMDIR", download=False)
    root = Path(dicomdir).parent if dicomdir else None
    if root is None:
        return _dicomdir_seed()
    files = {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "README"
    }
    return Seed("dicomdir-tiny-alpha", "DICOMDIR", files, "DICOMDIR", passes=False)


BUILT_SEEDS: tuple[Callable[[], Seed], ...] = (
    _native_series,
    _rle_series,
    _jpeg_series,
    _enhanced_native,
    _enhanced_rle,
    _dicomdir_seed,
    _dicomdir_tiny_alpha,
)
