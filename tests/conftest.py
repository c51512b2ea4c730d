"""Shared fixtures: random-weight SAM checkpoints of real architectures, loaded through product code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from samgis.engine.registry import ModelSpec, SamArch, get_model_spec, register_model
from samgis.engine.backends.sam1 import SamEngine, build_sam

# Keep tests from touching the user's cache and from trying the network for weights; one cache per pytest-xdist
# worker, so two workers never write the same files.
os.environ.setdefault("SAMGIS_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "test"
                                              / os.environ.get("PYTEST_XDIST_WORKER", "main")))

#: Test modules that share the SAM 3 session case (GBs of RAM, ~1 min of CPU to build): pytest-xdist runs them
#: on one worker, so the case is built once and two never hold memory at once.
_SAM3_MODULES = ("test_backend_sam3", "test_sam3_")


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (`make test`), with every SAM 3 module in one scope. (Not `loadgroup` + `xdist_group`
    marks: pytest-xdist 3.8 tags grouped node ids by assigning `item._nodeid`, which pytest 9 no longer reads,
    so the groups are silently ignored.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return "sam3" if Path(module).stem.startswith(_SAM3_MODULES) else module

    return ModuleScheduling(config, log)


_sam3_cases: list = []  # the live `sam3_case` (at most one)


def pytest_collection_finish(session):
    """Note the last selected test that uses `sam3_case`: the case is dropped after it (see below)."""
    users = [item.nodeid for item in session.items if "sam3_case" in getattr(item, "fixturenames", ())]
    session.config._sam3_last_user = users[-1] if users else None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    if item.nodeid == getattr(item.config, "_sam3_last_user", None):
        while _sam3_cases:
            _sam3_cases.pop().release()


@pytest.fixture(scope="session")
def sam3_case():
    """One random-weight SAM 3 (real architecture) with our engine and the package's processor on it and one
    image encoded by both (`tests/support/sam3_case.py`), shared by every SAM 3 module of the session and
    released after the last test that uses it (~4 GB, ~1 min of CPU to build and encode)."""
    from tests.support.sam3_case import Sam3Case

    case = Sam3Case()
    _sam3_cases.append(case)
    yield case
    case.release()

TINY = register_model(ModelSpec(
    model_id="test_vit_tiny", backend="sam1",
    config=SamArch(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,)),
    description="random-weight tiny ViT for tests",
), replace=True)


def save_random_checkpoint(arch: SamArch, path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_sam(arch)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_random_checkpoint(TINY.arch, tmp_path_factory.mktemp("weights") / "tiny.pth")


@pytest.fixture(scope="session")
def tiny_engine(tiny_checkpoint) -> SamEngine:
    return SamEngine.from_spec(TINY, tiny_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory) -> Path:
    """Random weights of the real sam_vit_b architecture, saved in Meta's state-dict format."""
    return save_random_checkpoint(get_model_spec("sam_vit_b").arch,
                                  tmp_path_factory.mktemp("weights") / "sam_vit_b_random.pth", seed=1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def textured_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 RGB: smooth blobs + noise, so random-weight SAM gives non-trivial masks."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    for _ in range(6):
        cy, cx, rad = r.uniform(0, h), r.uniform(0, w), r.uniform(40, 200)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rad**2))
        img += blob[..., None] * r.uniform(0, 255, 3)
    img += r.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiles():
    """The default synthetic scene on a local HTTP tile server, shared by the end-to-end modules (tests that
    count its requests call `reset_counts()` first)."""
    from tests.support.scene import default_scene
    from tests.support.tileserver import SceneTileServer

    with SceneTileServer(default_scene()) as server:
        yield server
