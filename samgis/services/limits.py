"""What one request may cost: the bounds this server sets (`PredictLimits` for plain images, `MapLimits` for map
requests) and the rules that count a request's work against them, before any decoding."""

from __future__ import annotations

from dataclasses import dataclass

from samgis.engine.protocol import AmgOptions, Prompts
from samgis.errors import LimitExceeded
from samgis.imaging.images import DEFAULT_MAX_PIXELS

LOW_RES = 256
"""Side of SAM's low-resolution logits (and of `mask_input`)."""


@dataclass(frozen=True)
class PredictLimits:
    """Bounds on what one instance may cost.

    `max_pixels`: image width × height. `max_prompts`: points + boxes per instance. `max_points_per_side`,
    `max_crop_layers`, `max_grid_points`: automatic mode (grid points summed over all crops).
    `decode_bytes`: full-resolution float32 logits held at once; bigger batches are split.
    `max_mask_pixels`: prompted masks decoded × pixels per mask; `max_answer_bytes`: bytes of the answer
    (both None = unbounded; the server sets them, see `check_work`).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_prompts: int = 100
    max_instances: int = 16
    max_points_per_side: int = 32
    max_crop_layers: int = 1
    max_grid_points: int = 1024
    decode_bytes: int = 256 << 20
    max_mask_pixels: int | None = None
    max_answer_bytes: int | None = None


@dataclass(frozen=True)
class MapLimits:
    """Bounds on one map request (`samgis.services.map_segment.SegmentService`); None = unbounded.

    `max_prompts`: point + box prompts (or exemplar boxes) per click. `max_points_per_side`: the automatic-mask
    grid. `max_grid_points`: automatic-mask grid points per 1024² px of window (`counted_grid_points`).
    `max_mask_pixels`: prompted masks × window px. `max_answer_vertices`: polygon vertices of one answer.
    `deadline_s` / `everything_deadline_s`: seconds a click / an automatic-mask request may take in all.
    """

    max_prompts: int = 100
    max_points_per_side: int = 32
    max_grid_points: int | None = None
    max_mask_pixels: int | None = None
    max_answer_vertices: int | None = None
    deadline_s: float | None = None
    everything_deadline_s: float | None = None


def limits_from_settings(settings) -> PredictLimits:
    """The limits a `samgis.settings.Settings` sets."""
    return PredictLimits(max_pixels=settings.max_image_pixels, max_prompts=settings.max_prompts,
                         max_instances=settings.max_instances, max_points_per_side=settings.max_points_per_side,
                         max_grid_points=settings.max_grid_points, max_mask_pixels=settings.max_mask_pixels,
                         max_answer_bytes=settings.max_answer_bytes)


def counted_grid_points(grid: int, px: int) -> float:
    """Automatic-mask work of `grid` grid points on an image (or window) of `px` pixels, as counted against
    `max_grid_points`: grid points per 1024 × 1024 px, never less than the grid itself (work grows with both)."""
    return grid * max(1.0, px / 2**20)


def add_mask_pixels(total: int, cost: int, field: str, limits: PredictLimits) -> int:
    """`total` + `cost` decoded mask pixels of one request, refused (before decoding) over the limit."""
    total += cost
    if limits.max_mask_pixels is not None and total > limits.max_mask_pixels:
        raise LimitExceeded(field, f"the request would decode {total} mask pixels in all, over the limit of "
                                   f"{limits.max_mask_pixels}; split it", "max_mask_pixels")
    return total


def check_work(prompts: Prompts | None, multimask: bool, amg: AmgOptions, size: tuple[int, int],
               field_name: str, limits: PredictLimits, return_logits: bool = False) -> int:
    """Refuse, before any decoding, an instance of image `size` (H, W) that would cost more than `limits`
    allow; returns its decoded mask pixels (for a per-request total).

    Automatic mode (`prompts` None): `counted_grid_points` against `max_grid_points`. Prompts: queries (one per
    box, or one) × masks per query (3 with `multimask`) × max(H × W, 256²) against `max_mask_pixels`; with
    `return_logits`, their base64 bytes against `max_answer_bytes`.
    """
    h, w = size
    if prompts is None:
        grid = amg.grid_points()
        counted = counted_grid_points(grid, h * w)
        if counted > limits.max_grid_points:
            raise LimitExceeded(f"{field_name}.points_per_side",
                                f"automatic mode would decode {grid} grid points on a {w} × {h} image, "
                                f"{counted:.0f} counted per 1024 × 1024 px, over the limit of "
                                f"{limits.max_grid_points}; lower points_per_side or send a smaller image",
                                "max_grid_points")
        return 0
    queries = len(prompts.boxes) or 1
    per_query = 3 if multimask else 1
    cost = queries * per_query * max(h * w, LOW_RES * LOW_RES)
    if limits.max_mask_pixels is not None and cost > limits.max_mask_pixels:
        raise LimitExceeded(field_name, f"{queries} queries × {per_query} masks × {h * w} px = {cost} decoded "
                                        f"mask pixels, over the limit of {limits.max_mask_pixels}; send fewer "
                                        "boxes, no multimask or a smaller image", "max_mask_pixels")
    logit_bytes = queries * per_query * LOW_RES * LOW_RES * 4 * 4 // 3
    if return_logits and limits.max_answer_bytes is not None and logit_bytes > limits.max_answer_bytes:
        raise LimitExceeded(f"{field_name}.return_logits", f"{queries * per_query} masks' logits would be "
                                                           f"{logit_bytes} bytes of answer, over the limit of "
                                                           f"{limits.max_answer_bytes}", "max_answer_bytes")
    return cost
