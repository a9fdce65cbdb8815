"""Running the generation job on a Dask cluster (SLURM via dask-jobqueue)."""
