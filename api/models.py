"""Pydantic models of the HTTP API (requests and documented responses)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Strict, Tag

from samgis.engine.protocol import AmgOptions
from samgis.services.map_query import MAX_WINDOW_BUDGET
from samgis.services.concepts import DEFAULT_SCORE_THRESHOLD, MAX_TEXT_CHARS
from samgis.vector.postprocess import MAX_SMOOTH_ITERATIONS, MIN_REGULARIZE_TOLERANCE_PX, Regularize, Smooth

# Strict scalar types for every request field: a number is a JSON number (not true/false, not a string) and
# finite (NaN/Infinity are refused before parsing by `api.limits.BodyLimitMiddleware`; this is the second
# line); an integer is a JSON integer; a boolean is true or false.
Num = Annotated[float, Strict(), AllowInfNan(False)]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]


def _json_integer(value):
    if type(value) is not int:  # not true/false, not 1.0
        raise ValueError("expected the integer 0 or 1")
    return value


Label = Annotated[Literal[0, 1], BeforeValidator(_json_integer)]


class LatLng(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: Num = Field(..., ge=-90, le=90, description="latitude, degrees WGS84")
    lng: Num = Field(..., ge=-180, le=180, description="longitude, degrees WGS84")


class BBoxIn(BaseModel):
    """The area of interest (usually the map view). Prompts must lie inside it."""

    model_config = ConfigDict(extra="forbid")
    ne: LatLng
    sw: LatLng


class PointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["point"]
    lat: Num = Field(..., ge=-90, le=90)
    lng: Num = Field(..., ge=-180, le=180)
    label: Label = Field(1, description="1 = include, 0 = exclude")


class BoxIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["box"]
    ne: LatLng
    sw: LatLng


# --- concept prompts (SAM 3 "find every instance"; samgis.services.concepts has the rules) ------------------

ConceptText = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"\S")]


class TextIn(BaseModel):
    """Find every instance of a short noun phrase ("greenhouse", "swimming pool") in the bbox."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: ConceptText = Field(..., description=f"a short noun phrase, 1–{MAX_TEXT_CHARS} characters, not only "
                                               "spaces")


class ExemplarIn(BaseModel):
    """An exemplar box: label 1 = "more like this object", 0 = "not like this one"."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["exemplar"]
    ne: LatLng
    sw: LatLng
    label: Label = Field(1, description="1 = positive exemplar, 0 = negative exemplar")


Prompt = Annotated[Union[PointIn, BoxIn, TextIn, ExemplarIn], Field(discriminator="type")]


# --- vector post-processing options (samgis.vector.postprocess), shared by /v1/segment and /everything -------

class RegularizeIn(BaseModel):
    """buildingregulariser parameters; lengths in window px."""

    model_config = ConfigDict(extra="forbid")
    tolerance_px: Num = Field(Regularize.tolerance_px, ge=MIN_REGULARIZE_TOLERANCE_PX, le=50,
                              description="simplification before edge alignment, px (library: 2-3 × pixel size)")
    parallel_px: Num = Field(Regularize.parallel_px, ge=0, le=50,
                             description="nearly parallel neighbouring edges closer than this are merged, px")
    diagonal_deg: Num = Field(Regularize.diagonal_deg, ge=0, le=22.5,
                              description="larger = fewer 45° edges (library's diagonal_threshold_reduction)")
    circles: Bool = Field(Regularize.circles, description="near-circular outlines become circles")
    circle_iou: Num = Field(Regularize.circle_iou, ge=0, le=1,
                            description="IoU with the equal-area circle above which an outline becomes it")


class SmoothIn(BaseModel):
    """smoothify parameters, then a Douglas-Peucker pass; lengths in window px."""

    model_config = ConfigDict(extra="forbid")
    iterations: Int = Field(Smooth.iterations, ge=1, le=MAX_SMOOTH_ITERATIONS,
                            description="Chaikin corner-cutting passes (each doubles the curve's vertices)")
    tolerance_px: Num = Field(Smooth.tolerance_px, ge=0, le=10,
                              description="vertices of the smoothed curve closer than this to it are dropped, px")
    preserve_area: Bool = Field(Smooth.preserve_area, description="restore the outline's area after smoothing")


def _flag_or_parameters(value) -> str:
    return "flag" if isinstance(value, bool) else "parameters"


RegularizeOption = Annotated[Union[Annotated[Bool, Tag("flag")], Annotated[RegularizeIn, Tag("parameters")]],
                             Discriminator(_flag_or_parameters)]
SmoothOption = Annotated[Union[Annotated[Bool, Tag("flag")], Annotated[SmoothIn, Tag("parameters")]],
                         Discriminator(_flag_or_parameters)]
REGULARIZE_DOC = ("square building-like outlines (buildingregulariser): true = defaults, or an object of "
                  "parameters; off by default; not with smooth. Works on the exact pixel outline: its "
                  "tolerance_px replaces simplify_px")
SMOOTH_DOC = ("smooth pixel staircases of natural features (smoothify): true = defaults, or an object of "
              "parameters; off by default; not with regularize. Works on the exact pixel outline: its "
              "tolerance_px replaces simplify_px")


def postprocess_option(value):
    """A request's `regularize` / `smooth` value as `samgis.vector.postprocess.option` takes it."""
    return value.model_dump() if isinstance(value, BaseModel) else value


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "bbox": {"ne": {"lat": 45.01, "lng": 11.27}, "sw": {"lat": 44.99, "lng": 11.23}},
        "zoom": 17, "source": "OpenStreetMap.Mapnik",
        "prompts": [{"type": "point", "lat": 45.0, "lng": 11.25, "label": 1}],
    }]})
    bbox: BBoxIn
    zoom: Int = Field(..., ge=0, le=24, description="map zoom; the window uses it or steps out")
    source: str = Field("OpenStreetMap.Mapnik", description="a configured tile source (see /v1/sources)")
    prompts: list[Prompt] = Field(..., min_length=1)
    multimask: Bool = Field(False, description="three candidate masks per prompt group")
    simplify_px: Num = Field(1.0, ge=0, le=50, description="simplification tolerance in pixels; 0 = exact (not used "
                                                                  "with regularize/smooth)")
    min_area_px: Num = Field(0.0, ge=0, description="drop polygon parts smaller than this many pixels")
    # -- objects larger than a window --
    window_budget: Int = Field(4, ge=1, le=MAX_WINDOW_BUDGET,
                               description="point/box prompts: most 1024 px windows the answer may use: a "
                                           "point-prompted mask that "
                                           "touches its window's edge is followed into the neighbouring windows "
                                           "and a box larger than a window is decoded in each window it covers, "
                                           "the pieces merged into one polygon; 1 = one window (the object is cut "
                                           "at its edge). The windows used and whether the budget stopped the "
                                           "following are in `samgis.windows` and `samgis.follow`")
    # concept prompts (text / exemplar) only
    score_threshold: Num | None = Field(None, ge=0, le=1, description="concept prompts only: drop instances "
                                        f"scoring below this (default {DEFAULT_SCORE_THRESHOLD})")
    # vector post-processing (samgis.vector.postprocess)
    regularize: RegularizeOption = Field(False, description=REGULARIZE_DOC)
    smooth: SmoothOption = Field(False, description=SMOOTH_DOC)


