// The Find tool's logic: the request body, the instances of an answer, the score filter, the list rows, the
// messages and the seed of a refinement. Pure functions: no Leaflet, no DOM (find.js draws and wires them).
// Coordinates are lat/lng degrees (EPSG:4326); GeoJSON geometries are [lng, lat] (RFC 7946).
import { formatArea, formatScore } from './format.js';
import { detailText } from './errors.js';
import { requestZoom, shapeFields } from './prompts.js';

/**
 * The lowest score asked of the server. The slider filters the answer from there up, in the page, without a new
 * request; SAM 3's own cut is 0.5 (the slider's default), and asking down to 0.3 leaves room to look lower
 * without flooding the map with the model's near-misses.
 */
export const SCORE_FLOOR = 0.3;
export const DEFAULT_MIN_SCORE = 0.5;
export const MAX_PHRASE = 200;

const round = (v) => Math.round(v * 1e7) / 1e7;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const latLng = (lat, lng) => ({ lat: round(clamp(lat, -90, 90)), lng: round(clamp(lng, -180, 180)) });

/** Why `text` cannot be sent as a phrase ('' when it can). */
export function phraseProblem(text) {
  const t = String(text ?? '').trim();
  if (!t) return 'Type what to find first, e.g. “building” or “swimming pool”.';
  if (t.length > MAX_PHRASE) return `The phrase is ${t.length} characters long; keep it under ${MAX_PHRASE} (a short noun phrase works best).`;
  return '';
}

/**
 * The JSON body of POST /v1/segment for a phrase over the map view.
 * bounds: {south, west, north, east} degrees (the view); zoom: map zoom; source: source object or id;
 * text: the phrase (trimmed here; check it with `phraseProblem` first), or '' for none (then add exemplars with
 * `withExemplars`: the server needs a prompt); shape: a prompts.js `SHAPES` key (the outlines' post-processing).
 */
export function findRequest({ bounds, zoom, source, text, scoreThreshold = SCORE_FLOOR, shape = 'as-is' }) {
  const src = typeof source === 'string' ? { id: source } : source;
  const t = String(text ?? '').trim();
  return {
    bbox: { ne: latLng(bounds.north, bounds.east), sw: latLng(bounds.south, bounds.west) },
    zoom: requestZoom(zoom, src),
    source: src.id,
    prompts: t ? [{ type: 'text', text: t }] : [],
    score_threshold: scoreThreshold,
    ...shapeFields(shape),
  };
}

/**
 * An exemplar prompt (api/models.py `ExemplarIn`: {type: "exemplar", ne, sw, label}) from a box {sw, ne}
 * ({lat, lng} degrees) kept inside the request's `bbox` ({ne, sw}, as the server requires); label 1 = "more like
 * this", 0 = "not like this". null when nothing of it is inside the bbox.
 */
export function boxExemplar(box, bbox, label) {
  if (!box?.sw || !box?.ne) return null;
  const sw = latLng(Math.max(box.sw.lat, bbox.sw.lat), Math.max(box.sw.lng, bbox.sw.lng));
  const ne = latLng(Math.min(box.ne.lat, bbox.ne.lat), Math.min(box.ne.lng, bbox.ne.lng));
  if (!(sw.lat < ne.lat && sw.lng < ne.lng)) return null;
  return { type: 'exemplar', ne, sw, label: label ? 1 : 0 };
}

/** An exemplar prompt from a found instance (a GeoJSON Feature, lon/lat): its bounds, as `boxExemplar`. */
export function exemplarPrompt(feature, bbox, label) {
  const b = geometryBounds(feature?.geometry);
  return b ? boxExemplar({ sw: { lat: b[1], lng: b[0] }, ne: { lat: b[3], lng: b[2] } }, bbox, label) : null;
}

/** Whether the box {sw, ne} lies wholly inside the bbox {sw, ne} (degrees; edges included). */
export function boxInside(box, bbox) {
  return box.sw.lat >= bbox.sw.lat && box.sw.lng >= bbox.sw.lng && box.ne.lat <= bbox.ne.lat && box.ne.lng <= bbox.ne.lng;
}

