"""A fuzzing harness: mutated DICOM files through every public entry point, under limits.

``python -m benchmarks.fuzz --n 10000`` makes 10,000 cases from a seed corpus covering every
transfer syntax pydicom's test files have (native, implicit and big endian, RLE, JPEG
baseline/extended/lossless, JPEG-LS, JPEG 2000, deflate, enhanced multi-frame, DICOMDIR),
runs each in its own forked child with a CPU and memory budget through ``scan``,
``open_series``, ``.values``, ``hu()``, ``affine``, ``to_npy``, ``to_zarr`` and ``to_jpg``,
and writes the counts and grouped findings as JSON and markdown. Runs are reproducible: case
``i`` of seed ``s`` is always the same bytes (``--replay i`` reruns it alone).

Modules: :mod:`.corpus` (the seeds), :mod:`.mutate` (the mutations), :mod:`.stages` (the
calls a child makes), :mod:`.runner` (forking, limits, timeouts), :mod:`.summary` (counts).
"""
