"""Model registry: each model's backend, its configuration and its official weight files.

Where the figures come from (see README "Models"):

- SAM 1 (`sam_vit_b/l/h`): Meta's checkpoints at dl.fbaipublicfiles.com/segment_anything. The file names
  carry the first six hex digits of the file's MD5 (`sam_vit_b_01ec64.pth`); we keep the full MD5 and
  the byte size, so a download is verified before use.
- SAM 2.1 (`sam2.1_hiera_*`): the URLs of the sam2 repository's `checkpoints/download_ckpts.sh`
  (`samgis.engine.backends.sam2.models`). Meta publishes no sizes or hashes for them, so a download is
  checked only for completeness (Content-Length) and loading checks every tensor's name and shape.
- SAM 3 (`sam3`): `sam3.pt` of the gated Hugging Face repo facebook/sam3
  (`samgis.engine.backends.sam3.models`); downloads send the token in `HF_TOKEN`. No public size or hash.
- ONNX pairs: files named by the pair's manifest (sha256 and size per file), given as a folder.

Plugins and tests add their own models with `register_model`; a models file (`Settings.models_file`)
adds entries at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

META_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything"


@dataclass(frozen=True)
class SamArch:
    """Image-encoder hyper-parameters of a `segment_anything` ViT model (the `sam1` backend's config)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    image_size: int = 1024


@dataclass(frozen=True)
class WeightFile:
    """One file a model needs: name in the weights cache, official URL, and what verifies it.

    `md5` / `sha256`: full hex digests (either may be unknown); `size_bytes`: exact size.
    """

    name: str
    url: str | None = None
    size_bytes: int | None = None
    md5: str | None = None
    sha256: str | None = None

    def public(self) -> dict:
        return {"file": self.name, "url": self.url, "size_bytes": self.size_bytes, "md5": self.md5,
                "sha256": self.sha256}


@dataclass(frozen=True)
class ModelSpec:
    """One named model: which backend builds it, that backend's config, and its weight files.

    `config`: backend-specific and picklable (`SamArch` for sam1, a config name for sam2, …).
    `files`: empty when the weights are always given by path (e.g. ONNX pairs by folder).
    """

    model_id: str
    backend: str
    config: Any = None
    files: tuple[WeightFile, ...] = ()
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def arch(self) -> Any:
        """The sam1 backend's name for `config`."""
        return self.config

    def public(self) -> dict:
        """What `/v1/models` and `samgis models` show: no local paths."""
        return {"id": self.model_id, "backend": self.backend, "description": self.description,
                "weights": [f.public() for f in self.files]}

    @property
    def size_bytes(self) -> int | None:
        sizes = [f.size_bytes for f in self.files]
        return sum(sizes) if sizes and None not in sizes else None


_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Add a model to the registry (plugins and tests register their own architectures)."""
    if spec.model_id in _MODELS and not replace:
        raise ValueError(f"model {spec.model_id!r} is already registered")
    _MODELS[spec.model_id] = spec
    return spec


def get_model_spec(model_id: str) -> ModelSpec:
    """The spec of a registered model; `KeyError` with the known names otherwise."""
    try:
        return _MODELS[model_id]
    except KeyError:
        raise KeyError(f"unknown model {model_id!r}; known models: {', '.join(sorted(_MODELS))}") from None


def model_ids() -> list[str]:
    return sorted(_MODELS)


def load_models_file(path) -> list[ModelSpec]:
    """Register the models of a JSON models file (`Settings.models_file`), replacing same-named entries:
    `{"id": {"backend": "onnx", "path": "/models/mobile_sam", "description": "…", "options": {…}}}`.

    `path`: the weights (file or folder) the model loads from unless `--checkpoint` names others; `options`:
    the backend's config (for onnx: `threads`, `quantized`, `verify`). Raises `ValueError` naming the entry.
    """
    import json
    from pathlib import Path

    p = Path(path).expanduser()
    try:
        entries = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"models file {p}: {exc}") from None
    if not isinstance(entries, dict):
        raise ValueError(f"models file {p}: expected an object of model id → entry")
    specs = []
    for model_id, e in entries.items():
        if not isinstance(e, dict) or not isinstance(e.get("backend"), str) or not isinstance(e.get("path"), str):
            raise ValueError(f"models file {p}, entry {model_id!r}: needs \"backend\" and \"path\" strings")
        weights = Path(e["path"]).expanduser()
        if not weights.exists():
            raise ValueError(f"models file {p}, entry {model_id!r}: {weights} does not exist")
        specs.append(register_model(ModelSpec(model_id, e["backend"], config=e.get("options"),
                                              description=str(e.get("description", "")),
                                              extra={"path": str(weights)}), replace=True))
    return specs


def _meta(model_id: str, filename: str, size: int, md5: str, arch: SamArch, description: str) -> None:
    register_model(ModelSpec(
        model_id=model_id, backend="sam1", config=arch,
        files=(WeightFile(filename, f"{META_BASE_URL}/{filename}", size, md5=md5),),
        description=description,
    ))


_meta("sam_vit_b", "sam_vit_b_01ec64.pth", 375_042_383, "01ec64d29a2fca3f0661936605ae66f8",
      SamArch(768, 12, 12, (2, 5, 8, 11)), "SAM ViT-B (91M parameters), Meta AI")
_meta("sam_vit_l", "sam_vit_l_0b3195.pth", 1_249_524_607, "0b3195507c641ddb6910d2bb5adee89c",
      SamArch(1024, 24, 16, (5, 11, 17, 23)), "SAM ViT-L (308M parameters), Meta AI")
_meta("sam_vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879, "4b8939a88964f0f4ff5f5b2642c598a6",
      SamArch(1280, 32, 16, (7, 15, 23, 31)), "SAM ViT-H (636M parameters), Meta AI")

def _sam2() -> None:
    from samgis.engine.backends.sam2.models import MODELS  # the table only: no torch, no sam2 import

    for m in MODELS.values():
        register_model(ModelSpec(
            model_id=m.model_id, backend="sam2", config=m.config,
            files=(WeightFile(m.url.rsplit("/", 1)[1], m.url, m.size, sha256=m.sha256),),
            description=m.description + ", Meta AI",
        ))


_sam2()


def _sam3() -> None:
    from samgis.engine.backends.sam3.models import HF_PAGE, MODELS, TOKEN_ENV  # the table only: no torch, no sam3

    for m in MODELS.values():
        register_model(ModelSpec(
            model_id=m.model_id, backend="sam3", config=None,
            files=(WeightFile(m.url.rsplit("/", 1)[1], m.url, m.size, sha256=m.sha256),),
            description=m.description, extra={"token_env": TOKEN_ENV, "gated": True, "gated_page": HF_PAGE},
        ))


_sam3()
register_model(ModelSpec("onnx", backend="onnx", description="an ONNX Runtime encoder/decoder pair given with "
                         "--checkpoint DIR (ours from `samgis export-onnx`, or samexporter's)"))

DEFAULT_MODEL = "sam2.1_hiera_tiny"
"""The default: on a CPU its encoder takes about a third of sam_vit_b's time, so a cold window answers ~3× sooner
(bench/bench_models.py; README "Models"). `--model sam_vit_b` keeps SAM 1."""
