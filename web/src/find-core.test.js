import { describe, expect, it } from 'vitest';
import { ApiError } from './api.js';
import { describeApiError } from './errors.js';
import {
  DEFAULT_MIN_SCORE, MAX_PHRASE, SCORE_FLOOR, boxExemplar, boxInside, centreBox, exemplarPlan, exemplarPrompt,
  exemplarSummary, filterInstances, findAvailability, findErrorMessage, findName, findRequest, findSummary, findWhat,
  geometryBounds, instancesOf, interiorPoint, keptCollection, listRows, phraseProblem, refineSeed, withExemplars,
} from './find-core.js';

const square = (w, s, e, n) => ({ type: 'Polygon', coordinates: [[[w, s], [e, s], [e, n], [w, n], [w, s]]] });
const feature = (instance, score, geometry = square(11, 45, 11.001, 45.001), area = 1234) => ({
  type: 'Feature', geometry, properties: { concept: 'red', score, instance, area_m2: area, mask_index: instance },
});
// The server's order (best first), as an answer of POST /v1/segment with a text prompt.
const answer = {
  type: 'FeatureCollection',
  features: [feature(0, 0.97), feature(1, 0.81, square(11.002, 45, 11.003, 45.001), 56_000), feature(2, 0.42)],
  samgis: { window: { z: 17 }, concept: 'red', n_instances: 3 },
};
const bounds = { south: 44.99, west: 10.99, north: 45.01, east: 11.01 };

describe('find request body', () => {
  it('is /v1/segment with one text prompt over the view, asking down to the score floor', () => {
    const req = findRequest({ bounds, zoom: 16.6, source: { id: 'Scene', min_zoom: 0, max_zoom: 18 }, text: '  red roof ' });
    expect(req).toEqual({
      bbox: { ne: { lat: 45.01, lng: 11.01 }, sw: { lat: 44.99, lng: 10.99 } },
      zoom: 17,
      source: 'Scene',
      prompts: [{ type: 'text', text: 'red roof' }],
      score_threshold: SCORE_FLOOR,
    });
    expect(SCORE_FLOOR).toBeLessThan(DEFAULT_MIN_SCORE);
  });

  it('keeps the zoom inside the source range and a given threshold', () => {
    const req = findRequest({ bounds, zoom: 21, source: { id: 'Osm', max_zoom: 19 }, text: 'pool', scoreThreshold: 0.7 });
    expect(req.zoom).toBe(19);
    expect(req.score_threshold).toBe(0.7);
  });

  it('carries the outline shape, and no text prompt for exemplar boxes alone', () => {
    const req = findRequest({ bounds, zoom: 17, source: 'Scene', text: 'red', shape: 'regularize' });
    expect(req.regularize).toBe(true);
    expect(req).not.toHaveProperty('smooth');
    expect(findRequest({ bounds, zoom: 17, source: 'Scene', text: 'red' })).not.toHaveProperty('regularize');
    expect(findRequest({ bounds, zoom: 17, source: 'Scene', text: '  ', shape: 'smooth' })).toMatchObject({ prompts: [], smooth: true });
  });

  it('refuses an empty or over-long phrase before any request', () => {
    expect(phraseProblem('   ')).toMatch(/Type what to find/);
    expect(phraseProblem(undefined)).toMatch(/Type what to find/);
    expect(phraseProblem('x'.repeat(MAX_PHRASE + 1))).toMatch(`${MAX_PHRASE + 1} characters`);
    expect(phraseProblem('swimming pool')).toBe('');
  });
});

