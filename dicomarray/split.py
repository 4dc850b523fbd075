"""From frames that repeat slice positions to a grid of volumes: which tags tell them apart.

fMRI, diffusion, multi-echo, perfusion and cardiac series hold several volumes over the
same slices. Each volume becomes one step of an extra dimension before ``(z, y, x)``:
``t`` (time), ``echo``, ``diffusion``, ``volume`` (only an order is known) or a dim
named after the tag that splits them (``image_type`` for magnitude and phase). The rule
is decided from the data: an enhanced file's (0020,9222) *Dimension Index Sequence* when
it names one, else the first rule in :data:`TAG_RULES` (then pairs of them) that gives a
full grid, where every volume holds every slice position exactly once, else the order of
acquisition at each position. A grid with holes is refused with the candidates listed,
never cut. Nothing here reads pixels.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from .attrs import plain_cell, slice_coordinate, snake_case
from .errors import AssemblyError
from .geometry import POSITION_TOLERANCE_MM

#: The dim each splitting tag makes. Keys of one entry split together (a b-value and its
#: gradient are one diffusion direction).
TAG_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("t", ("TemporalPositionIdentifier",)),
    ("t", ("TemporalPositionIndex",)),
    ("echo", ("EchoNumbers",)),
    ("echo", ("EchoTime",)),
    ("diffusion", ("DiffusionBValue", "DiffusionGradientOrientation")),
    ("t", ("TriggerTime",)),
    ("t", ("AcquisitionNumber",)),
    ("t", ("FrameAcquisitionDateTime",)),
    ("t", ("AcquisitionDateTime",)),
    ("t", ("AcquisitionTime",)),
    ("t", ("ContentTime",)),
    ("image_type", ("ImageType",)),
    ("series_number", ("SeriesNumber",)),
)
#: The rule that needs no tag: the k-th frame (in acquisition order) at each position
#: belongs to volume k. Named ``diffusion`` or ``t`` when the volumes differ in those.
ORDER_RULE = "acquisition order"
#: Dimension index pointers that place a frame in space, not in a volume.
_SPATIAL_POINTERS = {"ImagePositionPatient", "InStackPositionNumber", "StackID", "SliceLocation"}
#: Frame times, most precise first.
_TIME_KEYS = ("FrameAcquisitionDateTime", "AcquisitionDateTime", "AcquisitionTime", "ContentTime")
_DIFFUSION_KEYS = ("DiffusionBValue", "DiffusionGradientOrientation")
#: Dims every volume has, which no split may make.
_RESERVED_DIMS = ("z", "y", "x", "channel")
#: Each rule's per-frame values, read once per split.
_KeyCache = dict[tuple[str, ...], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class ExtraDim:
    """One dimension before ``(z, y, x)``.

    Attributes
    ----------
    name : str
        ``t``, ``echo``, ``diffusion``, ``volume`` or a tag's snake_case name.
    split_by : tuple of str
        The tags whose values tell its steps apart, or ``("acquisition order",)``.
    coords : dict
        Coordinate name -> ``(values, attrs)``, one value per step; the one named
        :attr:`name` is the dim coordinate.
    """

    name: str
    split_by: tuple[str, ...]
    coords: dict[str, tuple[np.ndarray, dict[str, Any]]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.coords[self.name][0])

    def report(self) -> dict[str, Any]:
        """JSON-safe record for the assembly report."""
        return {"dim": self.name, "size": self.size, "split_by": list(self.split_by)}


@dataclass(frozen=True)
class Grid:
    """Frames arranged as ``(*dims, z)``.

    Attributes
    ----------
    dims : tuple of ExtraDim
        The extra dims, outermost first; empty for one 3-D volume.
    order : numpy.ndarray
        Row positions of the frames in C order over ``(*dims, z)``, each volume ordered
        along ``z``.
    n_slices : int
        Slices in each volume.
    candidates : list of str
        The rules tried, with what each gave (for the report and errors).
    """

    dims: tuple[ExtraDim, ...]
    order: np.ndarray
    n_slices: int
    candidates: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return (*(d.size for d in self.dims), self.n_slices)


@dataclass(frozen=True)
class _Rule:
    dim: str
    keys: tuple[str, ...]
    #: the dim name was asked for (``dims=``): the order rule keeps it
    asked: bool = False

    def describe(self) -> str:
        return ORDER_RULE if self.keys == (ORDER_RULE,) else "+".join(self.keys)


def split_volumes(
    frames: pd.DataFrame,
    z: np.ndarray,
    slice_order: np.ndarray,
    *,
    split_by: Sequence[str] | None = None,
    dims: Sequence[str] | None = None,
) -> Grid:
    """Arrange frames as a grid of volumes over shared slice positions.

    Parameters
    ----------
    frames : pandas.DataFrame
        Frame rows of one stack (plain cells; see :func:`dicomarray.frames.expand_frames`).
    z : numpy.ndarray
        Each frame's position along the slice normal (mm), or its place in the stack.
    slice_order : numpy.ndarray
        Row positions sorting the frames along ``z`` (ties by InstanceNumber, frame).
    split_by : sequence of str, optional
        Tags that tell the volumes apart, each making one dim (a b-value and gradient
        make one); ``("acquisition order",)`` for the order at each position.
    dims : sequence of str, optional
        The extra dims wanted (``("t",)``, ``("echo", "t")``, ``()`` for none): only rules
        that make them are tried.

    Raises
    ------
    AssemblyError
        No rule gives a full grid: the message lists each candidate and what it gave.
    """
    split_by, dims = _names(split_by), _names(dims)
    _check_dims(frames, dims)
    position = _position_ids(z)
    n_positions = int(position.max()) + 1 if len(position) else 0
    repeated = len(position) > n_positions
    if split_by is None and not repeated and not dims:
        return Grid((), np.asarray(slice_order), len(frames))
    cache: _KeyCache = {}
    rules = _rules_asked(frames, split_by, dims, cache)
    tried: list[str] = []
    for combination in rules:
        labels = _labels(frames, position, combination, cache)
        if labels is None:
            tried.append(f"{_shown(combination)}: does not split the frames")
            continue
        verdict = _grid_verdict(labels, position, n_positions)
        if verdict:
            tried.append(f"{_shown(combination)}: {verdict}")
            continue
        made = [
            _extra_dim(frames, rule, column)
            for rule, column in zip(combination, labels.T, strict=True)
        ]
        extra = tuple(dim for dim, _ in made)
        order = _grid_order(labels, [steps for _, steps in made], slice_order)
        return Grid(extra, order, n_positions, tried)
    raise AssemblyError(_refusal(frames, position, n_positions, tried, split_by, dims))


def _names(value: Sequence[str] | None) -> tuple[str, ...] | None:
    """``split_by``/``dims`` as a tuple: one name given as a string is that one name (not
    its letters)."""
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _check_dims(frames: pd.DataFrame, dims: tuple[str, ...] | None) -> None:
    """Refuse dims the grid cannot have: the spatial ones, or one named twice."""
    if not dims:
        return
    taken = sorted(set(dims) & set(_RESERVED_DIMS))
    twice = sorted({d for d in dims if dims.count(d) > 1})
    if taken or twice:
        problem = f"names {taken} (dims of every volume)" if taken else f"repeats {twice}"
        raise AssemblyError(
            f"{frames['path'].iloc[0]}: dims={dims!r} {problem}; extra dims go before "
            f"{', '.join(_RESERVED_DIMS)}, each once, e.g. dims=('t',)"
        )


def _position_ids(z: np.ndarray) -> np.ndarray:
    """Each frame's slice position number (0 = lowest z), within the tolerance."""
    if len(z) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(z, kind="stable")
    new = np.concatenate([[0], (np.diff(z[order]) > POSITION_TOLERANCE_MM).astype(np.int64)])
    ids = np.empty(len(z), dtype=np.int64)
    ids[order] = np.cumsum(new)
    return ids