class WindowOut(BaseModel):
    z: int
    x: int
    y: int
    size: int


class FollowOut(BaseModel):
    window_budget: int = Field(..., description="the window_budget the request was answered with")
    stopped_by_budget: bool = Field(..., description="a mask went on past its windows' edges into a window the "
                                                     "budget left out: the object is cut there")


class SamgisMeta(BaseModel):
    window: WindowOut = Field(..., description="the first window used (the one holding the prompts)")
    zoom_requested: int
    cache: Literal["hit", "miss"]
    timings_ms: dict[str, float]
    model: str
    source: str
    attribution: str
    postprocess: dict[str, Any] | None = Field(
        None, description="the post-processing applied: {\"regularize\" or \"smooth\": parameters, \"library\": "
                          "name}; null when none")


class SegmentMeta(SamgisMeta):
    windows: list[dict[str, Any]] = Field(..., description="every window used, in the order they were embedded "
                                                           "(the first is `window`), each with its `cache` hit "
                                                           "or miss")
    follow: FollowOut


class ExemplarCount(BaseModel):
    positive: int
    negative: int


class ConceptMeta(SamgisMeta):
    """`samgis` of an answer to concept prompts."""

    concept: str = Field(..., description='the text phrase, or "exemplar" for exemplar boxes alone')
    text: str | None = Field(..., description="the text phrase (null: exemplars alone)")
    exemplars: ExemplarCount
    score_threshold: float
    n_instances: int = Field(..., description="features in the answer: one per instance found")
    n_found: int = Field(..., description="instances the model found in the window, before the bbox, nodata and "
                                          "area filters")
    bbox_clipped: bool = Field(False, description="the bbox reached past the source (e.g. a raster's edge), so the "
                                                  "search covered only its part on the source")
    area_searched: list[float] | None = Field(None, description="[west, south, east, north] degrees of the area "
                                                                "searched: the bbox, clipped to the source")


class FeatureCollectionOut(BaseModel):
    """RFC 7946 FeatureCollection (lon/lat, WGS84) with a `samgis` foreign member.

    Point/box prompts: features carry `score`, `mask_index`, `prompt_index`, `area_m2`, `zoom`, `model`,
    `source`, `attribution`. Concept prompts: one feature per instance, best first, with `concept`, `score`,
    `instance` (0-based, = `mask_index`), `at_window_edge`, `area_m2`, `zoom`, `model`, `source`, `attribution`;
    `samgis` is then `ConceptMeta`."""

    type: Literal["FeatureCollection"]
    features: list[dict[str, Any]]
    samgis: ConceptMeta | SegmentMeta