describe('exemplars (more / not like this)', () => {
  const req = findRequest({ bounds, zoom: 17, source: 'Scene', text: 'red' });

  it('turns an instance into an exemplar box inside the request bbox', () => {
    expect(exemplarPrompt(answer.features[0], req.bbox, 1)).toEqual({
      type: 'exemplar', ne: { lat: 45.001, lng: 11.001 }, sw: { lat: 45, lng: 11 }, label: 1,
    });
    const across = feature(0, 0.9, square(11.005, 45.005, 11.02, 45.02));
    expect(exemplarPrompt(across, req.bbox, 0)).toEqual({
      type: 'exemplar', ne: { lat: 45.01, lng: 11.01 }, sw: { lat: 45.005, lng: 11.005 }, label: 0,
    });
    expect(exemplarPrompt(feature(0, 0.9, square(12, 46, 12.1, 46.1)), req.bbox, 1)).toBeNull();
  });

  it('asks the same phrase over the same area with the exemplars after the text', () => {
    const ex = [exemplarPrompt(answer.features[0], req.bbox, 1), exemplarPrompt(answer.features[1], req.bbox, 0)];
    const again = withExemplars(withExemplars(req, ex.slice(0, 1)), ex);
    expect(again.prompts).toEqual([{ type: 'text', text: 'red' }, ...ex]);
    expect(again.bbox).toEqual(req.bbox);
    expect(again.score_threshold).toBe(req.score_threshold);
    expect(withExemplars(again, []).prompts).toEqual([{ type: 'text', text: 'red' }]);
    expect(exemplarSummary(ex)).toBe('1 example, 1 counter-example');
    expect(exemplarSummary([ex[1], ex[1]])).toBe('2 counter-examples');
    expect(exemplarSummary([])).toBe('');
  });
});

