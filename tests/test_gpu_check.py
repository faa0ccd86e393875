"""bench/gpu_check.py, the one command for a GPU machine, kept from rotting on CPU.

The whole check runs here at test sizes (a small Qwen2.5-VL under the 3B's Hub id, 2 steps)
with every package the GPU machine lacks and the carried wheels do not bring hidden, so a new
import on these paths fails here first. What only CUDA measures is reported as skipped.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402

SECTIONS = {"environment", "bf16_training", "eval", "step_time", "memory"}
CPU_SIZES = ["--steps", "2", "--rollouts", "8", "--algos", "mssr", "--train-override", "train.eval_every=0",
             "--train-override", "algo.tracker.warm_start=false", "--eval-limit", "4", "--dims", "small",
             "--real-steps", "2", "--real-rounds", "1", "--real-rollouts", "8", "--real-micro", "4", "--completion", "8",
             "--pixels", "12544", "--real-override", "model.dtype=float32", "--simulate-gpu-packages"]
MARKER_ENV = {"python_version": gpu_check.GPU_PYTHON, "python_full_version": gpu_check.GPU_PYTHON + ".3",
              "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def _requirements(dist: str) -> set[str]:
    """What ``dist`` (as installed here) needs on the GPU machine's Python: names, extras left out."""
    from packaging.requirements import Requirement

    needs = set()
    for line in metadata.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(MARKER_ENV):
            needs.add(gpu_check.canonical(req.name))
    return needs


@pytest.mark.slow
def test_the_whole_check_runs_on_cpu_at_test_sizes(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(out), "--work", str(work),
                           *CPU_SIZES], capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    sections = results["sections"]
    assert set(sections) == SECTIONS
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(SECTIONS, "PASS")
    assert results["passed"] is True and not work.exists()  # scratch removed: 7.5 GB at 3B
    for name in SECTIONS:
        assert f"PASS {name}:" in proc.stdout
    cuda = results["cuda"]

    env = sections["environment"]
    assert env["versions"]["trl"] == gpu_check.GPU_WHEELS["trl"] and env["math_verify_reward"] == 1.0
    assert env["versions"]["wandb"] is None  # hidden as on the GPU machine: the simulation was on

    bf16 = sections["bf16_training"]
    for algo in ("mssr",):  # one algorithm here (each run costs a process start); the GPU run takes all three
        run = bf16["algos"][algo]
        assert run["exit"] == 0 and run["steps"] == 2 and all(math.isfinite(x) for x in run["losses"])
        assert any(k.startswith("grad:") for k in run["observed"]["forwards"])  # the dtype probe saw the loss forwards
        # every child reports what it imported: the check's paths go through the carried packages
        assert {"trl", "datasets", "hydra-core", "omegaconf"} <= set(run["observed"]["distributions"])
    assert sections["eval"]["n"] == 4 and "lm-eval" in sections["eval"]["imported"]

    step = sections["step_time"]
    assert step["mssr_over_grpo"] > 0 and all(r["steps"] == 2 for runs in step["runs"].values() for r in runs)
    memory = sections["memory"]
    for algo in ("grpo", "mssr"):
        estimate = memory[algo]["estimate_gb"]
        assert set(estimate) == set(gpu_check.MEMORY_TERMS) and estimate["total"] > 1  # the 3B preset's sizes
    if not cuda:
        assert "bf16 (no CUDA: trained in fp32)" in bf16["skipped"]
        assert "grpo measurement (no CUDA)" in memory["skipped"]
    assert (out / "children.log").stat().st_size > 0 and (out / "gpu_check.log").read_text().count("PASS") >= 6


def _check(tmp_path):
    return gpu_check.Check(gpu_check.parse_args(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]))


def test_a_section_that_raises_or_checks_nothing_fails(tmp_path):
    check = _check(tmp_path)

    def broken(result):
        result["checks"]["first"] = True
        raise RuntimeError("boom")

    check.section("broken", "broken", broken)
    check.section("empty", "empty", lambda result: None)
    check.section("fine", "fine", lambda result: result["checks"].update(ok=True))
    sections = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["sections"]
    assert sections["broken"]["status"] == "FAIL" and "boom" in sections["broken"]["error"]
    assert sections["empty"]["status"] == "FAIL"  # a section that checked nothing cannot pass
    assert sections["fine"]["status"] == "PASS"


def test_the_memory_parser_reads_the_dry_runs_plan():
    from mssr_cli.config.compose import compose
    from mssr_cli.training.plan import describe_plan

    plan = "\n".join(describe_plan(compose(["model=qwen25vl-3b", "train.micro_batch_size=8", "launcher=none"])))
    estimate = gpu_check.parse_memory_estimate(plan)
    assert set(estimate) == set(gpu_check.MEMORY_TERMS)
    assert estimate["total"] == pytest.approx(sum(v for k, v in estimate.items() if k != "total"), abs=0.35)


def test_carried_wheels_are_pinned_to_the_versions_tested_here():
    for name, version in gpu_check.GPU_WHEELS.items():
        if name in gpu_check.BUILD_ONLY:
            continue
        assert metadata.version(name) == version, f"{name}: GPU_WHEELS pins {version}, here {metadata.version(name)}"
    for name in ("trl", "hydra-core", "omegaconf", "antlr4-python3-runtime", "datasets", "lm-eval", "math-verify"):
        assert name in gpu_check.GPU_WHEELS


def test_carried_wheels_bring_everything_the_gpu_machine_lacks():
    """Every requirement of mssr and of each carried package is on the GPU machine, carried, or not needed."""
    there = {gpu_check.canonical(n) for n in gpu_check.GPU_MACHINE_PACKAGES}
    carried = {gpu_check.canonical(n) for n in gpu_check.GPU_WHEELS}
    assert carried.isdisjoint(there)  # carry only what is missing: two versions would stop the install
    missing = _requirements("mssr-cli") - there - carried - set(gpu_check.NOT_CARRIED)
    assert not missing, f"mssr-cli needs {missing}: add them to GPU_WHEELS (or NOT_CARRIED, with why)"
    for name in carried - gpu_check.BUILD_ONLY:
        missing = _requirements(name) - there - carried
        assert not missing, f"{name} needs {missing}, neither on the GPU machine nor in GPU_WHEELS"


def test_install_and_download_commands_cover_every_pin():
    pins = [f"{n}=={v}" for n, v in gpu_check.GPU_WHEELS.items()]
    wheels, project = gpu_check.install_commands(Path("gpu_wheels"))
    assert wheels[-len(pins):] == pins and {"--no-index", "--no-deps", "--find-links"} <= set(wheels)
    assert project[-2:] == ["-e", str(ROOT)] and "--no-build-isolation" in project and "--no-index" in project
    download, build = gpu_check.download_commands(Path("gpu_wheels"))
    assert sorted(download[download.index("gpu_wheels") + 1:] + build[build.index("gpu_wheels") + 1:]) == sorted(pins)
    assert download[download.index("--python-version") + 1] == gpu_check.GPU_PYTHON
    assert gpu_check.wheel_fits_gpu_machine("multiprocess-0.70.19-py312-none-any.whl")
    assert gpu_check.wheel_fits_gpu_machine("defusedxml-0.7.1-py2.py3-none-any.whl")
    assert not gpu_check.wheel_fits_gpu_machine("pydantic_core-2.50.5-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert not gpu_check.wheel_fits_gpu_machine("pyarrow-21.0.0-cp312-cp312-macosx_12_0_arm64.whl")
