"""Tile sources and the source registry (samgis.geo.sources)."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
import xyzservices

import samgis.geo.sources as sources_module
from samgis.errors import InvalidRequest, UnknownSource, UpstreamError
from samgis.geo.sources import SourceRegistry, TileSource


@pytest.fixture(scope="module")
def builtins() -> SourceRegistry:
    return SourceRegistry.from_config()


def write_providers(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "providers.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_doctests():
    result = doctest.testmod(sources_module)
    assert result.attempted >= 2 and result.failed == 0


def test_builtins_come_from_xyzservices(builtins):
    assert len(builtins) > 100
    osm = builtins.get("OpenStreetMap.Mapnik")
    ref = xyzservices.providers.OpenStreetMap.Mapnik
    assert osm.kind == "xyz"
    assert osm.tile_url(5, 9, 11) == ref.build_url(x=9, y=11, z=5)
    assert osm.max_zoom == ref["max_zoom"]
    assert osm.attribution == ref["attribution"]
    esri = builtins.get("Esri.WorldImagery")
    ref = xyzservices.providers.Esri.WorldImagery
    assert esri.tile_url(7, 3, 4) == ref.build_url(x=3, y=4, z=7)
    assert "{z}/{y}/{x}" in ref["url"]  # Esri puts y before x: the template is honoured
    assert esri.attribution == ref["attribution"]


def test_builtins_skip_providers_that_need_a_token(builtins):
    flat = xyzservices.providers.flatten()
    needing = [name for name, p in flat.items() if p.requires_token()]
    assert needing, "xyzservices lists providers that need a token"
    assert not any(name in builtins for name in needing)
    assert all("{apikey}" not in (s.url or "") for s in builtins)


def test_builtins_keep_subdomains_and_drop_retina_placeholder(builtins):
    flat = xyzservices.providers.flatten()
    with_s = [n for n in builtins.names() if "{s}" in (builtins.get(n).url or "")]
    assert with_s
    name = with_s[0]
    src = builtins.get(name)
    subdomains = flat[name].get("subdomains", "abc")
    assert src.subdomains == subdomains
    hosts = {src.tile_url(10, x, 0) for x in range(len(subdomains))}
    assert len(hosts) == len(subdomains)  # rotates over all subdomains
    assert all("{" not in u for u in hosts)
    with_r = [n for n in builtins.names() if "{r}" in (builtins.get(n).url or "")]
    assert with_r
    assert "{r}" not in builtins.get(with_r[0]).tile_url(3, 1, 1)


def test_builtins_skip_other_crs(builtins):
    flat = xyzservices.providers.flatten()
    polar = [n for n, p in flat.items() if p.get("crs", "EPSG:3857") != "EPSG:3857"]
    assert polar and not any(n in builtins for n in polar)


def test_tms_rows():
    s = TileSource("tms", "xyz", url="http://h/{z}/{x}/{-y}.png")
    assert s.tile_url(3, 1, 0) == "http://h/3/1/7.png"


def test_public_hides_url_path_and_key(builtins):
    pub = builtins.get("OpenStreetMap.Mapnik").public()
    assert set(pub) == {"id", "kind", "min_zoom", "max_zoom", "tile_size", "attribution"}
    assert pub["id"] == "OpenStreetMap.Mapnik" and pub["max_zoom"] == 19
    assert "openstreetmap.org" not in json.dumps(pub)


def test_unknown_name(builtins):
    with pytest.raises(UnknownSource) as e:
        builtins.get("No.Such.Map")
    assert isinstance(e.value, InvalidRequest) and e.value.field == "source"
    assert "No.Such.Map" in str(e.value)
    assert "No.Such.Map" not in builtins


def test_providers_file_overrides_builtin_and_adds_names(tmp_path, builtins):
    path = write_providers(
        tmp_path,
        {
            "OpenStreetMap.Mapnik": {"url": "http://127.0.0.1:8080/osm/{z}/{x}/{y}.png"},
            "Mine": {
                "url": "https://tiles.example.org/{z}/{x}/{y}.jpg",
                "max_zoom": 21,
                "min_zoom": 3,
                "attribution": "Me",
                "tile_size": 512,
            },
        },
    )
    reg = SourceRegistry.from_config(path)
    osm = reg.get("OpenStreetMap.Mapnik")
    assert osm.tile_url(2, 1, 3) == "http://127.0.0.1:8080/osm/2/1/3.png"
    # The mirror still shows OSM's attribution and zoom range.
    assert osm.attribution == builtins.get("OpenStreetMap.Mapnik").attribution
    assert osm.max_zoom == 19
    assert osm.cache_id != builtins.get("OpenStreetMap.Mapnik").cache_id
    mine = reg.get("Mine")
    assert (mine.min_zoom, mine.max_zoom, mine.tile_size, mine.attribution) == (3, 21, 512, "Me")
    assert len(reg) == len(builtins) + 1
    assert "Esri.WorldImagery" in reg


def test_providers_file_without_builtins(tmp_path):
    path = write_providers(tmp_path, {"Only": {"url": "http://h/{z}/{x}/{y}.png"}})
    reg = SourceRegistry.from_config(path, builtins=False)
    assert reg.names() == ["Only"]
    with pytest.raises(UnknownSource):
        reg.get("OpenStreetMap.Mapnik")


def test_providers_file_local_paths(tmp_path):
    path = write_providers(
        tmp_path,
        {
            "Folder": {"path": "tiles/{z}/{x}/{y}.png", "max_zoom": 22},
            "Abs": {"path": str(tmp_path / "abs" / "{z}" / "{x}" / "{y}.jpg")},
            "Drone": {"path": "ortho.MBTiles", "attribution": "Drone survey"},
        },
    )
    reg = SourceRegistry.from_config(path, builtins=False)
    folder = reg.get("Folder")
    assert folder.kind == "folder" and folder.is_local
    assert folder.tile_url(20, 5, 6) == str(tmp_path / "tiles" / "20" / "5" / "6.png")
    assert reg.get("Abs").tile_url(1, 0, 1) == str(tmp_path / "abs" / "1" / "0" / "1.jpg")
    drone = reg.get("Drone")
    assert drone.kind == "mbtiles" and drone.path == str(tmp_path / "ortho.MBTiles")
    assert drone.public()["kind"] == "mbtiles" and "path" not in drone.public()


def test_api_key_comes_from_the_environment(tmp_path, monkeypatch):
    path = write_providers(
        tmp_path,
        {"Sat": {"url": "https://sat.example.com/{z}/{x}/{y}.jpg?key={apikey}", "api_key_env": "SAT_KEY"}},
    )
    sat = SourceRegistry.from_config(path, builtins=False).get("Sat")
    monkeypatch.delenv("SAT_KEY", raising=False)
    with pytest.raises(UpstreamError, match="SAT_KEY"):
        sat.tile_url(1, 0, 0)
    monkeypatch.setenv("SAT_KEY", "s3cret")
    assert sat.tile_url(1, 0, 0) == "https://sat.example.com/1/0/0.jpg?key=s3cret"
    assert sat.tile_url(1, 0, 0, redact=True) == "https://sat.example.com/1/0/0.jpg?key=***"
    assert "s3cret" not in json.dumps(sat.public())


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "JSON object"),
        ({"Bad": "http://h/{z}/{x}/{y}.png"}, "url' or 'path"),
        ({"Bad": {}}, "exactly one of 'url' or 'path'"),
        ({"Bad": {"url": "http://h/{z}/{x}/{y}", "path": "/t/{z}/{x}/{y}"}}, "exactly one"),
        ({"Bad": {"url": "http://h/{z}/{x}/{y}", "maxZoom": 3}}, "unknown keys ['maxZoom']"),
        ({"Bad": {"url": "http://h/{z}/{x}/{y}", "max_zoom": "19"}}, "'max_zoom' must be an integer"),
        ({"Bad": {"url": "http://h/{z}/{x}/{y}", "max_zoom": True}}, "'max_zoom' must be an integer"),
        ({"Bad": {"url": "http://h/{z}/{x}.png"}}, "lacks {y}"),
        ({"Bad": {"url": "file:///etc/{z}/{x}/{y}"}}, "must be http(s)"),
        ({"Bad": {"path": "tiles/{x}/{y}.png"}}, "lacks {z}"),
        ({"Bad": {"url": "http://h/{z}/{x}/{y}", "min_zoom": 5, "max_zoom": 2}}, "min_zoom"),
        ({"Bad": {"url": "http://h/{z}/{x}/{y}", "tile_size": 0}}, "tile_size"),
    ],
)
def test_bad_providers_file_names_file_and_entry(tmp_path, content, fragment):
    path = write_providers(tmp_path, content)
    with pytest.raises(ValueError) as e:
        SourceRegistry.from_config(path, builtins=False)
    message = str(e.value)
    assert str(path) in message
    assert fragment in message
    if isinstance(content, dict):
        assert "'Bad'" in message


def test_missing_providers_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        SourceRegistry.from_config(tmp_path / "nope.json")


def test_source_validation():
    with pytest.raises(ValueError):
        TileSource("x", "xyz")
    with pytest.raises(ValueError):
        TileSource("x", "folder", url="http://h/{z}/{x}/{y}")
    with pytest.raises(ValueError):
        TileSource("x", "wms", url="http://h/{z}/{x}/{y}")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TileSource("x", "xyz", url="http://{s}.h/{z}/{x}/{y}", subdomains="")
