"""Run pytest under a second CPU kernel set, one below this machine's (issue 20): `make test-cpu-kinds`.

torch dispatches its CPU kernels by capability (AVX-512, AVX2, or the portable default), and MKL and oneDNN pick
their own code paths the same way. A tiny model trained with other kernels differs at the last digit, and its
trajectory can part after a few steps; a test that pins one machine's trajectory then fails on the next machine.
This reruns the given tests (``-m trajectory`` in CI) as a machine one kind below would run them:

    AVX-512 machine -> ATEN_CPU_CAPABILITY=avx2,    MKL_ENABLE_INSTRUCTIONS=AVX2,   ONEDNN_MAX_CPU_ISA=AVX2
    AVX2 machine    -> ATEN_CPU_CAPABILITY=default, MKL_ENABLE_INSTRUCTIONS=SSE4_2, ONEDNN_MAX_CPU_ISA=SSE41

Usage: python tests/second_cpu_kind.py [pytest arguments...]; on a machine with no kind below its own it says so
and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys

# this machine's torch capability -> the environment of the kind below it
BELOW = {
    "AVX512": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "AVX2": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def own_capability() -> str:
    """torch's capability on this machine, unaffected by an ATEN_CPU_CAPABILITY already set in this shell."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout.strip()


def main(args: list[str]) -> int:
    own = own_capability()
    below = BELOW.get(own)
    if below is None:
        print(f"second_cpu_kind: this machine's CPU capability is {own}; there is no kind below it to rerun under")
        return 0
    shown = " ".join(f"{k}={v}" for k, v in below.items())
    print(f"second_cpu_kind: this machine is {own}; rerunning pytest {' '.join(args)} under {shown}", flush=True)
    return subprocess.call([sys.executable, "-m", "pytest", *args], env=os.environ | below)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
