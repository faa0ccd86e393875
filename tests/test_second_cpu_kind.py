"""The CI guard of issue 20: `make test-cpu-kinds` really reruns the trajectory tests with other CPU kernels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from second_cpu_kind import BELOW, own_capability

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "second_cpu_kind.py"
# the torch capability one kind below each, as torch reports it under BELOW's environment
EXPECTED = {"AVX512": "AVX2", "AVX2": "DEFAULT"}


def test_the_rerun_runs_pytest_one_kind_below_this_machine(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("import os\nimport torch\n\n\ndef test_kind():\n"
                     "    print('KIND', torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_ENABLE_INSTRUCTIONS'),"
                     " os.environ.get('ONEDNN_MAX_CPU_ISA'))\n")
    out = subprocess.run([sys.executable, str(SCRIPT), "-q", "-s", "-p", "no:cacheprovider", str(probe)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    own = own_capability()
    if own in BELOW:
        below = BELOW[own]
        assert f"KIND {EXPECTED[own]} {below['MKL_ENABLE_INSTRUCTIONS']} {below['ONEDNN_MAX_CPU_ISA']}" in out.stdout, out.stdout
        assert "1 passed" in out.stdout
    else:
        assert "no kind below it" in out.stdout and "KIND" not in out.stdout


def test_a_failing_test_fails_the_rerun(tmp_path):
    (tmp_path / "test_fails.py").write_text("def test_no():\n    assert False\n")
    out = subprocess.run([sys.executable, str(SCRIPT), "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == (1 if own_capability() in BELOW else 0), out.stdout + out.stderr


def test_the_rerun_covers_the_tests_that_follow_a_trajectory():
    """The tests that assert where training goes carry the marker, so CI reruns them (a lost marker fails here)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "trajectory", "-p", "no:cacheprovider",
                          "tests/test_rollback.py", "tests/test_learning.py", "tests/test_tiny_model.py"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    collected = {line.split("::")[-1] for line in out.stdout.splitlines() if "::" in line}
    assert collected == {
        "test_a_real_collapse_rolls_back_to_a_healthy_checkpoint_and_recovers",
        "test_a_run_killed_after_a_rollback_resumes_with_its_lr_kl_seed_and_count",
        "test_after_max_times_rollbacks_the_next_alarm_stops",
        "test_grpo_learns_a_single_prompt",
        "test_default_run_lifts_validation_accuracy",
        "test_warm_started_policy_follows_the_format_and_beats_chance",
    }, out.stdout + out.stderr
