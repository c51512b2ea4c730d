"""Pydantic models of the HTTP API (requests and documented responses)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class LatLng(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(..., ge=-90, le=90, description="latitude, degrees WGS84")
    lng: float = Field(..., ge=-180, le=180, description="longitude, degrees WGS84")


class BBoxIn(BaseModel):
    """The area of interest (usually the map view). Prompts must lie inside it."""

    model_config = ConfigDict(extra="forbid")
    ne: LatLng
    sw: LatLng


class PointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["point"]
    lat: float = Field(..., ge=-90, le=90)
    lng: float = Field(..., ge=-180, le=180)
    label: Literal[0, 1] = Field(1, description="1 = include, 0 = exclude")


class BoxIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["box"]
    ne: LatLng
    sw: LatLng


Prompt = Annotated[Union[PointIn, BoxIn], Field(discriminator="type")]


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "bbox": {"ne": {"lat": 45.01, "lng": 11.27}, "sw": {"lat": 44.99, "lng": 11.23}},
        "zoom": 17, "source": "OpenStreetMap.Mapnik",
        "prompts": [{"type": "point", "lat": 45.0, "lng": 11.25, "label": 1}],
    }]})
    bbox: BBoxIn
    zoom: int = Field(..., ge=0, le=24, description="map zoom; the window uses it or steps out")
    source: str = Field("OpenStreetMap.Mapnik", description="a configured tile source (see /v1/sources)")
    prompts: list[Prompt] = Field(..., min_length=1)
    multimask: bool = Field(False, description="three candidate masks per prompt group")
    simplify_px: float = Field(1.0, ge=0, le=50, description="simplification tolerance in pixels; 0 = exact")
    min_area_px: float = Field(0.0, ge=0, description="drop polygon parts smaller than this many pixels")


class WindowOut(BaseModel):
    z: int
    x: int
    y: int
    size: int


class SamgisMeta(BaseModel):
    window: WindowOut
    zoom_requested: int
    cache: Literal["hit", "miss"]
    timings_ms: dict[str, float]
    model: str
    source: str
    attribution: str


class FeatureCollectionOut(BaseModel):
    """RFC 7946 FeatureCollection (lon/lat, WGS84) with a `samgis` foreign member."""

    type: Literal["FeatureCollection"]
    features: list[dict[str, Any]]
    samgis: SamgisMeta


# --- SamGIS compatibility (/infer_samgis) ---------------------------------------------------------

class SamgisPointData(BaseModel):
    lat: float = Field(..., ge=-90, le=90)
    lng: float = Field(..., ge=-180, le=180)


class SamgisRectData(BaseModel):
    ne: SamgisPointData
    sw: SamgisPointData


class SamgisPoint(BaseModel):
    type: Literal["point"]
    data: SamgisPointData
    label: Literal[0, 1] = 1


class SamgisRect(BaseModel):
    type: Literal["rectangle"]
    data: SamgisRectData
    label: int | None = None


SamgisPrompt = Annotated[Union[SamgisPoint, SamgisRect], Field(discriminator="type")]


class SamgisRequest(BaseModel):
    bbox: BBoxIn
    prompt: list[SamgisPrompt] = Field(..., min_length=1)
    zoom: int = Field(..., ge=0, le=24)
    source_type: str = "OpenStreetMap"
