"""Service settings: CLI flags override `SAMGIS_*` environment variables, which override defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from samgis.engine.cache import DEFAULT_CACHE_BYTES
from samgis.engine.registry import DEFAULT_MODEL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAMGIS_", extra="ignore")

    model: str = Field(DEFAULT_MODEL, description="model id from the registry (see /v1/models)")
    checkpoint: Path | None = Field(None, description="explicit weights file (or folder: ONNX pairs); else cache "
                                    "dir, else download")
    models_file: Path | None = Field(None, description="JSON file adding models, e.g. ONNX pairs by path")
    cache_dir: Path | None = Field(None, description="root for weights/ and tiles/ (default ~/.cache/samgis)")
    allow_download: bool = Field(True, description="download missing weights from the official URL")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    precision: str = Field("auto", description="auto | fp32 | fp16 | bf16 (encoder autocast)")
    providers: Path | None = Field(None, description="JSON file adding or overriding tile sources")
    builtin_sources: bool = Field(True, description="offer xyzservices' providers that need no API key")
    rasters: list[Path] = Field(default_factory=list, description="GeoTIFF / COG files served as raster sources, "
                                                                  "named by file stem (samgis serve --raster)")
    cache_bytes: int = Field(DEFAULT_CACHE_BYTES, description="embedding cache bound in bytes")
    tile_cache: bool = Field(True, description="keep fetched tiles on disk under cache_dir/tiles")
    tile_timeout_s: float = Field(10.0, gt=0, description="seconds one tile request may take (each attempt)")
    deadline_s: float = Field(30.0, gt=0, description="seconds a map click (/v1/segment, /infer_samgis) or a tile "
                              "(/v1/tiles) may take in all, tile fetching and retries included; past it → 504")
    everything_deadline_s: float = Field(120.0, gt=0, description="seconds /v1/segment/everything may take "
                                         "in all; past it → 504")
    tile_retries: int = Field(3, ge=0)
    window_tiles: int = Field(4, ge=1, le=8, description="window side in tiles (4 × 256 px = 1024 px)")
    max_zoom_steps: int = Field(4, ge=0, description="how far to zoom out when prompts do not fit")
    max_prompts: int = Field(100, ge=1)
    max_body_bytes: int = Field(10_000_000, ge=1024, description="request body bound (base64 images included); "
                                "Vertex AI public endpoints cap requests at 1.5 MB anyway")
    max_image_pixels: int = Field(16_777_216, ge=1, description="width × height of one image to /v1/predict")
    max_instances: int = Field(16, ge=1, description="instances in one /v1/predict request")
    max_points_per_side: int = Field(32, ge=1, description="cap on automatic-mask grid density")
    encoder_queue: int = Field(8, ge=0, description="encoder passes (cold windows, new images) that may wait "
                               "behind the running one; beyond → 503 with Retry-After")
    max_grid_points: int = Field(256, ge=1, description="automatic-mask grid points one request may decode, "
                                 "counted per 1024 × 1024 px of image (a 2048² image counts each point 4×); "
                                 "256 = a 16 × 16 grid on a map window, a few seconds on a CPU")
    max_mask_pixels: int = Field(64 * 2**20, ge=1, description="prompted masks decoded in one request × pixels "
                                 "per mask (e.g. 64 full 1024 × 1024 px map-window masks)")
    max_answer_vertices: int = Field(1_000_000, ge=1, description="polygon vertices in one GeoJSON answer")
    max_answer_bytes: int = Field(50_000_000, ge=1, description="bytes of one JSON answer")
    body_timeout_s: float = Field(60.0, gt=0, description="seconds a request body may take to arrive; "
                                  "slower → 408 and the connection is closed")
    default_source: str = "OpenStreetMap.Mapnik"
    web_dir: Path | None = Field(None, description="built web map to serve at / (default: the repo's web/dist)")
    # access control for shared deployments (api/security.py); all off by default
    api_keys: str | None = Field(None, description="API keys: comma-separated, or a file with one key per line; "
                                 "when set, API routes need 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    rate_limit_per_key: str | None = Field(None, description="e.g. \"10/second;600/hour\": requests per API key")
    rate_limit_per_ip: str | None = Field(None, description="e.g. \"5/second;300/hour\": requests per client IP")
    cors_origins: str | None = Field(None, description="comma-separated origins allowed to call the API from a "
                                     "browser (CORS); none by default")

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        from samgis.engine.weights import default_cache_dir

        return default_cache_dir().parent
