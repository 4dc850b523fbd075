"""The per-frame values the n-D split reads, as frame columns (issue 13 contract).

Classic files give them from the index (standard tags, or vendor-private ones normalised
into the standard names), enhanced files from their functional groups, under the same
column names. Files are written in the test with known values; the real enhanced files
of ../shared/realdata are compared with what pydicom reads from the same file.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

import dicomarray
from benchmarks import compare_dcm2niix as cmp
from dicomarray.frames import expand_frames
from dicomarray.header import read_header

from .test_enhanced import _item, write_enhanced

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def frames_of(path: Path) -> list[dict[str, Any]]:
    return expand_frames(dicomarray.scan(path)).to_dict("records")


# -- enhanced: the functional groups ----------------------------------------------------

#: 8 frames: 2 slices x 2 temporal positions x 2 echoes, stack "1", dimension indices
#: (stack, in-stack position, temporal position, echo).
GRID = [(z, t, e) for t in range(2) for e in range(2) for z in range(2)]
ECHO_TIMES = (4.92, 7.38)


def _nd_file(path: Path) -> Path:
    """An enhanced MR file of :data:`GRID` with every functional group the split reads."""
    stored = np.arange(len(GRID) * 12, dtype=np.uint16).reshape(len(GRID), 3, 4)
    positions = np.array([[0.0, 0.0, 2.5 * z] for z, _, _ in GRID])
    write_enhanced(path, stored, positions, orientation=tuple(AXIAL))
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    shared.MRTimingAndRelatedParametersSequence = _item(RepetitionTime=2500.0)
    dimensions = []
    for pointer in ("StackID", "InStackPositionNumber", "TemporalPositionIndex"):
        dimension = Dataset()
        dimension.DimensionIndexPointer = pointer
        dimension.FunctionalGroupPointer = "FrameContentSequence"
        dimensions.append(dimension)
    echo = Dataset()  # an echo index without a functional group pointer
    echo.DimensionIndexPointer = "EffectiveEchoTime"
    dimensions.append(echo)
    ds.DimensionIndexSequence = Sequence(dimensions)
    for item, (z, t, e) in zip(ds.PerFrameFunctionalGroupsSequence, GRID, strict=True):
        item.FrameContentSequence = _item(
            FrameAcquisitionDateTime=f"202601020304{5 + t:02d}.250000",
            FrameReferenceDateTime=f"202601020304{5 + t:02d}.000000",
            TemporalPositionIndex=t + 1,
            StackID="1",
            InStackPositionNumber=z + 1,
            DimensionIndexValues=[1, z + 1, t + 1, e + 1],
        )
        item.MREchoSequence = _item(EffectiveEchoTime=ECHO_TIMES[e])
        item.CardiacSynchronizationSequence = _item(NominalCardiacTriggerDelayTime=100.0 * t)
        item.MRImageFrameTypeSequence = _item(
            FrameType=["ORIGINAL", "PRIMARY", "M_FFE" if e == 0 else "P_FFE", "NONE"]
        )
    ds.save_as(path, enforce_file_format=True)
    return path


def test_enhanced_frames_carry_time_echo_stack_and_dimension_values(tmp_path):
    frames = frames_of(_nd_file(tmp_path / "nd.dcm"))
    assert len(frames) == len(GRID)
    for frame, (z, t, e) in zip(frames, GRID, strict=True):
        assert frame["FrameAcquisitionDateTime"] == f"202601020304{5 + t:02d}.250000"
        assert frame["FrameReferenceDateTime"] == f"202601020304{5 + t:02d}.000000"
        assert frame["TemporalPositionIndex"] == t + 1
        assert frame["TemporalPositionIdentifier"] == t + 1  # the classic column, as before
        assert frame["InStackPositionNumber"] == z + 1
        assert frame["StackID"] == "1"
        assert frame["DimensionIndexValues"] == [1, z + 1, t + 1, e + 1]
        assert frame["EchoTime"] == pytest.approx(ECHO_TIMES[e])
        assert frame["TriggerTime"] == pytest.approx(100.0 * t)
        assert frame["RepetitionTime"] == 2500.0  # shared by every frame
        assert frame["ImageType"] == ["ORIGINAL", "PRIMARY", ("M_FFE", "P_FFE")[e], "NONE"]
        assert frame["DimensionIndexPointers"] == [
            "StackID",
            "InStackPositionNumber",
            "TemporalPositionIndex",
            "EffectiveEchoTime",
        ]
        assert frame["DimensionIndexGroups"] == [*["FrameContentSequence"] * 3, None]
    # value types the split rules read
    first = frames[0]
    assert isinstance(first["TemporalPositionIndex"], int)
    assert isinstance(first["InStackPositionNumber"], int)
    assert isinstance(first["EchoTime"], float)
    assert all(isinstance(v, int) for v in first["DimensionIndexValues"])


def test_enhanced_diffusion_values_and_the_gradient_nested_one_level_deeper(tmp_path):
    b_values = [0.0, 1000.0, 1000.0, 2000.0]
    gradients = [None, [1.0, 0.0, 0.0], [0.0, 0.6, -0.8], [0.0, 0.0, 1.0]]
    stored = np.zeros((4, 2, 2), np.uint16)
    path = write_enhanced(tmp_path / "dwi.dcm", stored, np.zeros((4, 3)))
    ds = pydicom.dcmread(path)
    for item, b, gradient in zip(
        ds.PerFrameFunctionalGroupsSequence, b_values, gradients, strict=True
    ):
        diffusion = Dataset()
        diffusion.DiffusionBValue = b
        diffusion.DiffusionDirectionality = "NONE" if gradient is None else "DIRECTIONAL"
        if gradient is not None:
            diffusion.DiffusionGradientDirectionSequence = _item(
                DiffusionGradientOrientation=gradient
            )
        item.MRDiffusionSequence = Sequence([diffusion])
    ds.save_as(path, enforce_file_format=True)
    frames = frames_of(path)
    assert [f["DiffusionBValue"] for f in frames] == b_values
    assert [f["DiffusionGradientOrientation"] for f in frames] == gradients
    assert [f["DiffusionDirectionality"] for f in frames] == [
        "NONE",
        *["DIRECTIONAL"] * 3,
    ]
    assert frames[0]["DimensionIndexPointers"] is None  # no Dimension Index Sequence


def test_one_dimension_index_is_still_a_list(tmp_path):
    path = write_enhanced(tmp_path / "one.dcm", np.zeros((2, 2, 2), np.uint16), np.zeros((2, 3)))
    ds = pydicom.dcmread(path)
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        item.FrameContentSequence = _item(DimensionIndexValues=k + 1)
    ds.save_as(path, enforce_file_format=True)
    assert [f["DimensionIndexValues"] for f in frames_of(path)] == [[1], [2]]


def test_classic_files_have_the_same_columns_empty(tmp_path):
    path = _classic(tmp_path / "plain.dcm")
    (frame,) = frames_of(path)
    assert frame["DimensionIndexPointers"] is None
    assert frame["DimensionIndexValues"] is None
    assert frame["DiffusionBValue"] is None


# -- classic: the index -----------------------------------------------------------------


def _classic(path: Path, *, syntax: str = ExplicitVRLittleEndian, **tags: Any) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "MR", "P1"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 0.0], AXIAL
    ds.PixelSpacing = [1.0, 1.0]
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.zeros((2, 2), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_classic_index_columns_of_the_standard_tags(tmp_path):
    tags = {
        "AcquisitionDateTime": "20260102030405.5",
        "TriggerTime": 250.0,
        "EchoTime": 30.0,
        "RepetitionTime": 2000.0,
        "NumberOfTemporalPositions": 12,
        "InStackPositionNumber": 3,
        "StackID": "2",
        "DiffusionBValue": 800.0,
        "DiffusionGradientOrientation": [0.0, 0.6, 0.8],
    }
    (frame,) = frames_of(_classic(tmp_path / "c.dcm", **tags))
    for keyword, value in tags.items():
        assert frame[keyword] == value, keyword
    assert isinstance(frame["NumberOfTemporalPositions"], int)
    assert isinstance(frame["InStackPositionNumber"], int)


def _private(ds: Dataset, group: int, block: int, creator: str, values: dict) -> None:
    """Private elements (group, block << 8 | low byte) under ``creator`` in (group, block)."""
    ds.add_new(group << 16 | block, "LO", creator)
    for low, (vr, value) in values.items():
        ds.add_new(group << 16 | block << 8 | low, vr, value)


SIEMENS = (0x0019, "SIEMENS MR HEADER", {0x0C: ("IS", 1000), 0x0E: ("FD", [0.6, 0.0, -0.8])})
PHILIPS_B = (0x2001, "Philips Imaging DD 001", {0x03: ("FL", 1500.0)})
PHILIPS_G = (
    0x2005,
    "Philips MR Imaging DD 001",
    {0xB0: ("FL", 0.0), 0xB1: ("FL", 0.6), 0xB2: ("FL", 0.8)},
)
GE_B = (0x0043, "GEMS_PARM_01", {0x39: ("IS", [1000002000, 8, 0, 0])})


def _vendor_file(path: Path, blocks: list[tuple], *, block: int = 0x10, **kwargs) -> Path:
    _classic(path, **kwargs)
    ds = pydicom.dcmread(path)
    for group, creator, values in blocks:
        _private(ds, group, block, creator, values)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("block", [0x10, 0x11])
@pytest.mark.parametrize(
    ("blocks", "b_value", "gradient"),
    [
        ([SIEMENS], 1000.0, [0.6, 0.0, -0.8]),
        ([PHILIPS_B, PHILIPS_G], 1500.0, [0.0, 0.6, 0.8]),
        ([GE_B], 2000.0, None),  # the bias of 1e9 removed; GE's gradient is not LPS
    ],
)
def test_vendor_diffusion_values_become_the_standard_columns(
    tmp_path, syntax, block, blocks, b_value, gradient
):
    path = _vendor_file(tmp_path / "v.dcm", blocks, block=block, syntax=syntax)
    values = read_header(path)
    assert values.get("DiffusionBValue") == b_value
    assert values.get("DiffusionGradientOrientation") == pytest.approx(gradient)
    (frame,) = frames_of(path)
    assert frame["DiffusionBValue"] == b_value


@pytest.mark.parametrize("blocks", [[SIEMENS], [PHILIPS_B, PHILIPS_G], [GE_B]])
def test_a_private_element_of_another_creator_gives_no_b_value(tmp_path, blocks):
    wrong = [(group, "SOMEONE ELSE 01", values) for group, _, values in blocks]
    path = _vendor_file(tmp_path / "w.dcm", wrong)
    values = read_header(path)
    assert "DiffusionBValue" not in values
    assert "DiffusionGradientOrientation" not in values
    # the right creator in another block does not own these elements either
    path = _vendor_file(tmp_path / "w2.dcm", blocks)
    ds = pydicom.dcmread(path)
    for group, creator, _ in blocks:
        ds[group << 16 | 0x10].value = "SOMEONE ELSE 01"
        ds.add_new(group << 16 | 0x11, "LO", creator)
    ds.save_as(path, enforce_file_format=True)
    assert "DiffusionBValue" not in read_header(path)


def test_the_standard_tags_win_over_the_vendor_ones(tmp_path):
    path = _vendor_file(
        tmp_path / "s.dcm",
        [SIEMENS],
        DiffusionBValue=700.0,
        DiffusionGradientOrientation=[1.0, 0.0, 0.0],
    )
    values = read_header(path)
    assert values["DiffusionBValue"] == 700.0
    assert values["DiffusionGradientOrientation"] == [1.0, 0.0, 0.0]


# -- a tree of single- and multi-frame files ---------------------------------------------


def test_a_tree_of_single_and_multi_frame_files_opens_every_series(tmp_path):
    """NumberOfFrames is absent from the classic files: the multi-frame ones still open."""
    root = tmp_path / "tree"
    root.mkdir()
    patient = {"PatientID": "P1", "StudyInstanceUID": generate_uid()}
    classic_uid = generate_uid()
    for k in range(3):
        _classic(
            root / f"c{k}.dcm",
            SeriesInstanceUID=classic_uid,
            ImagePositionPatient=[0.0, 0.0, 2.0 * k],
            InstanceNumber=k + 1,
            SeriesNumber=1,
            **patient,
        )
    stored = np.arange(3 * 10 * 12, dtype=np.uint16).reshape(3, 10, 12)
    positions = np.array([[0.0, 0.0, z] for z in (0.0, 3.0, 6.0)])
    enhanced = write_enhanced(root / "e.dcm", stored, positions, orientation=tuple(AXIAL))
    ds = pydicom.dcmread(enhanced)
    ds.PatientID, ds.StudyInstanceUID = patient["PatientID"], patient["StudyInstanceUID"]
    ds.save_as(enhanced, enforce_file_format=True)
    tree = dicomarray.open_study(root)
    volumes = [node.ds for node in tree.subtree if node.ds is not None and node.ds.data_vars]
    shapes = sorted(v.sizes["z"] for vol in volumes for v in vol.data_vars.values())
    assert shapes == [3, 3]


# -- real enhanced files against pydicom's full read --------------------------------------

#: frame column -> (functional group, keyword, nested sequence or None)
_REFERENCE = {
    "ImagePositionPatient": ("PlanePositionSequence", "ImagePositionPatient", None),
    "RescaleSlope": ("PixelValueTransformationSequence", "RescaleSlope", None),
    "TemporalPositionIndex": ("FrameContentSequence", "TemporalPositionIndex", None),
    "InStackPositionNumber": ("FrameContentSequence", "InStackPositionNumber", None),
    "StackID": ("FrameContentSequence", "StackID", None),
    "FrameAcquisitionDateTime": ("FrameContentSequence", "FrameAcquisitionDateTime", None),
    "DimensionIndexValues": ("FrameContentSequence", "DimensionIndexValues", None),
    "EchoTime": ("MREchoSequence", "EffectiveEchoTime", None),
    "RepetitionTime": ("MRTimingAndRelatedParametersSequence", "RepetitionTime", None),
    "TriggerTime": ("CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime", None),
    "DiffusionBValue": ("MRDiffusionSequence", "DiffusionBValue", None),
    "DiffusionGradientOrientation": (
        "MRDiffusionSequence",
        "DiffusionGradientOrientation",
        "DiffusionGradientDirectionSequence",
    ),
    "ImageType": ("MRImageFrameTypeSequence", "FrameType", None),
}


def _reference_value(ds: Dataset, k: int, column: str) -> Any:
    """A frame's value as pydicom reads it: its own group, else the shared one."""
    group, keyword, nested = _REFERENCE[column]
    for groups in (ds.PerFrameFunctionalGroupsSequence[k], ds.SharedFunctionalGroupsSequence[0]):
        if group in groups and len(groups[group].value):
            item = groups[group][0]
            if nested is not None:
                if nested not in item or not len(item[nested].value):
                    continue
                item = item[nested][0]
            if keyword in item:
                return _plain(item[keyword].value, column)
    return None


