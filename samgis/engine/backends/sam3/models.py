"""SAM 3's registry entry: one image model, Meta's `facebook/sam3` Hugging Face repository (gated).

Facts: the `sam3` package (0.1.4; facebookresearch/sam3 @ 99d02f2, `sam3/model_builder.py`
`download_ckpt_from_hf`) reads the checkpoint `sam3.pt` from the Hugging Face repo
`facebook/sam3`; the repo is gated: a download needs an account that was granted access on the model's page
and a token (`HF_TOKEN`). The official file's size and hash are published only on the gated page itself, and
we could not find them in any public source, so `size` and `sha256` stay None (as for SAM 2.1): a download is
checked for completeness (Content-Length) and loading checks every tensor's name and shape (exact load).

Importing this module imports neither torch nor `sam3`.
"""

from __future__ import annotations

from dataclasses import dataclass

HF_REPO = "facebook/sam3"
HF_PAGE = f"https://huggingface.co/{HF_REPO}"
CHECKPOINT_NAME = "sam3.pt"
CHECKPOINT_URL = f"{HF_PAGE}/resolve/main/{CHECKPOINT_NAME}"  # Hugging Face's file URL form
TOKEN_ENV = "HF_TOKEN"  # the variable huggingface_hub reads too


@dataclass(frozen=True)
class Sam3Model:
    model_id: str
    url: str
    size: int | None = None
    sha256: str | None = None
    description: str = ""


MODELS: dict[str, Sam3Model] = {
    "sam3": Sam3Model("sam3", CHECKPOINT_URL,
                      description="SAM 3 (848M parameters: concept prompts by text and exemplar boxes, "
                                  "point and box prompts), Meta AI; gated on Hugging Face"),
}

