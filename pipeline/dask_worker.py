"""Preloaded by the local Dask cluster's workers (``--runner dask``): they import Keras and its
backend as the CLI does (without absl's start-up lines on the terminal) while they start, which
overlaps the launching process's own start-up, instead of in their first task."""
from kepkreator.quiet import quiet_tensorflow_import


def dask_setup(worker) -> None:
    quiet_tensorflow_import()
    import keras  # noqa: F401 (the import is the point)

    import pipeline.handlers  # noqa: F401
