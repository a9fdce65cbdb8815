"""Preloaded by the local Dask cluster's workers (``--runner dask``): they import TensorFlow as
the CLI does, without absl's start-up lines on the terminal."""
from kepkreator.quiet import quiet_tensorflow_import


def dask_setup(worker) -> None:
    quiet_tensorflow_import()
