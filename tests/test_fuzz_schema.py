"""The OpenAPI schema tells the truth: Schemathesis (pinned in the `test` extra) generates ≥ 2,000 requests over
every operation of a live server (uvicorn on 127.0.0.1, the colour engine, the scene tile server with its
failing sources) and every answer must be documented (status, content type, body, headers), no schema-valid
request may be refused except by a documented 4xx, no invalid one accepted, no answer may be a 500, and
methods the schema does not declare get 405 with `Allow`. Configuration: tests/support/schemathesis.toml."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from api.app import create_app
from samgis.engine.protocol import Capabilities
from samgis.settings import Settings
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine

CONFIG = Path(__file__).resolve().parent / "support" / "schemathesis.toml"
MIN_CASES = 2000
EXAMPLES_PER_OPERATION = 60
SEED = 13


@pytest.fixture(scope="module")
def fuzz_server(tiles, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    providers = tiles.providers()
    providers["OpenStreetMap.Mapnik"] = providers["Scene"]  # the requests' default source, on the scene
    (tmp / "providers.json").write_text(json.dumps(providers), encoding="utf-8")
    settings = Settings(providers=tmp / "providers.json", cache_dir=tmp / "cache", builtin_sources=False,
                        tile_timeout_s=0.3, tile_retries=0, deadline_s=5.0, everything_deadline_s=5.0,
                        max_grid_points=16, max_points_per_side=8, max_body_bytes=1_000_000)
    # concept capabilities too, so text/exemplar prompts reach Engine.find and their answers are checked
    engine = ColourRegionEngine(capabilities=Capabilities(text=True, exemplars=True))
    with LiveServer(create_app(settings, engine=engine)) as server:
        yield server


def schemathesis_cli() -> list[str]:
    exe = Path(sys.executable).parent / "schemathesis"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    return [found]


@pytest.mark.slow
def test_schemathesis_finds_no_failure_in_2000_cases(fuzz_server, tmp_path):
    report = tmp_path / "schemathesis.json"
    cmd = [*schemathesis_cli(), "--config-file", str(CONFIG), "run", f"{fuzz_server.url}/openapi.json",
           "--checks", "all", "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(SEED),
           "--workers", "2", "--request-timeout", "20", "--no-shrink",
           "--report", "json", "--report-json-path", str(report)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    out = run.stdout[-12000:] + run.stderr[-3000:]
    assert report.exists(), out
    summary = json.loads(report.read_text(encoding="utf-8"))
    assert summary["complete"], out
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 12, summary["operations"]
    assert summary["failures"] == [], out
    assert summary["errors"] == [], out
    assert summary["test_cases"]["generated"] >= MIN_CASES, summary["test_cases"]
    assert run.returncode == 0, out
