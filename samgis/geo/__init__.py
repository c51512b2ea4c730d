"""Tile maths, windows, tile sources, tile fetching and the disk tile cache.

Imports nothing from `samgis.engine`, `samgis.vector` or `api`.
"""

from samgis.geo.fetch import TileFetcher, TileNotFound
from samgis.geo.sources import SourceRegistry, TileSource
from samgis.geo.tilecache import TileCache, ttl_from_headers
from samgis.geo.tiles import MAX_LAT, Window, candidate_windows

__all__ = [
    "MAX_LAT",
    "SourceRegistry",
    "TileCache",
    "TileFetcher",
    "TileNotFound",
    "TileSource",
    "Window",
    "candidate_windows",
    "ttl_from_headers",
]
