"""Siemens mosaics: cut into slices in the right order, each slice at its true position.

Synthetic mosaics are written in the tests with known values in every tile and a CSA
image header (encoded here, parsed by nibabel's reader inside dicomarray) or the private
(0019,100A); positions are checked against positions computed from the slices' own
geometry (the inverse of the corner correction), and against nibabel's independent
mosaic reader. With the real sets (``../shared/realdata``, skipped when absent) every
mosaic is compared with dcm2niix's conversion: values equal, world coordinates of the
corner voxels within 0.01 mm through both affines.
"""

from __future__ import annotations

import math
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

import dicomarray
from benchmarks import compare_dcm2niix as cmp
from dicomarray.errors import GeometryWarning, PixelDataError, WriteError
from dicomarray.geometry import VolumeGeometry
from dicomarray.mosaic import expand_mosaics
from dicomarray.pixels import FrameStack, PixelFormat, mosaic_tiles

from .geometry_check import POSITION_TOL_MM, assert_affine_matches_positions

#: An oblique transverse plane (rows toward L, columns tilted 7 degrees toward S).
TILT = math.radians(7.0)
ORIENTATION = [1.0, 0.0, 0.0, 0.0, math.cos(TILT), -math.sin(TILT)]
NORMAL = np.cross(ORIENTATION[:3], ORIENTATION[3:])
PIXEL_SPACING = (2.5, 2.0)  # between rows, between columns
SPACING = 3.6
FIRST_TILE = np.array([-40.0, -55.0, 12.0])  # the true position of tile 0's first pixel


# -- writing synthetic mosaics ------------------------------------------------------------


def csa_header(tags: dict[str, tuple[str, list[Any]]]) -> bytes:
    """A CSA2 ("SV10") header holding ``tags``: name -> (VR, values), as Siemens writes it."""
    out = [b"SV10", b"\4\3\2\1", struct.pack("<2I", len(tags), 77)]
    for name, (vr, values) in tags.items():
        n = len(values)
        out.append(struct.pack("<64si4s3i", name.encode(), n, vr.encode(), 3, n, 77))
        for value in values:
            text = (f"{value:.8f}" if isinstance(value, float) else str(value)).encode() + b"\0"
            out.append(struct.pack("<4i", len(text), len(text), 77, len(text)))
            out.append(text + b"\0" * (-len(text) % 4))
    return b"".join(out)


def tile_values(n_tiles: int, rows: int, columns: int) -> np.ndarray:
    """(n, rows, columns) values, different in every pixel and every tile."""
    grid = np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns)
    return np.stack([grid + 1000 * (k + 1) for k in range(n_tiles)])


def tile_grid(tiles: np.ndarray) -> np.ndarray:
    """The stored mosaic image: tiles row-major in a square grid, blank tiles at the end."""
    n, rows, columns = tiles.shape
    across = math.ceil(math.sqrt(n))
    image = np.zeros((across * rows, across * columns), dtype=tiles.dtype)
    for k, tile in enumerate(tiles):
        top, left = (k // across) * rows, (k % across) * columns
        image[top : top + rows, left : left + columns] = tile
    return image


def tile_positions(n_tiles: int, direction: int = 1) -> np.ndarray:
    """Where each tile's first pixel truly lies: tile k one spacing further per tile."""
    return FIRST_TILE + np.arange(n_tiles)[:, None] * direction * SPACING * NORMAL


def mosaic_corner(image_shape: tuple[int, int], tile_shape: tuple[int, int]) -> np.ndarray:
    """The ImagePositionPatient Siemens writes: the corner of the grid as one image, seen
    from the first tile's position (the inverse of the correction)."""
    (rows, columns), (tile_rows, tile_columns) = image_shape, tile_shape
    row_cosines, column_cosines = np.array(ORIENTATION[:3]), np.array(ORIENTATION[3:])
    return (
        FIRST_TILE
        - (columns - tile_columns) / 2 * PIXEL_SPACING[1] * row_cosines
        - (rows - tile_rows) / 2 * PIXEL_SPACING[0] * column_cosines
    )


def write_mosaic(
    path: Path,
    tiles: np.ndarray,
    *,
    direction: int = 1,
    count: str = "csa",
    acquisition: int = 1,
    series_uid: str = "1.2.826.0.1.3680043.10.1.7",
    syntax: str = ExplicitVRLittleEndian,
    normal_in_csa: bool = True,
) -> Path:
    """One mosaic file of ``tiles`` (count from ``"csa"``, ``"private"`` or ``"none"``)."""
    n, tile_rows, tile_columns = tiles.shape
    image = tile_grid(tiles)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1.6", series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.1.8"
    ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = 5, acquisition, acquisition
    ds.AcquisitionTime = f"1200{2 * acquisition:02d}.000000"  # a volume every 2 s
    ds.SliceThickness, ds.SpacingBetweenSlices = 3.0, SPACING
    ds.AcquisitionMatrix = [tile_rows, 0, 0, tile_columns]
    ds.ImageOrientationPatient = ORIENTATION
    ds.ImagePositionPatient = [float(v) for v in mosaic_corner(image.shape, tiles.shape[1:])]
    ds.PixelSpacing = list(PIXEL_SPACING)
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if count == "csa":
        csa: dict[str, tuple[str, list[Any]]] = {
            "NumberOfImagesInMosaic": ("US", [n]),
            "AcquisitionMatrixText": ("SH", [f"{tile_rows}*{tile_columns}"]),
        }
        if normal_in_csa:
            csa["SliceNormalVector"] = ("FD", [float(v) for v in direction * NORMAL])
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(
            0x10, "OB", csa_header(csa)
        )
    elif count == "private":
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0A, "US", n)
    ds.PixelData = image.tobytes()
    if syntax == RLELossless:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    return path