/**
 * What an exemplar box drawn on the map asks ("find things like this one" / "not like this one"):
 * - the answer shown (`shown`: {text, request, exemplars} or null) is found again over its own area with one
 *   more exemplar when the phrase box still holds its phrase and the box lies inside that area, as "more / not
 *   like this" on a listed instance does;
 * - otherwise a new search over the view (`view`: {bounds, zoom, source, shape}, as `findRequest` takes them) for
 *   the phrase, or for things like the box alone when the phrase box is empty.
 * box: {sw, ne} degrees; label: 1 = example, 0 = counter-example; phrase: the phrase box's text.
 * Returns {text, request, exemplars} (`request` the body of POST /v1/segment, `exemplars` its exemplar prompts),
 * or {problem} in plain words when there is nothing to ask.
 */
export function exemplarPlan({ shown, phrase, box, label, view }) {
  const text = String(phrase ?? '').trim();
  const problem = text ? phraseProblem(text) : '';
  if (problem) return { problem };
  if (shown && shown.text === text && boxInside(box, shown.request.bbox)) {
    const ex = boxExemplar(box, shown.request.bbox, label);
    if (ex) {
      const exemplars = [...shown.exemplars, ex];
      return { text, request: withExemplars(shown.request, exemplars), exemplars };
    }
  }
  if (!label && !text) {
    return { problem: 'A counter-example alone finds nothing: type a phrase, or draw an example (“like this”) first.' };
  }
  const base = findRequest({ ...view, text });
  const ex = boxExemplar(box, base.bbox, label);
  if (!ex) return { problem: 'Draw the example box inside the map view.' };
  return { text, request: withExemplars(base, [ex]), exemplars: [ex] };
}

/**
 * A box around the middle of the view, for drawing an exemplar from the keyboard (pan the thing to the middle
 * with the arrow keys, then Enter): `fraction` of the view's height and width, centred. view: {south, west,
 * north, east} degrees → {sw, ne} ({lat, lng} degrees).
 */
export function centreBox(view, fraction = 0.2) {
  const cy = (view.south + view.north) / 2;
  const cx = (view.west + view.east) / 2;
  const hy = ((view.north - view.south) * fraction) / 2;
  const hx = ((view.east - view.west) * fraction) / 2;
  return { sw: { lat: cy - hy, lng: cx - hx }, ne: { lat: cy + hy, lng: cx + hx } };
}

/**
 * What a search looks for, in words for the status line: "every “red”", "every “red” with 1 counter-example",
 * "things like your example", "things like your 2 examples, not like 1 counter-example". text: the phrase ('' for
 * none); exemplars: its exemplar prompts.
 */
export function findWhat(text, exemplars = []) {
  if (text) return `every “${text}”${exemplars.length ? ` with ${exemplarSummary(exemplars)}` : ''}`;
  const pos = exemplars.filter((e) => e.label === 1).length;
  const neg = exemplars.length - pos;
  return `things like your ${pos === 1 ? 'example' : `${pos} examples`}` +
    (neg ? `, not like ${neg} counter-example${neg === 1 ? '' : 's'}` : '');
}

/** The name of a search for layers and files: the phrase, or "examples" for exemplar boxes alone. */
export function findName(text) {
  return text || 'examples';
}

/** `request` (a `findRequest` body) asked again with `exemplars` (`exemplarPrompt`s) after its text prompt. */
export function withExemplars(request, exemplars) {
  return { ...request, prompts: [...request.prompts.filter((p) => p.type === 'text'), ...exemplars] };
}

/** "1 example, 2 counter-examples" of exemplar prompts ('' for none). */
export function exemplarSummary(exemplars) {
  const pos = exemplars.filter((e) => e.label === 1).length;
  const neg = exemplars.length - pos;
  return [
    pos ? `${pos} example${pos === 1 ? '' : 's'}` : '',
    neg ? `${neg} counter-example${neg === 1 ? '' : 's'}` : '',
  ].filter(Boolean).join(', ');
}

/**
 * What the loaded model allows, from GET /v1/models:
 * {state: 'ready' | 'loading' | 'unavailable', model, text, exemplars, message}. `text`: it takes a phrase;
 * `exemplars`: it takes exemplar boxes (Find is ready with either). `message` explains in plain words a state other
 * than 'ready', or a Find without phrases; '' otherwise.
 */
