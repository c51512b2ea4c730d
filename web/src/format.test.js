import { describe, expect, it } from 'vitest';
import {
  bestScore, defaultLayerName, exportFileName, followingText, formatArea, formatScore, formatTimings,
  postprocessText, resultSummary, safeName, scoreColor, totalArea, windowsText,
} from './format.js';
import { windowBudgetValue } from './prompts.js';

describe('area', () => {
  it('picks m², ha or km² by size', () => {
    expect(formatArea(3.14159)).toBe('3.1 m²');
    expect(formatArea(1234.4)).toBe('1,234 m²');
    expect(formatArea(9999)).toBe('9,999 m²');
    expect(formatArea(12_345)).toBe('1.23 ha');
    expect(formatArea(543_210)).toBe('54.3 ha');
    expect(formatArea(2_345_678)).toBe('2.346 km²');
    expect(formatArea(123_456_789)).toBe('123.46 km²');
    expect(formatArea(5_000_000_000)).toBe('5,000 km²');
  });

  it('says "–" for missing areas', () => {
    expect(formatArea(undefined)).toBe('–');
    expect(formatArea(NaN)).toBe('–');
    expect(formatArea(-1)).toBe('–');
  });
});

describe('score', () => {
  it('formats and colours scores from red to green', () => {
    expect(formatScore(0.9371)).toBe('0.94');
    expect(formatScore(undefined)).toBe('–');
    expect(scoreColor(0)).toBe('#d73027');
    expect(scoreColor(1)).toBe('#1a9850');
    expect(scoreColor(1.3)).toBe('#1a9850');
    expect(scoreColor(-1)).toBe('#d73027');
    expect(scoreColor(0.75)).toBe('#fee04f');
    expect(scoreColor(0.95)).toMatch(/^#[0-9a-f]{6}$/);
  });
});

const fc = {
  type: 'FeatureCollection',
  features: [
    { properties: { score: 0.8, area_m2: 100 } },
    { properties: { score: 0.95, area_m2: 50 } },
  ],
  samgis: {
    window: { z: 15, x: 1, y: 2, size: 1024 }, zoom_requested: 17, cache: 'miss',
    timings_ms: { total: 380.4, decode: 21.44, validate: 0.21, tiles: 12, embed: 340.2, vectorize: 3.1 },
  },
};

describe('result words', () => {
  it('lists timings in pipeline order with total last', () => {
    expect(formatTimings(fc.samgis.timings_ms)).toBe(
      'validate 0.2 ms · tiles 12 ms · embed 340 ms · decode 21 ms · vectorize 3.1 ms · total 380 ms');
    expect(formatTimings({ total: 12_500, other: 1 })).toBe('other 1.0 ms · total 12.5 s');
    expect(formatTimings(undefined)).toBe('');
  });

  it('summarises a result with cache, zoom used and timings', () => {
    const s = resultSummary(fc);
    expect(s).toContain('2 polygons');
    expect(s).toContain('best score 0.95');
    expect(s).toContain('embedding cache miss');
    expect(s).toContain('window z15 (stepped out from z17');
    expect(s).toContain('total 380 ms');
    expect(resultSummary({ features: [], samgis: { cache: 'hit', window: { z: 3 }, zoom_requested: 3 } }))
      .toBe('no object found · embedding cache hit · window z3');
    expect(bestScore(fc)).toBe(0.95);
    expect(totalArea(fc)).toBe(150);
  });
});

describe('following objects across windows', () => {
  const win = (x, cache) => ({ z: 16, x, y: 7, size: 1024, cache });

  it('says it is following while a request with a window budget runs', () => {
    expect(followingText(4)).toBe('following… up to 4 windows');
    expect(followingText(1)).toBe('');
    expect(followingText(undefined)).toBe('');
  });

  it('says how many windows the answer used and whether the budget cut the object', () => {
    const meta = { cache: 'miss', window: win(0), zoom_requested: 16,
      windows: [win(0, 'miss'), win(2, 'hit'), win(4, 'miss')], follow: { window_budget: 4, stopped_by_budget: false } };
    expect(windowsText(meta)).toBe('3 windows (1 from the cache)');
    expect(resultSummary({ features: [], samgis: meta })).toBe('no object found · embedding cache miss · window z16 · 3 windows (1 from the cache)');
    const cut = { windows: [win(0, 'hit'), win(2, 'miss')], follow: { window_budget: 2, stopped_by_budget: true } };
    expect(windowsText(cut)).toBe('2 windows (1 from the cache) · cut at the 2-window budget: the object goes on');
    expect(windowsText({ windows: [win(0, 'hit')], follow: { window_budget: 4, stopped_by_budget: false } })).toBe('');
    expect(windowsText({})).toBe('');
  });

  it('keeps the budget an integer the API takes', () => {
    expect([windowBudgetValue('3'), windowBudgetValue(0), windowBudgetValue(99), windowBudgetValue('x')]).toEqual([3, 1, 16, 4]);
  });
});

describe('names', () => {
  it('mirrors the server safe_name rule', () => {
    expect(safeName('my lake')).toBe('my_lake');
    expect(safeName('__.hidden..')).toBe('hidden');
    expect(safeName('Zürich roofs/2024')).toBe('Z_rich_roofs_2024');
    expect(safeName('')).toBe('samgis_segments');
    expect(safeName('x'.repeat(100))).toHaveLength(80);
  });

  it('makes QGIS-friendly default layer and file names', () => {
    expect(defaultLayerName('OpenStreetMap.Mapnik', 17, 3)).toBe('samgis_openstreetmap-mapnik_z17_3');
    expect(defaultLayerName('Scene', 16, 1)).toBe('samgis_scene_z16_1');
    expect(exportFileName('my lake', 'gpkg')).toBe('my_lake.gpkg');
    expect(exportFileName('samgis_scene_z16_1', 'geojson')).toBe('samgis_scene_z16_1.geojson');
  });
});

describe('post-processing words', () => {
  it('names the step and library the answer reports, nothing when none', () => {
    expect(postprocessText(null)).toBe('');
    expect(postprocessText(undefined)).toBe('');
    expect(postprocessText({ regularize: { tolerance_px: 2 }, library: 'buildingregulariser' }))
      .toBe('outlines regularized (buildingregulariser)');
    expect(postprocessText({ smooth: { iterations: 3 }, library: 'smoothify' })).toBe('outlines smoothed (smoothify)');
    const fc = { features: [], samgis: { window: { z: 18 }, postprocess: { smooth: {}, library: 'smoothify' } } };
    expect(resultSummary(fc)).toBe('no object found · window z18 · outlines smoothed (smoothify)');
  });
});
