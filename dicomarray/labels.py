"""Short descriptions of series for messages: errors and warnings name what they are about."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The attr holding a volume's assembly report (files used and left out, warnings, steps).
ASSEMBLY_ATTR = "dicomarray_assembly"


def series_label(attrs: Mapping[str, Any]) -> str:
    """A short, never failing description of the series a volume's attrs come from.

    Built from (0020,0011) *Series Number*, (0008,103E) *Series Description*, (0020,000E)
    *Series Instance UID* and the folder of its first file, as far as the attrs hold them:
    ``series 2 "HEAD 5mm" (UID 1.2.3, folder /data/ct)``.
    """
    attrs = attrs if isinstance(attrs, Mapping) else {}
    words = ["series"]
    for keyword, form in (("SeriesNumber", "{}"), ("SeriesDescription", '"{}"')):
        value = attrs.get(keyword)
        if isinstance(value, str | int | float) and str(value).strip():
            words.append(form.format(str(value).strip()))
    where = []
    uid = attrs.get("SeriesInstanceUID")
    if isinstance(uid, str) and uid:
        where.append(f"UID {uid}")
    report = attrs.get(ASSEMBLY_ATTR)
    files = report.get("files") if isinstance(report, Mapping) else None
    if isinstance(files, list) and files and isinstance(files[0], str):
        where.append(f"folder {Path(files[0]).parent}")
    if where:
        words.append(f"({', '.join(where)})")
    return " ".join(words) if len(words) > 1 else "a volume with no series tags"
