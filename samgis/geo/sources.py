"""Tile sources: where the tiles of a named map come from.

Requests may only name configured sources; a client never makes the server fetch a URL of its
choosing. Built-ins are xyzservices' providers that need no token, by their flattened name
("OpenStreetMap.Mapnik", "Esri.WorldImagery"). A providers file (JSON) adds or overrides names::

    {"OpenStreetMap.Mapnik": {"url": "https://tiles.example.org/osm/{z}/{x}/{y}.png"},
     "Drone": {"path": "/data/ortho.mbtiles", "max_zoom": 22, "attribution": "Our drone"},
     "Scans": {"path": "tiles/{z}/{x}/{y}.png"},
     "Sat": {"url": "https://sat.example.com/{z}/{x}/{y}.jpg?key={apikey}", "api_key_env": "SAT_KEY"}}

An entry overriding a built-in keeps the built-in's attribution and zoom range unless it sets
them. Relative paths are resolved against the providers file's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import xyzservices

from samgis.errors import UnknownSource, UpstreamError

Kind = Literal["xyz", "folder", "mbtiles"]

_XYZ_FIELDS = ("{z}", "{x}")
_ENTRY_KEYS = {
    "url": str,
    "path": str,
    "min_zoom": int,
    "max_zoom": int,
    "tile_size": int,
    "attribution": str,
    "subdomains": str,
    "api_key_env": str,
}


@dataclass(frozen=True)
class TileSource:
    """One named tile source.

    `url` (kind "xyz"): template with {z} {x} {y} (or {-y} for TMS rows), optional {s}
    (one of `subdomains`), {r} (retina suffix, always "") and {apikey} (read from the
    environment variable `api_key_env` when a tile is fetched; keys never come from requests).
    `path`: a template like "/data/tiles/{z}/{x}/{y}.png" (kind "folder") or an MBTiles file
    (kind "mbtiles").

    >>> s = TileSource("t", "xyz", url="https://{s}.t.example/{z}/{x}/{y}{r}.png", subdomains="ab")
    >>> s.tile_url(3, 1, 2), s.tile_url(3, 2, 2)
    ('https://b.t.example/3/1/2.png', 'https://a.t.example/3/2/2.png')
    """

    id: str
    kind: Kind
    url: str | None = None
    path: str | None = None
    min_zoom: int = 0
    max_zoom: int = 19
    tile_size: int = 256
    attribution: str = ""
    subdomains: str = "abc"
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "xyz":
            if not self.url:
                raise ValueError(f"tile source {self.id!r}: kind 'xyz' needs a url")
            scheme = urlsplit(self.url).scheme
            if scheme not in ("http", "https"):
                raise ValueError(f"tile source {self.id!r}: url must be http(s), got {self.url!r}")
            template = self.url
        elif self.kind in ("folder", "mbtiles"):
            if not self.path:
                raise ValueError(f"tile source {self.id!r}: kind {self.kind!r} needs a path")
            template = self.path if self.kind == "folder" else "{z}{x}{y}"
        else:
            raise ValueError(f"tile source {self.id!r}: unknown kind {self.kind!r}")
        missing = [f for f in _XYZ_FIELDS if f not in template]
        if "{y}" not in template and "{-y}" not in template:
            missing.append("{y}")
        if missing:
            raise ValueError(f"tile source {self.id!r}: template lacks {', '.join(missing)}")
        if not 0 <= self.min_zoom <= self.max_zoom <= 30:
            raise ValueError(
                f"tile source {self.id!r}: need 0 <= min_zoom <= max_zoom <= 30, "
                f"got {self.min_zoom}..{self.max_zoom}"
            )
        if self.tile_size < 1:
            raise ValueError(f"tile source {self.id!r}: tile_size must be positive")
        if "{s}" in template and not self.subdomains:
            raise ValueError(f"tile source {self.id!r}: url uses {{s}} but subdomains is empty")

    @property
    def is_local(self) -> bool:
        """True for sources read from disk (folder, MBTiles)."""
        return self.kind != "xyz"

    @property
    def cache_id(self) -> str:
        """Tile-cache namespace: the id plus a digest of the template, so repointing a name at
        other tiles never serves the old ones.

        >>> TileSource("a", "xyz", url="http://h/{z}/{x}/{y}.png").cache_id
        'a@7885e7f9'
        """
        template = self.url or self.path or ""
        return f"{self.id}@{hashlib.sha1(template.encode()).hexdigest()[:8]}"

    def tile_url(self, z: int, x: int, y: int, *, redact: bool = False) -> str:
        """Where tile (z, x, y) lives: its URL (xyz), file path (folder) or "FILE#z/x/y" (mbtiles).

        With `redact`, an API key is shown as "***" (for messages and logs).
        Raises UpstreamError when the URL needs an API key and its environment variable is unset.
        """
        if self.kind == "mbtiles":
            return f"{self.path}#{z}/{x}/{y}"
        template = self.url if self.kind == "xyz" else self.path
        assert template is not None
        out = (
            template.replace("{z}", str(z))
            .replace("{x}", str(x))
            .replace("{-y}", str(2**z - 1 - y))
            .replace("{y}", str(y))
            .replace("{r}", "")
        )
        if "{s}" in out:
            out = out.replace("{s}", self.subdomains[(x + y) % len(self.subdomains)])
        if "{apikey}" in out:
            out = out.replace("{apikey}", "***" if redact else self._api_key())
        return out

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env or "", "")
        if not key:
            where = f"environment variable {self.api_key_env}" if self.api_key_env else "api_key_env"
            raise UpstreamError(f"tile source {self.id!r} needs an API key: set {where}")
        return key

    def public(self) -> dict[str, Any]:
        """What clients may see: no URL, path or key."""
        return {
            "id": self.id,
            "kind": self.kind,
            "min_zoom": self.min_zoom,
            "max_zoom": self.max_zoom,
            "tile_size": self.tile_size,
            "attribution": self.attribution,
        }


class SourceRegistry:
    """The configured tile sources, by name."""

    def __init__(self, sources: Iterable[TileSource] = ()):
        self._sources: dict[str, TileSource] = {s.id: s for s in sources}

    @classmethod
    def from_config(
        cls, providers_file: str | Path | None = None, builtins: bool = True,
        rasters: Iterable[str | Path] = (),
    ) -> SourceRegistry:
        """Built-in xyzservices providers (unless `builtins` is False), the providers file, then `rasters`
        (raster files named by their file stem, as `samgis serve --raster PATH` gives them).

        Raises ValueError naming the file and entry when the providers file is malformed, or the raster
        when one cannot be used.
        """
        sources = dict(builtin_sources()) if builtins else {}
        if providers_file is not None:
            sources.update(file_sources(providers_file, sources))
        for path in rasters:
            from samgis.geo.readers.raster import raster_source  # the readers import this module

            name = Path(path).stem
            try:
                sources[name] = raster_source(name, {"raster": str(path)})
            except ValueError as e:
                raise ValueError(f"raster {str(path)!r} (source {name!r}): {e}") from None
        return cls(sources.values())

    def get(self, name: str) -> TileSource:
        """The source called `name`; raises UnknownSource if it is not configured."""
        try:
            return self._sources[name]
        except (KeyError, TypeError):
            raise UnknownSource(str(name), self.names()) from None

    def names(self) -> list[str]:
        """Configured names, sorted."""
        return sorted(self._sources)

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def __len__(self) -> int:
        return len(self._sources)

    def __iter__(self) -> Iterator[TileSource]:
        return iter(self._sources[n] for n in self.names())


def builtin_sources() -> dict[str, TileSource]:
    """xyzservices providers usable as-is: no token, Web Mercator XYZ, not marked broken."""
    out = {}
    for name, provider in xyzservices.providers.flatten().items():
        source = source_from_provider(name, provider)
        if source is not None:
            out[name] = source
    return out


def source_from_provider(name: str, provider: xyzservices.TileProvider) -> TileSource | None:
    """A TileSource for an xyzservices provider, or None when it needs a token, uses another
    CRS than EPSG:3857, is marked broken, or its URL has placeholders we cannot fill."""
    if provider.requires_token() or provider.get("status") == "broken":
        return None
    if provider.get("crs", "EPSG:3857") != "EPSG:3857":
        return None
    try:
        url = provider.build_url(fill_subdomain=False, scale_factor="{r}")
    except (KeyError, ValueError, IndexError):
        return None
    if provider.get("tms"):
        url = url.replace("{y}", "{-y}")
    if set(re.findall(r"\{[^}]*\}", url)) - {"{z}", "{x}", "{y}", "{-y}", "{s}", "{r}"}:
        return None
    try:
        return TileSource(
            id=name,
            kind="xyz",
            url=url,
            min_zoom=int(provider.get("min_zoom", 0)),
            max_zoom=int(provider.get("max_zoom", 19)),
            attribution=str(provider.get("attribution", "")),
            subdomains=str(provider.get("subdomains", "abc")),
        )
    except ValueError:
        return None


def file_sources(
    providers_file: str | Path, existing: dict[str, TileSource] | None = None
) -> dict[str, TileSource]:
    """Sources defined by a providers file (JSON object: name -> entry).

    An entry has "url" (XYZ template), "path" (folder template, or MBTiles file ending in
    .mbtiles) or "raster" (a GeoTIFF / COG, see `samgis.geo.readers.raster.raster_source`), and optionally "min_zoom", "max_zoom", "tile_size", "attribution", "subdomains",
    "api_key_env". Entries that override a source in `existing` inherit its attribution,
    zoom range and tile size unless they set them.
    """
    file = Path(providers_file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"providers file {str(file)!r}: cannot read it: {e}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"providers file {str(file)!r}: invalid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"providers file {str(file)!r}: expected a JSON object of name -> entry")
    existing = existing or {}
    out = {}
    for name, entry in data.items():
        try:
            if isinstance(entry, dict) and "raster" in entry:
                from samgis.geo.readers.raster import raster_source  # the readers import this module

                out[name] = raster_source(name, entry, file.parent)
                continue
            out[name] = _entry_source(name, entry, file.parent, existing.get(name))
        except ValueError as e:
            raise ValueError(f"providers file {str(file)!r}, entry {name!r}: {e}") from None
    return out


def _entry_source(name: str, entry: Any, base: Path, inherit: TileSource | None) -> TileSource:
    if not name:
        raise ValueError("the name must not be empty")
    if not isinstance(entry, dict):
        raise ValueError("expected an object with 'url' or 'path'")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown}; allowed: {sorted(_ENTRY_KEYS)}")
    for key, typ in _ENTRY_KEYS.items():
        value = entry.get(key)
        if value is not None and (not isinstance(value, typ) or isinstance(value, bool)):
            kind = "an integer" if typ is int else "a string"
            raise ValueError(f"{key!r} must be {kind}, got {value!r}")
    if ("url" in entry) == ("path" in entry):
        raise ValueError("give exactly one of 'url' or 'path'")
    fields: dict[str, Any] = {}
    if inherit is not None:
        fields = {
            "min_zoom": inherit.min_zoom,
            "max_zoom": inherit.max_zoom,
            "tile_size": inherit.tile_size,
            "attribution": inherit.attribution,
        }
    fields.update({k: v for k, v in entry.items() if k not in ("url", "path")})
    if "url" in entry:
        return TileSource(id=name, kind="xyz", url=entry["url"], **fields)
    path = entry["path"]
    if not os.path.isabs(path):
        path = str(base / path)
    kind: Kind = "mbtiles" if path.lower().endswith(".mbtiles") else "folder"
    return TileSource(id=name, kind=kind, path=path, **fields)