def open_quietly(source: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        return dicomarray.open_series(source, **kwargs)


def assert_positions(volume: Any, expected: np.ndarray) -> None:
    found = np.stack([volume[f"image_position_{a}"].values for a in "lps"], axis=1)
    np.testing.assert_allclose(found, expected, atol=1e-4)


# -- synthetic mosaics --------------------------------------------------------------------


@pytest.mark.parametrize("direction", [1, -1], ids=["F>>H", "H>>F"])
def test_a_mosaic_opens_as_its_slices_in_order_along_the_normal(tmp_path, direction):
    tiles = tile_values(7, 4, 6)  # 7 slices of 4 x 6 in a 3 x 3 grid: 2 blank tiles
    write_mosaic(tmp_path / "m.dcm", tiles, direction=direction)
    volume = dicomarray.open_series(tmp_path)
    assert volume.dims == ("z", "y", "x") and volume.shape == (7, 4, 6)
    # z runs along the plane's normal: H>>F numbering stores the slices the other way
    order = slice(None) if direction == 1 else slice(None, None, -1)
    np.testing.assert_array_equal(volume.values, tiles[order])
    assert_positions(volume, tile_positions(7, direction)[order])
    assert np.all(np.diff(volume["z"].values) > 0)
    spacing = VolumeGeometry.of(volume).spacing
    assert [spacing[d] for d in ("z", "y", "x")] == pytest.approx([SPACING, *PIXEL_SPACING])
    assert (volume.attrs["Rows"], volume.attrs["Columns"]) == (4, 6)
    assert_affine_matches_positions(volume)


def test_slices_and_rows_of_a_mosaic_read_only_their_tile(tmp_path):
    tiles = tile_values(5, 6, 4)
    write_mosaic(tmp_path / "m.dcm", tiles)
    volume = dicomarray.open_series(tmp_path)
    np.testing.assert_array_equal(volume.isel(z=3).values, tiles[3])
    np.testing.assert_array_equal(volume.isel(z=4, y=slice(2, 5)).values, tiles[4, 2:5])
    np.testing.assert_array_equal(volume[1:4, 5, ::-1].values, tiles[1:4, 5, ::-1])
    np.testing.assert_array_equal(volume.dicom.hu().isel(z=2).values, tiles[2])


def test_a_mosaic_as_to_dicom_template_is_refused_saying_it_is_a_mosaic(tmp_path):
    """Each file holds every slice of a volume: writing one instance per slice over it
    would replace the file once per slice; the message says why, not 'slice twice'."""
    tiles = tile_values(4, 5, 5)
    (tmp_path / "in").mkdir()
    for acquisition in (1, 2):
        write_mosaic(tmp_path / "in" / f"m{acquisition}.dcm", tiles, acquisition=acquisition)
    volume = open_quietly(tmp_path / "in")
    assert volume.dims == ("t", "z", "y", "x")
    with pytest.raises(WriteError, match="is a Siemens mosaic .* cannot be a template"):
        volume.dicom.to_dicom(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["m1.dcm", "m2.dcm"]


def test_the_private_number_of_images_cuts_a_mosaic_without_a_csa_header(tmp_path):
    tiles = tile_values(4, 5, 5)
    write_mosaic(tmp_path / "m.dcm", tiles, count="private")
    with pytest.warns(GeometryWarning, match="no CSA SliceNormalVector.*F>>H"):
        volume = dicomarray.open_series(tmp_path)
    np.testing.assert_array_equal(volume.values, tiles)
    assert_positions(volume, tile_positions(4))


def test_a_csa_header_without_slice_normal_is_taken_as_foot_to_head(tmp_path):
    tiles = tile_values(4, 3, 3)
    write_mosaic(tmp_path / "m.dcm", tiles, normal_in_csa=False)
    with pytest.warns(GeometryWarning, match="F>>H"):
        volume = dicomarray.open_series(tmp_path)
    np.testing.assert_array_equal(volume.values, tiles)


@pytest.mark.filterwarnings("ignore:.*no CSA SliceNormalVector")
def test_without_a_count_the_acquisition_matrix_gives_the_tiles(tmp_path):
    tiles = tile_values(4, 3, 5)  # a full 2 x 2 grid: every tile is a slice
    write_mosaic(tmp_path / "m.dcm", tiles, count="none")
    with pytest.warns(GeometryWarning, match="4 slices of 3 x 5 inferred from AcquisitionMatrix"):
        volume = dicomarray.open_series(tmp_path)
    np.testing.assert_array_equal(volume.values, tiles)


def test_a_mosaic_no_tag_can_cut_stays_one_image_with_a_warning(tmp_path):
    tiles = tile_values(4, 3, 5)
    path = write_mosaic(tmp_path / "m.dcm", tiles, count="none")
    ds = pydicom.dcmread(path)
    del ds.AcquisitionMatrix
    ds.save_as(path)
    with pytest.warns(GeometryWarning, match="not cut into slices"):
        volume = dicomarray.open_series(tmp_path)
    np.testing.assert_array_equal(volume.values[0], tile_grid(tiles))


def test_a_count_whose_grid_does_not_divide_the_image_stays_one_image(tmp_path):
    tiles = tile_values(4, 3, 5)
    path = write_mosaic(tmp_path / "m.dcm", tiles)
    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER")
    block[0x10].value = csa_header({"NumberOfImagesInMosaic": ("US", [5])})  # 3 x 3 grid
    ds.save_as(path)
    with pytest.warns(GeometryWarning, match="grid of 3 x 3 tiles.*6 x 10 image"):
        volume = dicomarray.open_series(tmp_path)
    assert volume.shape == (1, 6, 10)


@pytest.mark.parametrize("direction", [1, -1], ids=["F>>H", "H>>F"])
def test_a_series_of_mosaics_opens_as_volumes_over_time(tmp_path, direction):
    tiles = tile_values(5, 4, 4)
    for a in (1, 2, 3):
        write_mosaic(tmp_path / f"m{a}.dcm", tiles + a, acquisition=a, direction=direction)
    volume = dicomarray.open_series(tmp_path)
    order = slice(None) if direction == 1 else slice(None, None, -1)
    assert volume.dims == ("t", "z", "y", "x") and volume.shape == (3, 5, 4, 4)
    np.testing.assert_array_equal(volume["t"].values, [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(volume.values, np.stack([tiles[order] + a for a in (1, 2, 3)]))
    np.testing.assert_array_equal(volume.isel(t=2, z=1).values, tiles[order][1] + 3)
    assert_positions(volume, tile_positions(5, direction)[order])
    assert_affine_matches_positions(volume)


@pytest.mark.parametrize("count", [0, 61])  # the image holds 60 pixels
def test_a_private_count_of_no_slices_or_too_many_stays_one_image(tmp_path, count):
    tiles = tile_values(4, 3, 5)
    path = write_mosaic(tmp_path / "m.dcm", tiles, count="private")
    ds = pydicom.dcmread(path)
    ds.private_block(0x0019, "SIEMENS MR HEADER")[0x0A].value = count
    ds.save_as(path)
    with pytest.warns(GeometryWarning, match=f"NumberOfImagesInMosaic {count} needs no grid"):
        volume = dicomarray.open_series(tmp_path)
    assert volume.shape == (1, 6, 10)


@pytest.mark.parametrize("syntax", [RLELossless, DeflatedExplicitVRLittleEndian])
def test_compressed_mosaics_cut_the_same_tiles(tmp_path, syntax):
    tiles = tile_values(6, 4, 4)
    for a in (1, 2):
        write_mosaic(tmp_path / f"m{a}.dcm", tiles + a, acquisition=a, syntax=syntax)
    volume = dicomarray.open_series(tmp_path)
    assert pydicom.dcmread(tmp_path / "m1.dcm").file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(volume.values, np.stack([tiles + 1, tiles + 2]))
    np.testing.assert_array_equal(volume.isel(t=1, z=[1, 4], x=2).values, tiles[[1, 4], :, 2] + 2)


def test_a_compressed_mosaic_is_decoded_once_for_all_its_slices(tmp_path, monkeypatch):
    from dicomarray import pixels

    tiles = tile_values(6, 4, 4)
    for a in (1, 2):
        write_mosaic(tmp_path / f"m{a}.dcm", tiles + a, acquisition=a, syntax=RLELossless)
    volume = dicomarray.open_series(tmp_path)
    decoded: list[tuple[str, int]] = []
    real = pixels.decode_frame

    def counting(path, frame, *args, **kwargs):
        decoded.append((Path(path).name, frame))
        return real(path, frame, *args, **kwargs)

    monkeypatch.setattr(pixels, "decode_frame", counting)
    np.testing.assert_array_equal(volume.values, np.stack([tiles + 1, tiles + 2]))
    assert sorted(decoded) == [("m1.dcm", 0), ("m2.dcm", 0)]
    decoded.clear()
    np.testing.assert_array_equal(volume.dicom.hu().isel(t=1, z=slice(1, 4)), tiles[1:4] + 2)
    assert decoded == [("m2.dcm", 0)]


def test_slices_agree_with_nibabels_mosaic_reader(tmp_path):
    from nibabel.nicom import dicomwrappers

    tiles = tile_values(9, 4, 4)
    path = write_mosaic(tmp_path / "m.dcm", tiles)
    volume = dicomarray.open_series(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(path))
    assert isinstance(wrapper, dicomwrappers.MosaicWrapper)
    # nibabel's data is (rows, columns, slices) in tile order, its position tile 0's
    np.testing.assert_array_equal(volume.values, np.moveaxis(wrapper.get_unscaled_data(), 2, 0))
    np.testing.assert_allclose(
        [volume[f"image_position_{a}"].values[0] for a in "lps"], wrapper.image_position
    )


def test_expansion_keeps_the_stored_size_and_numbers_the_tiles(tmp_path):
    tiles = tile_values(5, 4, 6)
    write_mosaic(tmp_path / "m.dcm", tiles)
    frames = dicomarray.scan(tmp_path).assign(frame=0)
    expanded = expand_mosaics(frames, [])
    assert expanded["tile"].tolist() == [0, 1, 2, 3, 4]
    assert set(zip(expanded["Rows"], expanded["Columns"], strict=True)) == {(4, 6)}
    assert set(expanded["mosaic_rows"]) == {12} and set(expanded["mosaic_columns"]) == {18}
    assert expanded["SliceLocation"].isna().all()
    assert expand_mosaics(frames.assign(ImageType=[["ORIGINAL"]]), []) is not None


def test_a_stack_mixing_mosaic_tiles_and_whole_frames_is_refused(tmp_path):
    tiles = tile_values(4, 4, 4)
    write_mosaic(tmp_path / "m.dcm", tiles)
    frames = expand_mosaics(dicomarray.scan(tmp_path).assign(frame=0), [])
    frames.loc[0, "tile"] = None
    fmt = PixelFormat.from_row(frames.iloc[0])
    with pytest.raises(PixelDataError, match="mixes frames of stored sizes"):
        mosaic_tiles(frames, fmt)
    with pytest.raises(PixelDataError, match="m.dcm"):
        FrameStack(frames, fmt)


# -- real mosaics against dcm2niix --------------------------------------------------------

REALDATA = cmp.default_realdata()
needs_realdata = pytest.mark.skipif(
    REALDATA is None or shutil.which("dcm2niix") is None, reason="no realdata or no dcm2niix"
)
MOSAIC_SERIES = (
    "dcm_qa_mosaic/In/ep2d_Asc_2",
    "dcm_qa_mosaic/In/ep2d_Int_4",
    "dcm_qa_mosaic/In/ep2d_Int_HF_5",
    "dcm_qa_mosaic/In/cmrr_Asc_6",
    "dcm_qa_mosaic/In/cmrr_Asc_HF_7",
    "dcm_qa_mosaic/In/cmrr_Int_8",
    "dcm_qa_mosaic/In/cmrr_Int_HF_9",
    "dcm_qa_mosaic/In/ep2d_Asc_HF_10",
    "dcm_qa_nih/In/20180918Si/mr_0003",
    "dcm_qa_nih/In/20180918Si/mr_0004",
    "dcm_qa_nih/In/20180918Si/mr_0005",
    "dcm_qa_nih/In/20180918Si/mr_0006",
)
#: One mosaic per file, each its own series number (12 bits stored; transfer syntaxes),
#: and the file dcm2niix converts for it: this dcm2niix has no JPEG-LS decoder, and the
#: dcm_qa_ts files all hold the pixels of the raw 1.dcm
MOSAIC_FILES = {
    **{f"dcm_qa_12bit/In/{n}.dcm": None for n in ("12bitUnsigned", "12bitUnsigned_0x0F0F")},
    **{f"dcm_qa_ts/In/{n}.dcm": None for n in (1, 2, 3, 4, 5, 6, 9)},
    **{f"dcm_qa_ts/In/{n}.dcm": "dcm_qa_ts/In/1.dcm" for n in (7, 8)},
}


def dcm2niix_of(source: Path, out: Path) -> cmp.NiftiOutput:
    """dcm2niix's one conversion of a folder or file."""
    log = cmp.run_dcm2niix(source, out)
    (output,) = cmp.nifti_outputs(out) or pytest.fail(f"dcm2niix wrote nothing: {log}")
    return output


def compared(volume: Any, output: cmp.NiftiOutput) -> cmp.Comparison:
    row = cmp.compare_volume_set(cmp.Comparison("mosaic", "?"), volume, [output])
    assert row.category == cmp.MATCH, row
    assert row.geometry_mm is not None, row.notes
    assert row.geometry_mm < POSITION_TOL_MM, row
    assert row.differing_voxels == 0, row
    return row


@needs_realdata
@pytest.mark.parametrize("series", MOSAIC_SERIES)
def test_real_mosaic_series_match_dcm2niix_volume_by_volume(tmp_path, series):
    folder = Path(REALDATA) / series
    if not folder.is_dir():
        pytest.skip(f"{series} absent")
    output = dcm2niix_of(folder, tmp_path / "out")
    volume = dicomarray.open_series(folder)  # no warning: every slice where its file says
    shape = nibabel.load(output.path).shape  # (x, y, z, t) as dcm2niix writes them
    assert volume.dims == ("t", "z", "y", "x") and volume.shape == shape[::-1]
    row = compared(volume, output)  # every volume, paired with dcm2niix's by its values
    assert row.volume_order == list(range(shape[3])), row
    assert_affine_matches_positions(volume)


def staged_copy(name: str, folder: Path) -> Path:
    """A folder holding only the real file ``name`` (its neighbours are other series)."""
    path = Path(REALDATA) / name
    if not path.is_file():
        pytest.skip(f"{name} absent")
    folder.mkdir(parents=True)
    shutil.copy(path, folder)
    return folder


@needs_realdata
@pytest.mark.parametrize("name", MOSAIC_FILES)
def test_real_mosaic_files_match_dcm2niix(tmp_path, name):
    staged = staged_copy(name, tmp_path / "in")
    reference = staged_copy(MOSAIC_FILES[name] or name, tmp_path / "reference")
    output = dcm2niix_of(reference, tmp_path / "out")
    volume = open_quietly(staged)
    assert volume.ndim == 3 and volume.shape[1:] == (64, 64)
    compared(volume, output)


@needs_realdata
def test_real_signed_12_bit_mosaic_sign_extends_from_the_high_bit(tmp_path):
    """The set's README: the stripes 0x0F0F and 0xFFFF of the signed copy read -241 and -1
    (dcm2niix v1.0.20220720 reads 3855 and 4095 there, so its values are no reference)."""
    signed = open_quietly(staged_copy("dcm_qa_12bit/In/12bitSigned_0x0F0F.dcm", tmp_path / "s"))
    unsigned = open_quietly(staged_copy("dcm_qa_12bit/In/12bitUnsigned_0x0F0F.dcm", tmp_path / "u"))
    stored = unsigned.values.astype(np.int32)
    np.testing.assert_array_equal(signed.values, np.where(stored >= 2048, stored - 4096, stored))
    assert {-241, -1} <= set(np.unique(signed.values).tolist())
    np.testing.assert_allclose(signed.dicom.affine, unsigned.dicom.affine)