describe('exemplar boxes drawn on the map', () => {
  const view = { bounds, zoom: 17, source: 'Scene', scoreThreshold: SCORE_FLOOR, shape: 'smooth' };
  const box = { sw: { lat: 45, lng: 11 }, ne: { lat: 45.002, lng: 11.003 } };
  const exemplar = (b, label) => ({ type: 'exemplar', ne: b.ne, sw: b.sw, label });

  it('is an exemplar prompt of the API, clipped to the bbox, or nothing outside it', () => {
    const bbox = findRequest({ bounds, zoom: 17, source: 'Scene', text: 'x' }).bbox;
    expect(boxExemplar(box, bbox, 1)).toEqual(exemplar(box, 1));
    expect(boxExemplar({ sw: { lat: 45.005, lng: 11.005 }, ne: { lat: 45.2, lng: 11.2 } }, bbox, 0))
      .toEqual({ type: 'exemplar', ne: { lat: 45.01, lng: 11.01 }, sw: { lat: 45.005, lng: 11.005 }, label: 0 });
    expect(boxExemplar({ sw: { lat: 46, lng: 12 }, ne: { lat: 46.1, lng: 12.1 } }, bbox, 1)).toBeNull();
    expect(boxExemplar(null, bbox, 1)).toBeNull();
    expect(boxInside(box, bbox)).toBe(true);
    expect(boxInside({ ...box, ne: { lat: 45.02, lng: 11 } }, bbox)).toBe(false);
  });

  it('alone (no phrase, nothing shown) searches the view for things like it', () => {
    const plan = exemplarPlan({ shown: null, phrase: '  ', box, label: 1, view });
    expect(plan.text).toBe('');
    expect(plan.exemplars).toEqual([exemplar(box, 1)]);
    expect(plan.request).toEqual({
      bbox: { ne: { lat: 45.01, lng: 11.01 }, sw: { lat: 44.99, lng: 10.99 } }, zoom: 17, source: 'Scene',
      prompts: [exemplar(box, 1)], score_threshold: SCORE_FLOOR, smooth: true,
    });
  });

  it('with a phrase searches the view for the phrase with the box as an example', () => {
    const plan = exemplarPlan({ shown: null, phrase: ' red ', box, label: 1, view });
    expect(plan.text).toBe('red');
    expect(plan.request.prompts).toEqual([{ type: 'text', text: 'red' }, exemplar(box, 1)]);
  });

  it('adds to the answer shown, over its own area, while the phrase is unchanged and the box inside it', () => {
    const shownReq = findRequest({ bounds: { south: 44.995, west: 10.995, north: 45.005, east: 11.005 }, zoom: 18, source: 'Scene', text: 'red' });
    const first = exemplar({ sw: { lat: 44.996, lng: 10.996 }, ne: { lat: 44.997, lng: 10.997 } }, 1);
    const shown = { text: 'red', request: withExemplars(shownReq, [first]), exemplars: [first] };
    const small = { sw: { lat: 45, lng: 11 }, ne: { lat: 45.001, lng: 11.001 } };
    const plan = exemplarPlan({ shown, phrase: 'red', box: small, label: 0, view });
    expect(plan.request.bbox).toEqual(shownReq.bbox);
    expect(plan.request.zoom).toBe(18);
    expect(plan.request.prompts).toEqual([{ type: 'text', text: 'red' }, first, exemplar(small, 0)]);
    expect(plan.exemplars).toEqual([first, exemplar(small, 0)]);
    // Another phrase, or a box reaching outside the shown area: a new search over the view.
    expect(exemplarPlan({ shown, phrase: 'green', box: small, label: 1, view }).request.prompts)
      .toEqual([{ type: 'text', text: 'green' }, exemplar(small, 1)]);
    const wide = { sw: { lat: 45, lng: 11 }, ne: { lat: 45.008, lng: 11.008 } };
    const outside = exemplarPlan({ shown, phrase: 'red', box: wide, label: 1, view });
    expect(outside.request.bbox).toEqual(findRequest({ bounds, zoom: 17, source: 'Scene', text: 'red' }).bbox);
    expect(outside.exemplars).toEqual([exemplar(wide, 1)]);
  });

  it('says why when there is nothing to ask', () => {
    expect(exemplarPlan({ shown: null, phrase: '', box, label: 0, view }).problem).toMatch(/counter-example alone finds nothing/);
    expect(exemplarPlan({ shown: null, phrase: '', box: { sw: { lat: 50, lng: 20 }, ne: { lat: 50.1, lng: 20.1 } }, label: 1, view }).problem)
      .toMatch(/inside the map view/);
    expect(exemplarPlan({ shown: null, phrase: 'x'.repeat(MAX_PHRASE + 1), box, label: 1, view }).problem).toMatch(/characters long/);
    // A counter-example to an answer of examples alone is fine: it is added to it.
    const ex = exemplar(box, 1);
    const shown = { text: '', request: withExemplars(findRequest({ bounds, zoom: 17, source: 'Scene', text: '' }), [ex]), exemplars: [ex] };
    expect(exemplarPlan({ shown, phrase: '', box, label: 0, view }).request.prompts).toEqual([ex, exemplar(box, 0)]);
  });

  it('from the keyboard is a box around the middle of the view', () => {
    const c = centreBox({ south: 40, west: 10, north: 41, east: 12 }, 0.2);
    expect(c.sw.lat).toBeCloseTo(40.4, 9);
    expect(c.ne.lat).toBeCloseTo(40.6, 9);
    expect(c.sw.lng).toBeCloseTo(10.8, 9);
    expect(c.ne.lng).toBeCloseTo(11.2, 9);
  });

  it('is said in words: the phrase and its examples, or things like the examples', () => {
    const pos = exemplar(box, 1);
    const neg = exemplar(box, 0);
    expect(findWhat('red')).toBe('every “red”');
    expect(findWhat('red', [neg])).toBe('every “red” with 1 counter-example');
    expect(findWhat('', [pos])).toBe('things like your example');
    expect(findWhat('', [pos, pos, neg])).toBe('things like your 2 examples, not like 1 counter-example');
    expect(findSummary('', 2, 2, 0.5)).toBe('2 instances like your examples (score ≥ 0.50).');
    expect(findSummary('', 0, 0, 0.5)).toMatch(/^Nothing like your examples found in this view.*Try another example/);
    expect(findName('')).toBe('examples');
    expect(findName('red')).toBe('red');
  });
});

