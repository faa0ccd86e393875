"""Shared fixtures: an isolated model cache (built once per session), offline Hugging Face."""

from __future__ import annotations

import os

import pytest

# Tests never touch the network: the tiny model and digits are local by construction.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Every test session builds the tiny model itself (once), in a private cache."""
    cache = os.environ.get("MSSR_TEST_CACHE") or str(tmp_path_factory.mktemp("mssr_cache"))
    os.environ["MSSR_CACHE"] = cache
    return cache


@pytest.fixture
def private_datasets_cache(tmp_path, monkeypatch):
    """``datasets``' cache of a test's small files in its own tmp folder, not the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


@pytest.fixture(scope="session")
def base_cfg():
    from mssr_cli.config.compose import compose

    return compose([])


@pytest.fixture(scope="session")
def tiny_policy_path(base_cfg):
    """Path of the built (warm-started) tiny model in the session cache."""
    from mssr_cli.models.loading import resolve_model_path

    return resolve_model_path(base_cfg.model, base_cfg.data)


@pytest.fixture(scope="session")
def one_process_run(tmp_path_factory, tiny_policy_path):
    """The small run of distributed_runs.COMMON trained by one process: what test_multiprocess (2 processes)
    and test_multinode (2 machines) compare against, trained once per session."""
    from distributed_runs import COMMON, mssr

    run = tmp_path_factory.mktemp("one_process") / "run"
    single = mssr("train", *COMMON, "--run-dir", str(run))
    assert single.returncode == 0, single.stderr[-3000:]
    return run
