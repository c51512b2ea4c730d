"""Weights: resolution order, download with verification, clear errors — over a real local HTTP server."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from samgis.engine.backends.sam1 import SamEngine
from samgis.engine.registry import WeightFile, get_model_spec, model_ids
from samgis.engine.weights import download, resolve_weights
from samgis.errors import WeightsUnavailable
from tests.conftest import TINY


@pytest.fixture
def file_server():
    files: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files, hits
    server.shutdown()


def spec_for(data: bytes, url: str, sha256: bool = False):
    digest = {"sha256": hashlib.sha256(data).hexdigest()} if sha256 else {"md5": hashlib.md5(data).hexdigest()}
    return replace(TINY, files=(WeightFile("tiny_abc123.pth", url, len(data), **digest),))


def test_registry_has_meta_models_with_integrity_data():
    assert {"sam_vit_b", "sam_vit_l", "sam_vit_h"} <= set(model_ids())
    for mid in ("sam_vit_b", "sam_vit_l", "sam_vit_h"):
        (wf,) = get_model_spec(mid).files
        assert wf.url.endswith(wf.name)
        assert wf.md5.startswith(wf.name.rsplit("_", 1)[1].split(".")[0])  # Meta's md5 prefix
        assert wf.size_bytes > 100_000_000
    with pytest.raises(KeyError, match="known models"):
        get_model_spec("sam_vit_x")


def test_download_verifies_and_loads(file_server, tiny_checkpoint, tmp_path):
    base, files, hits = file_server
    data = tiny_checkpoint.read_bytes()
    files["/w/tiny.pth"] = data
    spec = spec_for(data, base + "/w/tiny.pth")
    path = resolve_weights(spec, cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "tiny_abc123.pth" and path.read_bytes() == data
    assert not list(tmp_path.glob("*.part"))
    # second call uses the cache, no network
    assert resolve_weights(spec, cache_dir=tmp_path, progress=False) == path
    assert hits == ["/w/tiny.pth"]
    engine = SamEngine.from_spec(spec, path, device="cpu")
    emb = engine.embed(np.zeros((32, 32, 3), np.uint8))
    assert tuple(emb.features.shape) == (1, 256, 64, 64)


def test_corrupt_download_is_rejected_and_removed(file_server, tmp_path):
    base, files, _ = file_server
    good = b"x" * 1000
    files["/w/bad.pth"] = b"y" * 1000  # right size, wrong content
    spec = spec_for(good, base + "/w/bad.pth")
    with pytest.raises(WeightsUnavailable, match="MD5"):
        download(spec, tmp_path / "w.pth", progress=False)
    assert list(tmp_path.iterdir()) == []
    spec = spec_for(good, base + "/w/bad.pth", sha256=True)
    with pytest.raises(WeightsUnavailable, match="SHA256"):
        download(spec, tmp_path / "w.pth", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_message_says_how_to_provide_them(file_server, tmp_path):
    base, _, _ = file_server
    spec = spec_for(b"abc", base + "/nothing.pth")
    with pytest.raises(WeightsUnavailable) as err:
        resolve_weights(spec, cache_dir=tmp_path, progress=False)
    msg = err.value.message
    assert "404" in msg and "--checkpoint" in msg and "SAMGIS_CHECKPOINT" in msg and "fetch-weights" in msg
    with pytest.raises(WeightsUnavailable, match="downloads are off"):
        resolve_weights(spec, cache_dir=tmp_path, allow_download=False)
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        resolve_weights(spec, tmp_path / "nope.pth", cache_dir=tmp_path)


def test_unreachable_host_is_a_clear_error(tmp_path):
    spec = spec_for(b"abc", "http://127.0.0.1:9/never.pth")  # discard port: connection refused
    with pytest.raises(WeightsUnavailable, match="download failed"):
        resolve_weights(spec, cache_dir=tmp_path, progress=False)


def test_truncated_cached_file_is_reported(tmp_path):
    spec = spec_for(b"abcdef", "http://127.0.0.1:9/x.pth")
    (tmp_path / spec.files[0].name).write_bytes(b"abc")
    with pytest.raises(WeightsUnavailable, match="expected 6"):
        resolve_weights(spec, cache_dir=tmp_path)


def test_checkpoint_of_wrong_architecture_is_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="does not match sam_vit_b"):
        SamEngine.from_spec(get_model_spec("sam_vit_b"), tiny_checkpoint, device="cpu")


def test_storage_uri_local_paths(tmp_path):
    from samgis.engine.weights import storage_checkpoint

    spec = get_model_spec("sam_vit_b")
    assert storage_checkpoint(spec, None) is None
    assert storage_checkpoint(spec, "gs://bucket/model") is None  # remote: left to the cache dir / download
    assert storage_checkpoint(spec, str(tmp_path)) is None  # empty folder
    one = tmp_path / "weights.pth"
    one.write_bytes(b"x")
    assert storage_checkpoint(spec, str(tmp_path)) == one  # the only .pth
    assert storage_checkpoint(spec, f"file://{one}") == one
    (tmp_path / "other.pth").write_bytes(b"y")
    with pytest.raises(WeightsUnavailable, match="several checkpoint files"):
        storage_checkpoint(spec, str(tmp_path))
    official = tmp_path / spec.files[0].name
    official.write_bytes(b"z")
    assert storage_checkpoint(spec, str(tmp_path)) == official  # the official name wins
