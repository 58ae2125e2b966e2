"""The Ray executor: every arm a Ray task on a local 2-CPU instance, the same answers as locally."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.results import read_results

from .conftest import make_suite

ARMS = ("  zero-shot: {type: prompt, shots: 0, resources: {cpus: 1}}\n"
        "  few-shot: {type: prompt, shots: 2, resources: {cpus: 1}}\n"
        "  lora: {type: lora, max_steps: 2, batch_size: 4, learning_rate: 1e-2, resources: {cpus: 1, memory_gb: 1}}\n")


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _samples(out, arm):
    return [json.loads(line) for line in (out / "samples" / f"{arm}.jsonl").read_text().splitlines()]


def test_ray_executor_gives_the_local_executors_results(tmp_path, tiny_model_dir, local_ray):
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=ARMS)
    local, remote = tmp_path / "local", tmp_path / "ray"
    first = CliRunner().invoke(main, ["compare", str(suite), "--out", str(local), "--no-cache"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, ["compare", str(suite), "--out", str(remote), "--no-cache",
                                       "--executor", "ray"])
    assert second.exit_code == 0, second.output
    assert "ray: submitted lora (cpus=1, memory_gb=1)" in second.output
    assert "finished (3/3)" in second.output

    a, b = read_results(local), read_results(remote)
    assert list(a.arms) == list(b.arms) == ["zero-shot", "few-shot", "lora"]
    for name in a.arms:
        assert b.arms[name].status == "ok" and not b.arms[name].cached, b.arms[name].error
        assert {m: v.model_dump() for m, v in a.arms[name].metrics.items()} == \
               {m: v.model_dump() for m, v in b.arms[name].metrics.items()}, name
        assert _samples(local, name) == _samples(remote, name)
        assert a.arms[name].loss_curve == b.arms[name].loss_curve
    assert a.decision.verdict == b.decision.verdict and a.decision.reasons == b.decision.reasons
    assert (remote / b.arms["lora"].artifact).is_dir()


def test_executor_errors_are_usage_errors(tmp_path, tiny_model_dir):
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=ARMS)
    unknown = CliRunner().invoke(main, ["compare", str(suite), "--executor", "slurm"])
    assert unknown.exit_code == 2 and "'slurm' is not one of 'local', 'ray'" in unknown.output
    stray = CliRunner().invoke(main, ["compare", str(suite), "--address", "ray://head:10001"])
    assert stray.exit_code == 2 and "--address is for --executor ray" in stray.output


def test_ray_missing_says_what_to_install(tmp_path, tiny_model_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)      # `import ray` raises ImportError
    suite = make_suite(tmp_path / "suite", tiny_model_dir, backends=ARMS)
    result = CliRunner().invoke(main, ["compare", str(suite), "--out", str(tmp_path / "run"), "--executor", "ray"])
    assert result.exit_code == 2
    assert "--executor ray needs Ray, which is not installed" in result.output
    assert "pip install 'harness[ray]'" in result.output
