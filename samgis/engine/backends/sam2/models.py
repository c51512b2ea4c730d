"""The four SAM 2.1 image models of Meta's `sam2` package: config inside the package, official checkpoint.

URLs: facebookresearch/sam2, `checkpoints/download_ckpts.sh` (commit 2b90b9f, Dec 2024; the `sam2==1.1.0`
sdist on PyPI ships the same `sam2/` sources): `SAM2p1_BASE_URL=https://dl.fbaipublicfiles.com/
segment_anything_2/092824` + `/sam2.1_hiera_{tiny,small,base_plus,large}.pt`. Configs: the package's
`configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml` (the names `sam2.build_sam.HF_MODEL_ID_TO_FILENAMES` pairs
with those checkpoints). Meta publishes neither file sizes nor hashes for these files, so `size` and
`sha256` stay None rather than being copied from an unofficial mirror.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECKPOINT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"


@dataclass(frozen=True)
class Sam2Model:
    """One SAM 2.1 model: `config` is a Hydra config name inside the `sam2` package."""

    model_id: str
    config: str
    url: str
    size: int | None = None
    sha256: str | None = None
    description: str = ""


def _model(model_id: str, cfg: str, description: str) -> Sam2Model:
    return Sam2Model(model_id=model_id, config=f"configs/sam2.1/sam2.1_hiera_{cfg}.yaml",
                     url=f"{CHECKPOINT_BASE_URL}/{model_id}.pt", description=description)


MODELS: dict[str, Sam2Model] = {m.model_id: m for m in (
    _model("sam2.1_hiera_tiny", "t", "SAM 2.1 Hiera-T (38.9M parameters)"),
    _model("sam2.1_hiera_small", "s", "SAM 2.1 Hiera-S (46M parameters)"),
    _model("sam2.1_hiera_base_plus", "b+", "SAM 2.1 Hiera-B+ (80.8M parameters)"),
    _model("sam2.1_hiera_large", "l", "SAM 2.1 Hiera-L (224.4M parameters)"),
)}
