"""The manifest of an exported encoder/decoder pair (`manifest.json` beside the two `.onnx` files).

Written by `samgis.engine.backends.onnx.export`, read by `samgis.engine.backends.onnx.engine.load`. It says
what the pair is (model id, family, opset, quantization), how images must be prepared for the encoder
(input size, resize rule, normalisation, layout), what the decoder can do (capabilities) and, per file,
its byte size and SHA-256, checked on load so a truncated or edited file is refused before it runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST_NAME = "manifest.json"
FORMAT = "samgis-onnx-pair/1"


class ManifestError(ValueError):
    """The manifest is missing, unreadable, or does not match the files beside it."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> dict:
    """`{"sha256", "size"}` of one file."""
    return {"sha256": file_sha256(path), "size": path.stat().st_size}


def write_manifest(folder: Path, manifest: dict) -> Path:
    """Add the `files` entries (size, SHA-256 of every file `manifest` names) and write `manifest.json`."""
    names = [manifest["encoder"]["file"], manifest["decoder"]["file"], *manifest.get("extra_files", [])]
    manifest = {**manifest, "format": FORMAT, "files": {n: file_entry(folder / n) for n in names}}
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(folder: Path, verify: bool = True) -> dict:
    """The manifest in `folder`, its files checked (size, then SHA-256) when `verify`.

    Raises `ManifestError` naming the file and what differs.
    """
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ManifestError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    for key in ("model_id", "family", "encoder", "decoder", "files", "input"):
        if key not in manifest:
            raise ManifestError(f"{path}: no {key!r}")
    for role in ("encoder", "decoder"):
        if manifest[role]["file"] not in manifest["files"]:
            raise ManifestError(f"{path}: the {role} file {manifest[role]['file']!r} has no hash")
    if verify:
        for name, want in manifest["files"].items():
            f = folder / name
            if not f.is_file():
                raise ManifestError(f"{f} is listed in {path} but missing")
            size = f.stat().st_size
            if size != want["size"]:
                raise ManifestError(f"{f} has {size} bytes, the manifest says {want['size']}: "
                                    "the file was changed or is incomplete; export the pair again")
            digest = file_sha256(f)
            if digest != want["sha256"]:
                raise ManifestError(f"{f}: SHA-256 {digest[:16]}… does not match the manifest's "
                                    f"{want['sha256'][:16]}…: the file was changed; export the pair again")
    return manifest
