"""Model registry: names, architectures and where the official weights live.

Meta's checkpoint file names carry the first six hex digits of the file's MD5 (`sam_vit_b_01ec64.pth`);
we keep the full digest and the byte size so a download is verified before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

META_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything"


@dataclass(frozen=True)
class SamArch:
    """Image-encoder hyper-parameters of a `segment_anything` ViT model."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    image_size: int = 1024


@dataclass(frozen=True)
class ModelSpec:
    """One named model: backend, architecture and its official weights."""

    model_id: str
    backend: str
    arch: SamArch
    filename: str | None = None
    url: str | None = None
    size_bytes: int | None = None
    md5: str | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)

    def public(self) -> dict:
        """What `/v1/models` shows: no local paths."""
        return {
            "id": self.model_id,
            "backend": self.backend,
            "description": self.description,
            "weights": {"file": self.filename, "url": self.url, "size_bytes": self.size_bytes, "md5": self.md5},
            "image_size": self.arch.image_size,
        }


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


def _meta(model_id: str, filename: str, size: int, md5: str, arch: SamArch, description: str) -> None:
    register_model(
        ModelSpec(
            model_id=model_id,
            backend="segment-anything",
            arch=arch,
            filename=filename,
            url=f"{META_BASE_URL}/{filename}",
            size_bytes=size,
            md5=md5,
            description=description,
        )
    )


_meta("sam_vit_b", "sam_vit_b_01ec64.pth", 375_042_383, "01ec64d29a2fca3f0661936605ae66f8",
      SamArch(768, 12, 12, (2, 5, 8, 11)), "SAM ViT-B (91M parameters), Meta AI")
_meta("sam_vit_l", "sam_vit_l_0b3195.pth", 1_249_524_607, "0b3195507c641ddb6910d2bb5adee89c",
      SamArch(1024, 24, 16, (5, 11, 17, 23)), "SAM ViT-L (308M parameters), Meta AI")
_meta("sam_vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879, "4b8939a88964f0f4ff5f5b2642c598a6",
      SamArch(1280, 32, 16, (7, 15, 23, 31)), "SAM ViT-H (636M parameters), Meta AI")

DEFAULT_MODEL = "sam_vit_b"