export function findAvailability(models) {
  const loaded = models?.loaded;
  const off = { model: null, text: false, exemplars: false };
  if (!loaded && models?.status === 'error') {
    return { ...off, state: 'unavailable',
      message: 'Find is off: the model could not be loaded (see the message under Status).' };
  }
  if (!loaded) {
    return { ...off, state: 'loading',
      message: 'Find waits for the model to load (it needs a model that understands phrases).' };
  }
  const caps = loaded.capabilities || {};
  const model = loaded.id ?? loaded.model_id ?? 'the loaded model';
  if (!caps.text && !caps.exemplars) {
    return { ...off, model, state: 'unavailable',
      message: `Find is off: the model “${model}” takes points and rectangles, not phrases; a model with text ` +
        'prompts (e.g. SAM 3) finds every instance of one.' };
  }
  return {
    state: 'ready', model, text: Boolean(caps.text), exemplars: Boolean(caps.exemplars),
    message: caps.text ? '' : `The model “${model}” takes example boxes, not phrases: draw one over a thing like ` +
      'those to find (Like this, X).',
  };
}

/**
 * The instances of a find answer, best first: [{key, instance, score, area, concept, edge, feature}]. `key` is the
 * feature's index in `fc.features` (stable while the answer is shown); `instance` is the server's 0-based rank;
 * `edge`: the instance touches the edge of the window the model saw, so it may go on outside it.
 */
export function instancesOf(fc) {
  return (fc?.features ?? [])
    .map((f, key) => {
      const p = f.properties || {};
      return {
        key, instance: Number.isInteger(p.instance) ? p.instance : key, score: Number(p.score),
        area: Number(p.area_m2), concept: p.concept ?? '', edge: Boolean(p.at_window_edge), feature: f,
      };
    })
    .sort((a, b) => (b.score - a.score) || (a.instance - b.instance));
}

/** The instances scored at least `minScore` (order kept). */
export function filterInstances(instances, minScore) {
  return instances.filter((i) => Number.isFinite(i.score) && i.score >= minScore);
}

/**
 * Rows of the list for the shown instances: {key, label, score, area, edge, title}; numbered from 1 as people
 * count. `edge` is a word for an instance cut by the window's edge ('' otherwise).
 */
export function listRows(shown) {
  return shown.map((i) => ({
    key: i.key,
    label: `#${i.instance + 1}`,
    score: formatScore(i.score),
    area: formatArea(i.area),
    edge: i.edge ? 'at the edge' : '',
    title: `${i.concept ? `“${i.concept}” ` : ''}instance ${i.instance + 1}: score ${formatScore(i.score)}, ` +
      `${formatArea(i.area)}${i.edge ? ', cut by the edge of the window the model saw (it may go on outside)' : ''}`,
  }));
}

/**
 * "2 of 3 instances of “red” shown (score ≥ 0.60)…" / "No “red” found in this view…"; text '' (exemplar boxes
 * alone) reads "like your examples".
 */
export function findSummary(text, total, shown, minScore) {
  if (!total) {
    return `${text ? `No “${text}”` : 'Nothing like your examples'} found in this view (instances scored ` +
      `${formatScore(SCORE_FLOOR)} or more were asked for). Try another ${text ? 'phrase' : 'example'}, or pan or ` +
      'zoom to another place.';
  }
  const word = total === 1 ? 'instance' : 'instances';
  const of = text ? `of “${text}”` : 'like your examples';
  if (shown === total) return `${total} ${word} ${of} (score ≥ ${formatScore(minScore)}).`;
  return `${shown} of ${total} ${word} ${of} shown (score ≥ ${formatScore(minScore)}); lower the minimum score to see more.`;
}

/** A FeatureCollection of the shown instances, best first, for a layer or a download. */
export function keptCollection(shown) {
  return { type: 'FeatureCollection', features: shown.map((i) => i.feature) };
}

/**
 * The message for a failed find. err: an api.js ApiError ({message, status, body}); text: the phrase.
 * A 422 MissingCapability naming "text" means the model cannot take phrases; anything else keeps api.js's words.
 */
