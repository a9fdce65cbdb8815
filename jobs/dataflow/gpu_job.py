"""Dataflow job with GPU workers for Generate and Score.

    python -m jobs.dataflow.gpu_job --spec jobs/dataflow/digits-1m.yaml \\
        --out gs://BUCKET/kepkreator/digits-1m --project PROJECT --region us-central1 \\
        --temp_location gs://BUCKET/tmp --sdk_container_image REGION-docker.pkg.dev/PROJECT/REPO/kepkreator-gpu:0.1.0

Everything not named here is passed to Beam unchanged. The accelerator goes twice, as Dataflow
needs: a resource hint on the Generate and Score steps (which run on GPU workers), and the
``worker_accelerator`` service option for the job's default worker pool.
"""
from __future__ import annotations

import sys

ACCELERATOR = "type:nvidia-l4;count:1;install-nvidia-driver"
DEFAULTS = {
    "--runner": "DataflowRunner",
    "--machine_type": "g2-standard-8",
    "--dataflow_service_options": f"worker_accelerator={ACCELERATOR}",
    "--experiments": "use_runner_v2",
    "--setup_file": "./setup.py",
    "--accelerator": ACCELERATOR,
    "--max_units_per_batch": "16",
}


def job_args(argv: list[str]) -> list[str]:
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return list(argv) + [f"{k}={v}" for k, v in DEFAULTS.items() if k not in given]


def run(argv=None):
    from pipeline.run import run as run_pipeline
    return run_pipeline(job_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    from kepkreator.quiet import quiet_tensorflow_import
    quiet_tensorflow_import()
    from pipeline.run import main
    main(job_args(sys.argv[1:]))