describe('availability from GET /v1/models', () => {
  it('is ready only with the text capability', () => {
    const models = (caps) => ({ status: 'ready', loaded: { id: 'sam3', capabilities: caps } });
    expect(findAvailability(models({ text: true, exemplars: true }))).toMatchObject({ state: 'ready', exemplars: true, message: '' });
    const off = findAvailability(models({ text: false, points: true }));
    expect(off.state).toBe('unavailable');
    expect(off.message).toMatch(/“sam3” takes points and rectangles, not phrases/);
    expect(off.message).toMatch(/SAM 3/);
  });

  it('is ready without phrases for a model that takes exemplar boxes alone, and says so', () => {
    const models = (caps) => ({ status: 'ready', loaded: { id: 'boxes', capabilities: caps } });
    const av = findAvailability(models({ text: false, exemplars: true }));
    expect(av).toMatchObject({ state: 'ready', text: false, exemplars: true });
    expect(av.message).toMatch(/“boxes” takes example boxes, not phrases/);
    expect(findAvailability(models({ text: true }))).toMatchObject({ state: 'ready', text: true, exemplars: false, message: '' });
  });

  it('waits while the model loads and says when it failed', () => {
    expect(findAvailability({ status: 'loading', loaded: null }).state).toBe('loading');
    expect(findAvailability({ status: 'error', loaded: null })).toMatchObject({ state: 'unavailable' });
  });
});

describe('instances, the score filter and the list', () => {
  const instances = instancesOf(answer);

  it('lists instances best first with their rank, score and area', () => {
    expect(instances.map((i) => [i.key, i.instance, i.score])).toEqual([[0, 0, 0.97], [1, 1, 0.81], [2, 2, 0.42]]);
    const shuffled = { ...answer, features: [answer.features[2], answer.features[0], answer.features[1]] };
    expect(instancesOf(shuffled).map((i) => i.instance)).toEqual([0, 1, 2]);
    expect(instancesOf({ type: 'FeatureCollection', features: [] })).toEqual([]);
  });

  it('filters by the minimum score, inclusive, without touching the answer', () => {
    expect(filterInstances(instances, 0.5).map((i) => i.instance)).toEqual([0, 1]);
    expect(filterInstances(instances, 0.81).map((i) => i.instance)).toEqual([0, 1]);
    expect(filterInstances(instances, 0.9).map((i) => i.instance)).toEqual([0]);
    expect(filterInstances(instances, 0.99)).toEqual([]);
    expect(filterInstances(instances, 0.3)).toHaveLength(3);
    expect(instances).toHaveLength(3);
  });

  it('makes list rows numbered from 1 with score and area words', () => {
    const rows = listRows(filterInstances(instances, 0.5));
    expect(rows).toEqual([
      { key: 0, label: '#1', score: '0.97', area: '1,234 m²', edge: '', title: '“red” instance 1: score 0.97, 1,234 m²' },
      { key: 1, label: '#2', score: '0.81', area: '5.60 ha', edge: '', title: '“red” instance 2: score 0.81, 5.60 ha' },
    ]);
    const cut = { ...answer.features[1], properties: { ...answer.features[1].properties, at_window_edge: true } };
    const [row] = listRows(instancesOf({ features: [cut] }));
    expect(row.edge).toBe('at the edge');
    expect(row.title).toMatch(/cut by the edge of the window/);
  });

  it('sums up what is shown', () => {
    expect(findSummary('red', 3, 3, 0.3)).toBe('3 instances of “red” (score ≥ 0.30).');
    expect(findSummary('red', 3, 1, 0.9)).toMatch(/^1 of 3 instances of “red” shown \(score ≥ 0.90\); lower/);
    expect(findSummary('red', 1, 1, 0.5)).toBe('1 instance of “red” (score ≥ 0.50).');
    expect(findSummary('pool', 0, 0, 0.5)).toMatch(/^No “pool” found in this view/);
  });

  it('keeps the shown instances as a FeatureCollection, properties intact', () => {
    const fc = keptCollection(filterInstances(instances, 0.8));
    expect(fc.type).toBe('FeatureCollection');
    expect(fc.features.map((f) => f.properties.instance)).toEqual([0, 1]);
    expect(fc.features[0]).toBe(answer.features[0]);
  });
});