def _rules_asked(
    frames: pd.DataFrame,
    split_by: Sequence[str] | None,
    dims: Sequence[str] | None,
    cache: _KeyCache,
) -> list[tuple[_Rule, ...]]:
    """The combinations of rules to try, in order."""
    if split_by is not None:
        return [_explicit_rules(frames, split_by)]
    # a rule the Dimension Index Sequence names is also a tag rule: tried once, first
    named = dict.fromkeys(_enhanced_rules(frames) + _tag_rules(frames))
    tags = [r for r in named if _varies(frames, r, cache)]
    order = _Rule("volume", (ORDER_RULE,))
    # tags before the order rule: a tag that tells volumes apart names them; the order of
    # acquisition comes next within the groups of one tag, and alone as the last resort
    combinations: list[tuple[_Rule, ...]] = [(r,) for r in tags]
    combinations += [pair for pair in itertools.combinations(tags, 2) if pair[0].dim != pair[1].dim]
    combinations += [(r, order) for r in tags] + [(order,)]
    if dims is not None:
        wanted = tuple(dims)
        combinations = [
            tuple(_Rule(w, r.keys, asked=True) for r, w in zip(c, wanted, strict=True))
            for c in combinations
            if _dims_match(c, wanted)
        ]
    return combinations


def _explicit_rules(frames: pd.DataFrame, split_by: Sequence[str]) -> tuple[_Rule, ...]:
    rules: list[_Rule] = []
    for key in split_by:
        if key == ORDER_RULE:
            rules.append(_Rule("volume", (ORDER_RULE,)))
        elif key in _DIFFUSION_KEYS:
            if not any(r.dim == "diffusion" for r in rules):
                rules.append(_Rule("diffusion", tuple(k for k in _DIFFUSION_KEYS if k in frames)))
        elif key not in frames:
            raise AssemblyError(
                f"{frames['path'].iloc[0]}: split_by names {key!r}, which is not a frame "
                f"column; known: {', '.join(_known_keys())}, {ORDER_RULE!r}"
            )
        else:
            rules.append(_Rule(_dim_of(key), (key,)))
    return tuple(rules)