def _plain(value: Any, column: str) -> Any:
    from dicomarray.header import plain_value

    value = plain_value(value)
    if column == "DimensionIndexValues" and isinstance(value, int):
        return [value]
    return value


def _real_enhanced_files(folder: Path) -> list[Path]:
    realdata = cmp.default_realdata()
    if realdata is None:
        pytest.skip("no realdata folder")
    files = []
    for path in sorted((realdata / "dcm_qa_enh" / "In").rglob("*.dcm")):
        files.append(path)
    for path in sorted((realdata / "dcm_qa_philips_enh" / "In" / "enh").glob("*.dcm.gz")):
        target = folder / path.name.removesuffix(".gz")
        with gzip.open(path, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        files.append(target)
    return files


def test_real_enhanced_files_expand_to_the_values_pydicom_reads(tmp_path):
    checked = 0
    for path in _real_enhanced_files(tmp_path):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "PerFrameFunctionalGroupsSequence" not in ds:
            continue  # a raw-data object, no image
        frames = frames_of(path)
        assert len(frames) == int(ds.NumberOfFrames), path
        for k, frame in enumerate(frames):
            for column in _REFERENCE:
                expected = _reference_value(ds, k, column)
                if column == "ImageType" and expected is None:
                    expected = _plain(ds.get("ImageType"), column)
                assert frame[column] == pytest.approx(expected), (path.name, k, column)
        pointers = [
            pydicom.datadict.keyword_for_tag(item.DimensionIndexPointer)
            or f"({item.DimensionIndexPointer.group:04X},{item.DimensionIndexPointer.element:04X})"
            for item in ds.get("DimensionIndexSequence", [])
        ]
        assert frames[0]["DimensionIndexPointers"] == (pointers or None), path.name
        checked += 1
    assert checked == 8  # IM_0027, XA10 6_1..6_4, Philips 1901, 1903, 2001


@pytest.mark.parametrize(
    ("name", "slope"),
    [("1901_WIP_3DpCASL_real.dcm", 0.1), ("1903_WIP_SOURCE_-_3DpCASL.dcm", 1.33870573870573)],
)
def test_a_real_enhanced_asl_rescale_reaches_hu(tmp_path, name, slope):
    """Philips pCASL, 3-D and 4-D: each frame's PixelValueTransformationSequence is what
    hu() applies, against pydicom's read of the same file."""
    path = next((p for p in _real_enhanced_files(tmp_path) if p.name == name), None)
    if path is None:
        pytest.skip(f"no dcm_qa_philips_enh {name} in the realdata folder")
    volume = dicomarray.open_series(path)
    ds = pydicom.dcmread(path)
    frames = volume["frame"].values.ravel()
    groups = [ds.PerFrameFunctionalGroupsSequence[k] for k in frames]
    slopes = np.array([float(g.PixelValueTransformationSequence[0].RescaleSlope) for g in groups])
    intercepts = [float(g.PixelValueTransformationSequence[0].RescaleIntercept) for g in groups]
    assert slopes[0] == pytest.approx(slope)
    expected = ds.pixel_array[frames] * slopes[:, None, None] + np.array(intercepts)[:, None, None]
    hu = volume.dicom.hu(padding="keep").values
    np.testing.assert_allclose(hu.reshape(expected.shape), expected, rtol=1e-6)
