"""Benchmarks of dicomarray against SimpleITK, a plain pydicom loop, dicom-numpy and a floor.

Run the whole suite with ``python -m benchmarks`` (``--help`` lists the options). Every
timing runs in a fresh interpreter (:mod:`benchmarks.task`), so no contender profits from
another's imports, caches or freed memory. Results land in ``benchmarks/results/``.

This package imports nothing heavy at import time: the child processes import only the
libraries of the contender they time.
"""