describe('error display', () => {
  const err = (status, body) => new ApiError(describeApiError(status, body, { action: 'Find', source: 'Scene' }), { status, body });

  it('says the model cannot take phrases on a 422 naming the text capability', () => {
    const detail = "prompts: model 'test-colour' does not support text (its capabilities: points, boxes)";
    const msg = findErrorMessage(err(422, { detail, field: 'prompts', error: 'MissingCapability' }), 'red');
    expect(msg).toMatch(/^Find is not possible with this model: it cannot look for a phrase like “red”/);
    expect(msg).toContain(detail);
    // Another 422 that happens to hold the word is not taken for it.
    expect(findErrorMessage(err(422, { detail: 'prompts[0].text: too long', error: 'InvalidRequest' }), 'red'))
      .toBe('Find was refused: prompts[0].text: too long');
  });

  it('says what to do when the view is too large for one window', () => {
    const detail = 'bbox: the area to search spans too large an area to fit one 1024 px window at zoom 1–3; zoom in less or segment the parts separately';
    const msg = findErrorMessage(err(422, { detail, field: 'bbox', error: 'InvalidRequest' }), 'red');
    expect(msg).toMatch(/^Find cannot search this view: the area to search spans too large an area/);
    expect(msg).toMatch(/zoom in, or pan, and find again\.$/);
  });

  it('keeps the plain words of other failures', () => {
    expect(findErrorMessage(err(502, { detail: 'tile 17/1/2 failed' }), 'red'))
      .toBe('Find failed: the map tiles from “Scene” could not be fetched. tile 17/1/2 failed');
    expect(findErrorMessage(err(422, { detail: [{ loc: ['body', 'prompts', 0, 'text', 'text'], msg: 'String should have at most 200 characters' }] }), 'x'))
      .toMatch(/^Find was refused: .*at most 200 characters/);
    expect(findErrorMessage(new ApiError('Find failed: the samgis server could not be reached (boom).'), 'red'))
      .toMatch(/could not be reached/);
  });
});

describe('refine seed', () => {
  it('finds a point inside a polygon, off its hole and inside a concave shape', () => {
    const ring = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]];
    const hole = [[3, 3], [7, 3], [7, 7], [3, 7], [3, 3]];
    const [x, y] = interiorPoint({ type: 'Polygon', coordinates: [ring, hole] });
    expect(y).toBeCloseTo(5);
    expect(x < 3 || x > 7).toBe(true);
    // A "C": its centre is outside.
    const c = [[0, 0], [10, 0], [10, 2], [2, 2], [2, 8], [10, 8], [10, 10], [0, 10], [0, 0]];
    const [cx, cy] = interiorPoint({ type: 'Polygon', coordinates: [c] });
    expect(cx).toBeGreaterThan(0);
    expect(cx).toBeLessThan(2);
    expect(cy).toBeCloseTo(5);
    // A multipolygon: inside the largest part.
    const [mx] = interiorPoint({ type: 'MultiPolygon', coordinates: [[[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]], [ring.map(([a, b]) => [a + 20, b])]] });
    expect(mx).toBeGreaterThan(20);
    expect(interiorPoint({ type: 'Point', coordinates: [1, 2] })).toBeNull();
  });

  it('seeds a padded box around the instance, inside the view, and an include point in it', () => {
    const f = feature(0, 0.9, square(11, 45, 11.002, 45.001));
    expect(geometryBounds(f.geometry)).toEqual([11, 45, 11.002, 45.001]);
    const seed = refineSeed(f, bounds, 0.05);
    expect(seed.box.sw.lng).toBeCloseTo(11 - 0.0001, 9);
    expect(seed.box.ne.lat).toBeCloseTo(45.001 + 0.00005, 9);
    expect(seed.point.lat).toBeCloseTo(45.0005, 9);
    expect(seed.point.lng).toBeCloseTo(11.001, 9);
    // An instance at the edge of the view: the box stops at the view.
    const edge = refineSeed(feature(0, 0.9, square(11.009, 45, 11.01, 45.001)), bounds);
    expect(edge.box.ne.lng).toBe(bounds.east);
    expect(refineSeed({ type: 'Feature', geometry: null, properties: {} }, bounds)).toBeNull();
  });
});