export function findErrorMessage(err, text) {
  const detail = detailText(err?.body);
  // samgis answers {detail: "prompts: model 'x' does not support text (…)", error: "MissingCapability"}.
  if (err?.status === 422 && err.body?.error === 'MissingCapability' && /\btext\b/.test(detail)) {
    return `Find is not possible with this model: it cannot look for a phrase like “${text}” (${detail}). ` +
      'Use points and rectangles, or serve a model with text prompts such as SAM 3.';
  }
  if (err?.status === 422 && err.body?.field === 'bbox') {
    return `Find cannot search this view: ${detail.replace(/^bbox: /, '').replace(/\.$/, '')}. It looks at the whole view in one ` +
      'model window: zoom in, or pan, and find again.';
  }
  return err?.message || `Find failed: ${detail || 'no detail'}`;
}

// --- refine -----------------------------------------------------------------------------------------

/** The outer rings ([[lng, lat], …]) and holes of a Polygon or MultiPolygon geometry: [[outer, ...holes], …]. */
function polygonsOf(geometry) {
  if (geometry?.type === 'Polygon') return [geometry.coordinates];
  if (geometry?.type === 'MultiPolygon') return geometry.coordinates;
  return [];
}

function ringArea(ring) {
  let a = 0;
  for (let k = 0, j = ring.length - 1; k < ring.length; j = k++) a += (ring[j][0] + ring[k][0]) * (ring[j][1] - ring[k][1]);
  return Math.abs(a) / 2;
}

/**
 * A point inside a Polygon / MultiPolygon geometry ([lng, lat] degrees), away from its edges where it can be:
 * on the horizontal line through the middle of the largest part, the middle of the widest stretch inside it (holes
 * excluded). null for an empty or non-polygon geometry.
 */
export function interiorPoint(geometry) {
  const parts = polygonsOf(geometry).filter((p) => p.length && p[0].length >= 4);
  if (!parts.length) return null;
  const part = parts.reduce((a, b) => (ringArea(b[0]) > ringArea(a[0]) ? b : a));
  const lats = part[0].map((c) => c[1]);
  const lo = Math.min(...lats);
  const hi = Math.max(...lats);
  let best = null;
  // A few scan lines near the middle: a line through a vertex or along an edge is nudged to the next one.
  for (const t of [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8]) {
    const y = lo + (hi - lo) * t;
    const xs = [];
    for (const ring of part) {
      for (let k = 0, j = ring.length - 1; k < ring.length; j = k++) {
        const [x0, y0] = ring[j];
        const [x1, y1] = ring[k];
        if ((y0 > y) !== (y1 > y)) xs.push(x0 + ((y - y0) * (x1 - x0)) / (y1 - y0));
      }
    }
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      const w = xs[k + 1] - xs[k];
      if (w > 0 && (!best || w > best.w)) best = { w, x: (xs[k] + xs[k + 1]) / 2, y };
    }
    if (best) break;
  }
  return best ? [best.x, best.y] : null;
}

/** The [west, south, east, north] degree bounds of a Polygon / MultiPolygon geometry (null when empty). */
export function geometryBounds(geometry) {
  const coords = polygonsOf(geometry).flatMap((p) => p[0] ?? []);
  if (!coords.length) return null;
  const xs = coords.map((c) => c[0]);
  const ys = coords.map((c) => c[1]);
  return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
}

/**
 * What "refine" seeds the prompt tools with for one found instance: a rectangle around it (its bounds padded by
 * `pad` of their size on each side, kept inside `view` so the request is valid) and an include point inside it.
 * feature: a GeoJSON Feature (lon/lat); view: {south, west, north, east} degrees.
 * Returns {box: {sw, ne}, point: {lat, lng}} ({lat, lng} degrees), or null when the instance is not a polygon.
 */
export function refineSeed(feature, view, pad = 0.05) {
  const b = geometryBounds(feature?.geometry);
  const p = interiorPoint(feature?.geometry);
  if (!b || !p) return null;
  const [w, s, e, n] = b;
  const dx = (e - w) * pad;
  const dy = (n - s) * pad;
  return {
    box: {
      sw: { lat: Math.max(s - dy, view.south), lng: Math.max(w - dx, view.west) },
      ne: { lat: Math.min(n + dy, view.north), lng: Math.min(e + dx, view.east) },
    },
    point: { lat: p[1], lng: p[0] },
  };
}
