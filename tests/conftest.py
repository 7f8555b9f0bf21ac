"""pytest configuration shared by all tests: hypothesis's budget and the one Ray cluster."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Modest example counts keep the whole suite within its time budget on 2 cores.
settings.register_profile("ci", max_examples=25, deadline=None)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def ray_cluster():
    """The test session's one local Ray cluster (2 CPUs), started by the first test that needs
    it and stopped at the end; its workers import splitgrad from this source tree."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=100 * 1024 * 1024,
            runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}},
        )
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_places(ray_cluster):
    """Two places on the session's Ray cluster, for one test module."""
    from splitgrad.split import RayPlaces

    where = RayPlaces(2, timeout=60)
    yield where
    where.close()
