"""Map requests as the services take them, in lng/lat degrees (EPSG:4326): clicks and concept prompts
(`SegmentQuery` with its prompts and bbox) and automatic masks (`EverythingQuery`). HTTP-free: `api/` builds
these from its validated request models; the checks that need a source, a window or the model are the services'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from samgis.engine.protocol import AmgOptions
from samgis.errors import InvalidRequest
from samgis.vector.postprocess import PostProcess

MAX_WINDOW_BUDGET = 16
"""Most windows one click may use (`SegmentQuery.window_budget`): each is an encoder pass when not cached."""


@dataclass(frozen=True)
class PointPrompt:
    lng: float
    lat: float
    label: int = 1  # 1 include, 0 exclude


@dataclass(frozen=True)
class BoxPrompt:
    west: float
    south: float
    east: float
    north: float


@dataclass(frozen=True)
class TextPrompt:
    """A concept phrase; `index`: its position in the request's prompt list (for error messages)."""

    text: str
    index: int | None = None


@dataclass(frozen=True)
class ExemplarPrompt:
    """An exemplar box (lng/lat degrees); label 1 = positive ("more like this"), 0 = negative."""

    west: float
    south: float
    east: float
    north: float
    label: int = 1
    index: int | None = None


@dataclass(frozen=True)
class BBox:
    west: float
    south: float
    east: float
    north: float

    def contains(self, lng: float, lat: float) -> bool:
        return self.west <= lng <= self.east and self.south <= lat <= self.north

    def check(self) -> None:
        """Refuse (422 naming `bbox`) a bbox whose corners are not south-west then north-east."""
        if not (self.south < self.north):
            raise InvalidRequest("bbox", f"sw.lat ({self.south}) must be south of ne.lat ({self.north})")
        if not (self.west < self.east):
            raise InvalidRequest("bbox", f"sw.lng ({self.west}) must be west of ne.lng ({self.east}); "
                                         "bboxes crossing the antimeridian are not supported")


@dataclass
class SegmentQuery:
    """One segmentation request in lng/lat degrees (EPSG:4326)."""

    bbox: BBox
    zoom: int
    source: str
    points: Sequence[PointPrompt] = ()
    boxes: Sequence[BoxPrompt] = ()
    multimask: bool = False
    simplify_px: float = 1.0
    min_area_px: float = 0.0
    exclude_only: bool = False
    """Decode a prompt of only exclude points (SamGIS does) instead of refusing it as selecting nothing."""
    merge_masks: bool = False
    """Vectorize the union of all decoded masks as one raster (SamGIS's `mask[m > 0] = 255` over its
    predictions) instead of one feature per mask: one feature whose geometry holds every foreground shape."""
    # -- objects larger than a window ("follow") --
    window_budget: int = 1
    """Most windows the answer may use (1 … MAX_WINDOW_BUDGET). Above 1, a point-prompted mask that touches
    its window's edge is followed into the neighbouring lattice windows (`samgis.services.follow`), and a box
    larger than a window is decoded in each window it covers; the pieces merge into one polygon per mask.
    1: one window, the object cut at its edge (the metadata then says whether it continues)."""
    # concept prompts (never together with points/boxes; see samgis.services.concepts)
    texts: Sequence[TextPrompt] = ()
    exemplars: Sequence[ExemplarPrompt] = ()
    score_threshold: float | None = None
    """Concept prompts only; None = the default (0.5). Given with point/box prompts it is refused."""

    postprocess: PostProcess | None = None
    """`samgis.vector.postprocess.Regularize` or `Smooth` applied to every outline in window px (None: off)."""

    @property
    def is_concept(self) -> bool:
        return bool(self.texts or self.exemplars)


@dataclass
class EverythingQuery:
    """Automatic masks of the window holding (lng, lat) degrees EPSG:4326 at `zoom`.

    Grid and filter options are `SamAutomaticMaskGenerator`'s (without crops). `simplify_px` and
    `min_area_px` (polygon parts) mean what they mean in `SegmentQuery`; `min_area_m2` drops whole masks
    whose geodesic area is smaller (measured after `postprocess`, as in `SegmentQuery`).
    """

    lng: float
    lat: float
    zoom: int
    source: str
    points_per_side: int = AmgOptions.points_per_side
    pred_iou_thresh: float = AmgOptions.pred_iou_thresh
    stability_score_thresh: float = AmgOptions.stability_score_thresh
    box_nms_thresh: float = AmgOptions.box_nms_thresh
    simplify_px: float = 1.0
    min_area_px: float = 0.0
    min_area_m2: float = 0.0
    text: str | None = None
    """Find every instance of this phrase instead of automatic masks (`Engine.find`)."""
    score_threshold: float | None = None
    """With `text` only; None = the default (0.5)."""
    grid_options_given: Sequence[str] = ()
    """Names of the grid options the caller set explicitly; with `text` they would be ignored, so refused."""

    postprocess: PostProcess | None = None

    GRID_OPTIONS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")

    def amg_options(self) -> AmgOptions:
        return AmgOptions(points_per_side=self.points_per_side, pred_iou_thresh=self.pred_iou_thresh,
                          stability_score_thresh=self.stability_score_thresh, box_nms_thresh=self.box_nms_thresh,
                          crop_n_layers=0)
