import { describe, expect, it } from 'vitest';

import {
  attributionText, basemapFor, extentLatLngBounds, groupSources, isRaster, tileLayerOptions,
} from './sources.js';

const SOURCES = [
  { id: 'OpenStreetMap.Mapnik', kind: 'xyz', attribution: 'OpenStreetMap contributors', min_zoom: 0, max_zoom: 19 },
  { id: 'Esri.WorldImagery', kind: 'xyz', attribution: 'Esri', min_zoom: 0, max_zoom: 18 },
  { id: 'OpenStreetMap.DE', kind: 'xyz', attribution: 'OpenStreetMap contributors', min_zoom: 0, max_zoom: 18 },
  { id: 'Mine', kind: 'xyz', attribution: '', min_zoom: 0, max_zoom: 20 },
  { id: 'Scene', kind: 'folder', attribution: 'test scene', min_zoom: 0, max_zoom: 20 },
];

describe('groupSources', () => {
  it('groups by provider prefix, other XYZ and local, in server order', () => {
    const g = groupSources(SOURCES);
    expect([...g.keys()]).toEqual(['OpenStreetMap', 'Esri', 'Other', 'Local']);
    expect(g.get('OpenStreetMap').map((s) => s.id)).toEqual(['OpenStreetMap.Mapnik', 'OpenStreetMap.DE']);
    expect(g.get('Local').map((s) => s.id)).toEqual(['Scene']);
  });
  it('filters on id and attribution, case-insensitively, keeping the current source', () => {
    expect([...groupSources(SOURCES, '  ESRI ').values()].flat().map((s) => s.id)).toEqual(['Esri.WorldImagery']);
    expect([...groupSources(SOURCES, 'test scene').values()].flat().map((s) => s.id)).toEqual(['Scene']);
    expect([...groupSources(SOURCES, 'esri', 'Mine').values()].flat().map((s) => s.id)).toEqual(['Esri.WorldImagery', 'Mine']);
    expect(groupSources(SOURCES, 'nothing like it').size).toBe(0);
  });
});

describe('attributionText', () => {
  it('prefixes one copyright sign', () => {
    expect(attributionText({ attribution: '(C) Esri' })).toBe('© Esri');
    expect(attributionText({ attribution: '© OSM' })).toBe('© OSM');
    expect(attributionText({ attribution: '' })).toBe('No attribution given.');
  });
});

describe('tileLayerOptions', () => {
  it('overzooms past the native zooms', () => {
    const o = tileLayerOptions({ min_zoom: 2, max_zoom: 17, tile_size: 256 }, 'a');
    expect(o).toMatchObject({ minNativeZoom: 2, maxNativeZoom: 17, maxZoom: 22, attribution: 'a' });
    expect(o.tileSize).toBeUndefined();
  });
  it('keeps 256 px zoom levels for 512 px tiles', () => {
    expect(tileLayerOptions({ min_zoom: 0, max_zoom: 20, tile_size: 512 }, '')).toMatchObject({ tileSize: 512, zoomOffset: -1 });
  });
});

const RASTER = { id: 'ortho', kind: 'raster', attribution: '', min_zoom: 0, max_zoom: 24, bounds: [9.0, 45.0, 9.02, 45.01] };

describe('raster sources', () => {
  it('are grouped as rasters, even with a dotted id', () => {
    const g = groupSources([...SOURCES, RASTER, { ...RASTER, id: 'survey.2024' }]);
    expect(g.get('Rasters').map((s) => s.id)).toEqual(['ortho', 'survey.2024']);
    expect(g.has('survey')).toBe(false);
  });
  it('are shown over the current basemap, else the default, else the first non-raster', () => {
    const all = [RASTER, ...SOURCES];
    expect(basemapFor(all, 'Scene', SOURCES[1]).id).toBe('Esri.WorldImagery');
    expect(basemapFor(all, 'Scene', null).id).toBe('Scene');
    expect(basemapFor(all, 'ortho', null).id).toBe('OpenStreetMap.Mapnik');
    expect(basemapFor(all, 'ortho', RASTER).id).toBe('OpenStreetMap.Mapnik');
    expect(basemapFor([RASTER], 'ortho', null)).toBeNull();
  });
  it('give their extent as Leaflet bounds, or null', () => {
    expect(extentLatLngBounds(RASTER)).toEqual([[45.0, 9.0], [45.01, 9.02]]);
    expect(extentLatLngBounds(SOURCES[0])).toBeNull();
    expect(extentLatLngBounds({ bounds: null })).toBeNull();
    expect(extentLatLngBounds({ bounds: [9, 45, 9, 46] })).toBeNull();
    expect(extentLatLngBounds({ bounds: [9, 45, 'x', 46] })).toBeNull();
    expect(extentLatLngBounds({ bounds: [9, 45, 10] })).toBeNull();
  });
  it('are told apart by kind', () => {
    expect(isRaster(RASTER)).toBe(true);
    expect(isRaster(SOURCES[4])).toBe(false);
    expect(isRaster(null)).toBe(false);
  });
});
