"""The Dataflow GPU job, built offline with --dry_run=True (nothing is staged or submitted)."""
from jobs.dataflow.gpu_job import ACCELERATOR, run
from tests.pipeline_fixtures import make_tiny_bundles, write_spec

HINT = "beam:resources:accelerator:v1"


def test_accelerator_hint_sits_on_generate_and_score_only(tmp_path):
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
    assert all("/Generate" in n or "/Score" in n for n in hinted), sorted(hinted)
    assert any(n.endswith("Round0/Generate") for n in hinted)
    assert not any("Filter" in n or "Sinks" in n or "Metrics" in n for n in hinted)
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    service = result.pipeline.options.view_as(GoogleCloudOptions).dataflow_service_options
    assert f"worker_accelerator={ACCELERATOR}" in service