def _known_keys() -> list[str]:
    return [key for _dim, keys in TAG_RULES for key in keys]


def _dim_of(key: str) -> str:
    for dim, keys in TAG_RULES:
        if key in keys:
            return dim
    return snake_case(key)


def _dims_match(combination: tuple[_Rule, ...], wanted: tuple[str, ...]) -> bool:
    """Whether a combination makes the wanted dims (the order rule may take any name)."""
    if len(combination) != len(wanted):
        return False
    return all(
        r.dim == w or r.keys == (ORDER_RULE,) for r, w in zip(combination, wanted, strict=True)
    )


def _enhanced_rules(frames: pd.DataFrame) -> list[_Rule]:
    """The non-spatial dimensions an enhanced file's Dimension Index Sequence names."""
    if "DimensionIndexPointers" not in frames:
        return []
    pointers = plain_cell(frames["DimensionIndexPointers"].iloc[0])
    if not isinstance(pointers, list):
        return []
    rules = []
    for keyword in pointers:
        keyword = {"EffectiveEchoTime": "EchoTime"}.get(str(keyword), str(keyword))
        if keyword in _SPATIAL_POINTERS or keyword not in frames:
            continue
        dim = _dim_of(keyword)
        if dim == "diffusion":
            rule = _Rule("diffusion", tuple(k for k in _DIFFUSION_KEYS if k in frames))
        else:
            rule = _Rule(dim, (keyword,))
        if rule not in rules:
            rules.append(rule)
    return rules


def _tag_rules(frames: pd.DataFrame) -> list[_Rule]:
    return [
        _Rule(dim, tuple(k for k in keys if k in frames))
        for dim, keys in TAG_RULES
        if any(k in frames for k in keys)
    ]


def _varies(frames: pd.DataFrame, rule: _Rule, cache: _KeyCache) -> bool:
    return len(set(_keys(frames, rule.keys, cache))) > 1


def _keys(frames: pd.DataFrame, keys: tuple[str, ...], cached: _KeyCache) -> list[tuple[Any, ...]]:
    """Each frame's values of ``keys``, hashable; read once per rule (a split tries many
    combinations over thousands of frames)."""
    if keys not in cached:
        columns = [[_hashable(v) for v in frames[k].tolist()] for k in keys]
        cached[keys] = list(zip(*columns, strict=True))
    return cached[keys]


