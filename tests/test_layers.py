"""Layers: only dicomarray/geometry.py computes geometry; writers do not call the accessor.

A lint over the package's source (``ast``, so comments and docstrings do not count). It
finds the primitives of geometry outside ``geometry.py``:

- a slice normal or an affine: a call of ``np.cross``, ``slice_normal`` or
  ``affine_from`` (projecting VolumeGeometry's own positions onto its normal with
  ``positions_along_normal`` uses geometry, it does not rebuild it);
- a geometry tag read from a volume's attrs or its assembly report (``attrs.get(
  "PixelSpacing")``, ``volume.attrs["ImageOrientationPatient"]``, ``SliceThickness``,
  ``SpacingBetweenSlices``, ``report["slice_spacing"]``, or only whether it is there:
  ``"ImageOrientationPatient" in attrs``): after a volume is opened its geometry is
  :class:`dicomarray.geometry.VolumeGeometry`'s to say, from coords and attrs, whatever
  selection, flip or transpose made them;
- in ``dicomarray/writers/``, any ``<x>.dicom.<y>``: a writer knows the layer below it
  (geometry, transforms), never the accessor above it.

Index rows and file headers are not attrs: the modules that read tags from files (header,
frames, index, volume) name these keywords to read them and are not touched by the rules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

import dicomarray

PACKAGE = Path(dicomarray.__file__).parent
#: The one owner of geometry.
OWNER = "geometry.py"
#: Calls that compute a slice normal or an affine from tag values.
GEOMETRY_CALLS = {"cross", "slice_normal", "affine_from"}
#: Keys whose read from attrs (or the assembly report) is a geometry figure.
GEOMETRY_KEYS = {
    "PixelSpacing",
    "ImageOrientationPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "slice_spacing",
}
#: Receivers that are a volume's attrs or its assembly report, by their source text.
RECEIVER_WORDS = ("attrs", "report", "ASSEMBLY_ATTR")

#: Modules allowed a primitive, each for the exact kinds it needs and why. An allowance
#: that is no longer used fails :func:`test_every_allowance_is_still_needed`.
ALLOWED: dict[str, dict[str, str]] = {
    # the way in: checks each index row's IOP (parallel cosines) and orders the slices of
    # index rows along their normal, building the SeriesGeometry the volume's coords hold
    "assembly.py": {"call slice_normal": "IOP of index rows checked, slices sorted along it"},
    # cuts index rows of mosaics into tiles: each tile's position along the mosaic's normal
    "mosaic.py": {"call slice_normal": "tiles of index rows placed along their normal"},
    # writes synthetic DICOM files: the positions it writes come from the normal it chooses
    "sample.py": {"call cross": "the step direction of the slices it writes"},
}


class Finding(NamedTuple):
    module: str  # relative to the package, posix
    line: int
    kind: str  # "call <name>", "read <key>", "accessor"
    text: str

    def __str__(self) -> str:
        return f"dicomarray/{self.module}:{self.line}: {self.kind}: {self.text}"


def findings_in(source: str, module: str) -> Iterator[Finding]:
    """The primitives of geometry (and, in writers, accessor calls) in one module's source."""
    in_writers = module.startswith("writers/")
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.expr)]
    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset)):
        kind = _call_kind(node) or _read_kind(node)
        if kind is None and in_writers and _is_accessor(node):
            kind = "accessor"
        if kind is not None:
            yield Finding(module, node.lineno, kind, ast.unparse(node)[:80])


def _call_kind(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return f"call {name}" if name in GEOMETRY_CALLS else None


def _read_kind(node: ast.AST) -> str | None:
    """``<attrs>[key]``, ``<attrs>.get(key, ...)`` or ``key in <attrs>`` for a geometry key."""
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        receiver, key = node.value, node.slice
    elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
        receiver, key = node.comparators[0], node.left
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
    ):
        receiver, key = node.func.value, node.args[0]
    else:
        return None
    if not (isinstance(key, ast.Constant) and key.value in GEOMETRY_KEYS):
        return None
    text = ast.unparse(receiver)
    return f"read {key.value}" if any(word in text for word in RECEIVER_WORDS) else None


def _is_accessor(node: ast.AST) -> bool:
    """``<x>.dicom.<y>``, or ``getattr(<x>, "dicom")``."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
        return node.value.attr == "dicom"
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "getattr"
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
        and node.args[1].value == "dicom"
    )


def package_findings() -> list[Finding]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module != OWNER:
            found.extend(findings_in(path.read_text(encoding="utf-8"), module))
    return found


def _allowed(finding: Finding) -> bool:
    return finding.kind in ALLOWED.get(finding.module, {})


def test_only_geometry_computes_geometry_and_writers_do_not_call_the_accessor():
    offending = [str(f) for f in package_findings() if not _allowed(f)]
    assert not offending, "ask VolumeGeometry.of(volume) instead:\n" + "\n".join(offending)


@pytest.mark.parametrize(
    "source",
    [
        'volume.attrs["PixelSpacing"]',
        'volume.attrs.get("SliceThickness")',
        '"ImageOrientationPatient" not in volume.attrs',
        'report["slice_spacing"]',
        "np.cross(a, b)",
        "volume.dicom.affine",
    ],
)
def test_the_lint_finds_each_kind_of_geometry_outside_its_owner(source):
    assert [f.kind for f in findings_in(source, "writers/x.py")]


def test_every_allowance_is_still_needed():
    found = {(f.module, f.kind) for f in package_findings()}
    unused = [(m, k) for m, kinds in ALLOWED.items() for k in kinds if (m, k) not in found]
    assert not unused, f"allowances no module uses any more, remove them: {unused}"
