"""The Dataflow GPU job, built offline with --dry_run=True (nothing is staged or submitted),
and the package its workers install."""
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from jobs.dataflow.gpu_job import ACCELERATOR, run
from tests.pipeline_fixtures import make_tiny_bundles, write_spec

HINT = "beam:resources:accelerator:v1"


def test_accelerator_hint_sits_on_the_model_steps_only(tmp_path):
    gen, val = make_tiny_bundles(tmp_path)
    spec = write_spec(tmp_path / "spec.yaml", class_set="digits", generator=str(gen),
                      validator=str(val), counts={"per_class": 5})
    result = run(["--spec", str(spec), "--out", "gs://kepkreator-test/out",
                  "--project", "kepkreator-test", "--region", "us-central1",
                  "--temp_location", "gs://kepkreator-test/tmp", "--dry_run=True",
                  "--sdk_location=container"])
    runner = result.pipeline.runner
    proto = runner.proto_pipeline
    hinted, inference = set(), set()
    for transform in proto.components.transforms.values():
        name = transform.unique_name
        env = proto.components.environments.get(transform.environment_id)
        if env is not None and env.resource_hints.get(HINT) == ACCELERATOR.encode():
            hinted.add(name)
        if name.endswith("BeamML_RunInference"):
            inference.add(name)
    assert inference and inference <= hinted  # every model step runs on a GPU worker
    assert all(any(step in n for step in ("/Generate", "/Score", "/Judge")) for n in hinted), \
        sorted(hinted)
    assert any(n.endswith("Round0/Generate") for n in hinted)
    assert not any("Filter" in n or "Sinks" in n or "Metrics" in n for n in hinted)
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    service = result.pipeline.options.view_as(GoogleCloudOptions).dataflow_service_options
    assert f"worker_accelerator={ACCELERATOR}" in service


def test_the_package_staged_for_workers_holds_every_module_and_shipped_model(tmp_path):
    """Workers install what Beam's stager builds from setup.py (--setup_file): a module or a
    shipped model missing from it would fail only on Dataflow, after the job was submitted."""
    from apache_beam.runners.portability.stager import Stager
    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # a build writes build/ and *.egg-info beside setup.py
    source.mkdir()
    shutil.copy(root / "setup.py", source)
    for package in ("kepkreator", "pipeline"):
        shutil.copytree(root / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wanted = {path.relative_to(source).as_posix()
              for package in ("kepkreator", "pipeline") for path in (source / package).rglob("*")
              if path.suffix in (".py", ".keras", ".json", ".npz")}
    assert {"kepkreator/assets/digits/generator/model.keras", "pipeline/run.py"} <= wanted

    sdist = Stager._build_setup_package(str(source / "setup.py"), str(tmp_path / "sdist"))
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert not wanted - in_sdist, sorted(wanted - in_sdist)

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"), sdist],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("kepkreator-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert not wanted - in_wheel, sorted(wanted - in_wheel)