class EverythingRequest(BaseModel):
    """Automatic masks of the window a click at (lat, lng) would get at `zoom`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "lat": 45.0, "lng": 11.25, "zoom": 17, "source": "OpenStreetMap.Mapnik",
        "points_per_side": 16, "min_area_m2": 50,
    }]})
    lat: Num = Field(..., ge=-90, le=90, description="latitude, degrees WGS84 (inside ±85.0511, the Web "
                                                       "Mercator map)")
    lng: Num = Field(..., ge=-180, le=180, description="longitude, degrees WGS84")
    zoom: Int = Field(..., ge=0, le=24, description="map zoom; the 1024 px window is taken at this zoom")
    source: str = Field("OpenStreetMap.Mapnik", description="a configured tile source (see /v1/sources)")
    points_per_side: Int = Field(AmgOptions.points_per_side, ge=1,
                                 description="grid of points_per_side² point prompts over the window; at most "
                                             "the server's max_points_per_side (SAMGIS_MAX_POINTS_PER_SIDE, "
                                             "default 32)")
    pred_iou_thresh: Num = Field(AmgOptions.pred_iou_thresh, ge=0, le=1,
                                   description="drop masks whose predicted IoU is not above this")
    stability_score_thresh: Num = Field(AmgOptions.stability_score_thresh, ge=0, le=1,
                                          description="drop masks whose stability score is below this")
    box_nms_thresh: Num = Field(AmgOptions.box_nms_thresh, ge=0, le=1,
                                  description="box IoU above which the lower-scored of two masks is dropped")
    min_area_m2: Num = Field(0.0, ge=0, description="drop masks smaller than this (geodesic m²)")
    min_area_px: Num = Field(0.0, ge=0, description="drop polygon parts smaller than this many pixels")
    simplify_px: Num = Field(1.0, ge=0, le=50, description="simplification tolerance in pixels; 0 = exact (not "
                                                            "used with regularize/smooth)")
    # concept prompts: every instance of a phrase instead of automatic masks
    text: ConceptText | None = Field(None, description="find every instance of this noun phrase in the window "
                                                       "instead of automatic masks (needs a model with the text "
                                                       "capability; the grid options do not apply)")
    score_threshold: Num | None = Field(None, ge=0, le=1, description="with text only: drop instances scoring below "
                                                                      f"this (default {DEFAULT_SCORE_THRESHOLD})")
    # vector post-processing (samgis.vector.postprocess)
    regularize: RegularizeOption = Field(False, description=REGULARIZE_DOC)
    smooth: SmoothOption = Field(False, description=SMOOTH_DOC)


class EverythingMeta(SamgisMeta):
    n_masks: int = Field(..., description="features in the answer")
    n_generated: int = Field(..., description="masks from the generator (with text: instances found), before area "
                                              "filters and deduplication")
    generator: dict[str, int | float] = Field(..., description="the generator options used (with text: "
                                                               "score_threshold and the area/simplify options)")
    concept: str | None = Field(None, description="with text: the phrase")
    score_threshold: float | None = Field(None, description="with text: the threshold used")
    n_instances: int | None = Field(None, description="with text: instances in the answer")


class EverythingOut(BaseModel):
    """RFC 7946 FeatureCollection (lon/lat, WGS84), one feature per mask, with a `samgis` foreign member."""

    type: Literal["FeatureCollection"]
    features: list[dict[str, Any]]
    samgis: EverythingMeta


# --- SamGIS compatibility (/infer_samgis) ---------------------------------------------------------

class SamgisPointData(BaseModel):
    lat: Num = Field(..., ge=-90, le=90)
    lng: Num = Field(..., ge=-180, le=180)


class SamgisRectData(BaseModel):
    ne: SamgisPointData
    sw: SamgisPointData


class SamgisPoint(BaseModel):
    type: Literal["point"]
    data: SamgisPointData
    label: Label = 1


class SamgisRect(BaseModel):
    type: Literal["rectangle"]
    data: SamgisRectData
    label: Int | None = None


SamgisPrompt = Annotated[Union[SamgisPoint, SamgisRect], Field(discriminator="type")]


class SamgisRequest(BaseModel):
    bbox: BBoxIn
    prompt: list[SamgisPrompt] = Field(..., min_length=1)
    zoom: Num = Field(..., ge=0, le=24, description="SamGIS sends Leaflet's zoom, which may be fractional; "
                                                       "the tile zoom is its integer part")
    source_type: str = "OpenStreetMap.Mapnik"
    id: str = Field("", description="SamGIS's request id; accepted and ignored")
    debug: Bool = Field(False, description="SamGIS's debug flag; accepted and ignored")