def _hashable(value: Any) -> Any:
    value = plain_cell(value)
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def _labels(
    frames: pd.DataFrame, position: np.ndarray, combination: tuple[_Rule, ...], cache: _KeyCache
) -> np.ndarray | None:
    """(frames, rules) step numbers: each rule's distinct values numbered in order."""
    columns: list[np.ndarray] = []
    for rule in combination:
        if rule.keys == (ORDER_RULE,):
            continue
        keys = _keys(frames, rule.keys, cache)
        distinct = sorted(set(keys), key=_sort_key)
        if len(distinct) < 2:
            return None
        number = {k: n for n, k in enumerate(distinct)}
        columns.append(np.array([number[k] for k in keys], dtype=np.int64))
    tagged = np.stack(columns, axis=1) if columns else np.zeros((len(frames), 0), np.int64)
    for i, rule in enumerate(combination):
        if rule.keys == (ORDER_RULE,):
            ranks = _acquisition_ranks(frames, position, tagged)
            tagged = np.insert(tagged, i, ranks, axis=1)
    return tagged


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Values of mixed types sort: missing first, numbers by value, the rest as text."""
    return tuple((0, 0, "") if v is None else _typed(v) for v in key)


def _typed(value: Any) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _acquisition_ranks(
    frames: pd.DataFrame, position: np.ndarray, others: np.ndarray
) -> np.ndarray:
    """Each frame's rank, in acquisition order, among the frames at its position that
    share its other labels."""
    times = _frame_seconds(frames)[0]
    instance = pd.to_numeric(frames["InstanceNumber"].map(plain_cell), errors="coerce")
    order = np.lexsort(
        (
            frames["frame"].to_numpy(dtype=np.int64),
            instance.fillna(np.inf).to_numpy(dtype=float),
            np.nan_to_num(times, nan=np.inf),
            *(others[:, j] for j in range(others.shape[1])),
            position,
        )
    )
    group = np.column_stack([position, others])[order]
    new_group = np.concatenate([[True], (np.diff(group, axis=0) != 0).any(axis=1)])
    starts = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order)) - starts
    return ranks


def _grid_verdict(labels: np.ndarray, position: np.ndarray, n_positions: int) -> str:
    """Why labels do not make a full grid ('' when they do)."""
    sizes = [int(labels[:, j].max()) + 1 for j in range(labels.shape[1])]
    cells = np.ravel_multi_index(tuple(labels.T), sizes) if sizes else np.zeros(len(labels))
    n_cells = int(np.prod(sizes))
    if len(labels) != n_cells * n_positions:
        counts = np.bincount(cells.astype(np.int64), minlength=n_cells)
        return (
            f"{' x '.join(map(str, sizes)) or 1} volumes of "
            f"{_count_range(counts)} frames for {n_positions} positions"
        )
    slots = cells.astype(np.int64) * n_positions + position
    if len(np.unique(slots)) != len(slots):
        return f"{' x '.join(map(str, sizes))} volumes, but some hold a position twice"
    return ""


def _count_range(counts: np.ndarray) -> str:
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low} to {high}"


def _grid_order(labels: np.ndarray, steps: list[np.ndarray], slice_order: np.ndarray) -> np.ndarray:
    """Row positions in C order over the grid: each dim's steps in order, then z."""
    rank_in_z = np.empty(len(slice_order), dtype=np.int64)
    rank_in_z[np.asarray(slice_order)] = np.arange(len(slice_order))
    step_keys = [step_of[labels[:, j]] for j, step_of in enumerate(steps)]
    return np.lexsort((rank_in_z, *reversed(step_keys)))


def _extra_dim(
    frames: pd.DataFrame, rule: _Rule, labels: np.ndarray
) -> tuple[ExtraDim, np.ndarray]:
    """The dim a rule makes, and the step each label goes to.

    Named and given coordinates from what differs between its steps; steps follow the
    tag's values (acquisition order for the order rule and for diffusion directions, as
    dcm2niix writes them, and for frame times, whose text does not sort across midnight).
    """
    n = int(labels.max()) + 1
    per_label = [np.flatnonzero(labels == k) for k in range(n)]
    name = _name(frames, rule, per_label)
    if name == "diffusion" or rule.keys == (ORDER_RULE,) or rule.keys[0] in _TIME_KEYS:
        order = np.lexsort(_first_acquired(frames, per_label)[::-1])
    else:
        order = np.arange(n)
    per_step = [per_label[k] for k in order]
    coords = _coords(frames, rule, name, per_step)
    step_of_label = np.empty(n, dtype=np.int64)
    step_of_label[order] = np.arange(n)
    return ExtraDim(name, rule.keys, coords), step_of_label


def _name(frames: pd.DataFrame, rule: _Rule, per_step: list[np.ndarray]) -> str:
    """The order rule's dim: diffusion or t when the volumes differ in those, else volume."""
    if rule.keys != (ORDER_RULE,) or rule.asked:  # a tag's dim, or the one asked for
        return rule.dim
    diffusion = _step_values(frames, "DiffusionBValue", per_step)
    if diffusion is not None and len(set(diffusion.tolist())) > 1:
        return "diffusion"
    seconds = _step_seconds(frames, per_step)
    if seconds is not None and len(np.unique(seconds[0])) == len(per_step):
        return "t"
    declared = _step_values(frames, "NumberOfTemporalPositions", per_step)
    if declared is not None and set(declared.tolist()) == {len(per_step)}:
        return "t"
    return "volume"


