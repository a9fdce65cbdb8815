"""The generation job on a SLURM cluster: dask-jobqueue starts Dask workers as SLURM jobs, and
the pipeline runs on them with Beam's DaskRunner.

    pip install '.[dask]' dask-jobqueue
    python -m jobs.dask.slurm_job --spec jobs/dataflow/digits-1m.yaml --out /shared/digits-1m \\
        --workers 8 --queue gpu --account PROJECT --walltime 02:00:00 [--gpus-per-worker 1]

Every worker must see --out (a shared file system) and the package (installed on the nodes,
or the same virtual environment on shared storage). Arguments it does not know go to
``kepkreator generate`` unchanged.
"""
from __future__ import annotations

import argparse
import sys


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m jobs.dask.slurm_job", allow_abbrev=False)
    parser.add_argument("--workers", type=int, default=4, help="SLURM jobs, one worker each")
    parser.add_argument("--queue", required=True, help="SLURM partition")
    parser.add_argument("--account", default=None)
    parser.add_argument("--walltime", default="01:00:00")
    parser.add_argument("--cores", type=int, default=4, help="CPU cores per worker")
    parser.add_argument("--memory", default="16GB", help="memory per worker")
    parser.add_argument("--gpus-per-worker", type=int, default=0)
    return parser.parse_known_args(argv)


def cluster_kwargs(args: argparse.Namespace) -> dict:
    """dask_jobqueue.SLURMCluster's arguments: one process per worker, its TensorFlow threads
    on the job's cores, a GPU where asked for."""
    extra = [f"--gres=gpu:{args.gpus_per_worker}"] if args.gpus_per_worker else []
    return {"queue": args.queue, "account": args.account, "walltime": args.walltime,
            "cores": args.cores, "processes": 1, "memory": args.memory,
            "job_extra_directives": extra,
            "job_script_prologue": [f"export TF_NUM_INTRAOP_THREADS={args.cores}"]}


def generate_args(args: argparse.Namespace, rest: list[str], address: str) -> list[str]:
    return [*rest, "--runner", "dask", "--dask_address", address]


def main(argv=None) -> int:
    args, rest = parse(sys.argv[1:] if argv is None else argv)
    from dask_jobqueue import SLURMCluster

    from kepkreator.cli import main as kepkreator
    with SLURMCluster(**cluster_kwargs(args)) as cluster:
        cluster.scale(jobs=args.workers)
        return kepkreator(["generate", *generate_args(args, rest, cluster.scheduler_address)])


if __name__ == "__main__":
    sys.exit(main())
