"""Preloaded by the local Dask cluster's workers (``--runner dask``): they import Keras and its
backend as the CLI does (without absl's start-up lines on the terminal) while they start, which
overlaps the launching process's own start-up, instead of in their first task."""
import importlib

from kepkreator.quiet import quiet_tensorflow_import


def dask_setup(worker) -> None:
    quiet_tensorflow_import()
    for module in ("keras", "pipeline.handlers"):
        importlib.import_module(module)