def _first_acquired(frames: pd.DataFrame, per_step: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Per step: earliest frame time, then lowest InstanceNumber, then first row (sort keys)."""
    times = _frame_seconds(frames)[0]
    instance = pd.to_numeric(frames["InstanceNumber"].map(plain_cell), errors="coerce")
    instance_numbers = instance.to_numpy(dtype=float)
    return tuple(
        np.array([np.nanmin(np.append(values[rows], np.inf)) for rows in per_step])
        for values in (times, instance_numbers, np.arange(len(frames), dtype=float))
    )


def _coords(
    frames: pd.DataFrame, rule: _Rule, name: str, per_step: list[np.ndarray]
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    n = len(per_step)
    coords: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    if name == "t":
        values, attrs = _step_seconds(frames, per_step) or _nominal_seconds(frames, rule, per_step)
        coords["t"] = (values - values[0], {"units": "s", **attrs})
    elif name == "echo":
        echo_time = _step_values(frames, "EchoTime", per_step)
        if echo_time is not None and echo_time.dtype.kind in "if":
            coords["echo"] = (
                echo_time.astype(np.float64),
                {"units": "ms", "long_name": "EchoTime"},
            )
        else:
            coords["echo"] = (np.arange(n, dtype=np.int64), {"long_name": "echo"})
    elif name in ("diffusion", "volume"):
        coords[name] = (np.arange(n, dtype=np.int64), {"long_name": f"{name} in acquisition order"})
    else:
        coords[name] = (_rule_values(frames, rule, per_step), {})
    if name == "diffusion":
        coords.update(_diffusion_coords(frames, per_step))
    for key in rule.keys:
        coord = _COORD_NAMES.get(key, snake_case(key))
        tag_values = _step_values(frames, key, per_step)
        if tag_values is not None and coord not in coords and coord != name:
            coords[coord] = (tag_values, {})
    return coords


#: Coordinate names of splitting tags where snake_case would be long.
_COORD_NAMES = {
    "TemporalPositionIdentifier": "temporal_position",
    "TemporalPositionIndex": "temporal_position",
    "EchoNumbers": "echo_number",
}


def _rule_values(frames: pd.DataFrame, rule: _Rule, per_step: list[np.ndarray]) -> np.ndarray:
    values = _step_values(frames, rule.keys[0], per_step)
    return values if values is not None else np.arange(len(per_step), dtype=np.int64)


def _step_values(frames: pd.DataFrame, key: str, per_step: list[np.ndarray]) -> np.ndarray | None:
    """One value per step of a tag that is the same on every frame of each step, else None."""
    if key not in frames:
        return None
    column = frames[key]
    firsts = []
    for rows in per_step:
        values = {_hashable(column.iat[i]) for i in rows}
        if len(values) != 1 or None in values:
            return None
        firsts.append(column.iat[int(rows[0])])
    return slice_coordinate(pd.Series(firsts, dtype=object))


def _diffusion_coords(
    frames: pd.DataFrame, per_step: list[np.ndarray]
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """``b_value`` (s/mm2) and the gradient direction in LPS (0 for no direction)."""
    coords: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    b = _step_values(frames, "DiffusionBValue", per_step)
    if b is not None and b.dtype.kind in "if":
        coords["b_value"] = (
            b.astype(np.float64),
            {"units": "s/mm2", "long_name": "DiffusionBValue"},
        )
    vectors = np.zeros((len(per_step), 3))
    if "DiffusionGradientOrientation" in frames:
        for step, rows in enumerate(per_step):
            value = plain_cell(frames["DiffusionGradientOrientation"].iat[int(rows[0])])
            if isinstance(value, list) and len(value) == 3:
                vectors[step] = np.asarray(value, dtype=float)
    for axis, letter in enumerate("lps"):
        coords[f"gradient_{letter}"] = (
            vectors[:, axis],
            {"long_name": f"diffusion gradient direction, patient {letter.upper()} component"},
        )
    return coords


def _frame_seconds(frames: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Each frame's acquisition time in seconds, from the most precise tag every frame has
    (NaN and '' when none has)."""
    for key in _TIME_KEYS:
        if key not in frames:
            continue
        seconds = np.array([_seconds(plain_cell(v)) for v in frames[key]], dtype=float)
        if np.isfinite(seconds).all():
            if key.endswith("Time") and not key.endswith("DateTime"):
                seconds = _unwrap_midnight(seconds)
            return seconds, key
    return np.full(len(frames), np.nan), ""


def _step_seconds(
    frames: pd.DataFrame, per_step: list[np.ndarray]
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Each step's start (its earliest frame) in seconds, when every frame has a time and
    the steps start at different times."""
    seconds, key = _frame_seconds(frames)
    if not key:
        return None
    starts = np.array([seconds[rows].min() for rows in per_step])
    if len(np.unique(starts)) != len(starts):
        return None
    return starts, {"long_name": f"time from the first volume's first {key}"}


def _nominal_seconds(
    frames: pd.DataFrame, rule: _Rule, per_step: list[np.ndarray]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Time without frame times: TriggerTime, else the step number x RepetitionTime."""
    n = len(per_step)
    trigger = _step_values(frames, "TriggerTime", per_step)
    if "TriggerTime" in rule.keys and trigger is not None and trigger.dtype.kind in "if":
        return trigger / 1000.0, {"long_name": "TriggerTime"}
    tr = _step_values(frames, "RepetitionTime", [np.arange(len(frames))])
    if tr is not None and tr.dtype.kind in "if" and tr[0] > 0:
        return np.arange(n) * float(tr[0]) / 1000.0, {
            "long_name": "volume number x RepetitionTime (the frames hold no distinct times)"
        }
    return np.arange(n, dtype=np.float64), {
        "units": "1",
        "long_name": "volume number (the frames hold no times and no RepetitionTime)",
    }


_TM = re.compile(r"^(\d{2}):?(\d{2})?:?(\d{2})?(\.\d+)?$")


def _seconds(value: Any) -> float:
    """Seconds of a DICOM TM (of the day) or DT (from 1970) value; NaN if unreadable."""
    if value is None:
        return np.nan
    text = str(value).strip()
    if len(text) >= 8 and text[:8].isdigit() and not _TM.match(text):
        return _datetime_seconds(text)
    match = _TM.match(text)
    if not match:
        return np.nan
    hours, minutes, secs, fraction = match.groups()
    return (
        int(hours) * 3600
        + int(minutes or 0) * 60
        + int(secs or 0)
        + (float(fraction) if fraction else 0.0)
    )


def _datetime_seconds(text: str) -> float:
    digits = re.match(r"^(\d{8})(\d{2})?(\d{2})?(\d{2})?(\.\d+)?", text)
    if not digits:
        return np.nan
    date, hours, minutes, secs, fraction = digits.groups()
    try:
        day = datetime.strptime(date, "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return np.nan
    return (
        day.timestamp()
        + int(hours or 0) * 3600
        + int(minutes or 0) * 60
        + int(secs or 0)
        + (float(fraction) if fraction else 0.0)
    )


def _unwrap_midnight(seconds: np.ndarray) -> np.ndarray:
    """Times of day in a series that runs past midnight: later frames gain a day."""
    if seconds.max() - seconds.min() > 12 * 3600:
        return np.where(seconds < 12 * 3600, seconds + 24 * 3600, seconds)
    return seconds


def _shown(combination: tuple[_Rule, ...]) -> str:
    return f"split_by={tuple(r.describe() for r in combination)!r}"


def _refusal(
    frames: pd.DataFrame,
    position: np.ndarray,
    n_positions: int,
    tried: list[str],
    split_by: Sequence[str] | None,
    dims: Sequence[str] | None,
) -> str:
    counts = np.bincount(position, minlength=n_positions) if len(position) else np.zeros(1)
    # name the files where the grid breaks: positions holding other than the usual count
    usual = np.bincount(counts).argmax()
    odd = np.isin(position, np.flatnonzero(counts != usual))
    where = frames["path"][odd] if odd.any() else frames["path"]
    files = list(dict.fromkeys(map(str, where)))
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    asked = (
        f" with split_by={tuple(split_by)!r}"
        if split_by is not None
        else f" with dims={tuple(dims)!r}"
        if dims is not None
        else ""
    )
    candidates = "; ".join(tried) if tried else "no tag varies between the frames"
    return (
        f"{shown}: {len(frames)} frames at {n_positions} slice positions (each holds "
        f"{_count_range(counts)}) do not form a full grid of volumes{asked}. Tried: "
        f"{candidates}. Pass split_by= (tags) or dims= to open_series, or filter the index "
        "rows to one volume set"
    )
