// Prompts on the map ↔ the body of POST /v1/segment. Pure functions: no Leaflet, no DOM.
// Coordinates are lat/lng degrees (EPSG:4326); a box is stored as its south-west and north-east corners.

let nextId = 1;

/** An include (label 1) or exclude (label 0) point. */
export function makePoint(lat, lng, label = 1) {
  return { id: nextId++, type: 'point', lat, lng, label: label ? 1 : 0 };
}

/** A box from any two opposite corners, normalised to {sw, ne}. */
export function makeBox(a, b) {
  return { id: nextId++, type: 'box', ...boxCorners(a, b) };
}

/** {sw, ne} of the rectangle spanned by two corners given in any order. */
export function boxCorners(a, b) {
  return {
    sw: { lat: Math.min(a.lat, b.lat), lng: Math.min(a.lng, b.lng) },
    ne: { lat: Math.max(a.lat, b.lat), lng: Math.max(a.lng, b.lng) },
  };
}

/** A box moved by (dLat, dLng) degrees. */
export function movedBox(box, dLat, dLng) {
  return {
    ...box,
    sw: { lat: box.sw.lat + dLat, lng: box.sw.lng + dLng },
    ne: { lat: box.ne.lat + dLat, lng: box.ne.lng + dLng },
  };
}

/** True when a box spans no area worth sending (a click rather than a drag). */
export function isDegenerateBox(box, minDeg = 1e-9) {
  return box.ne.lat - box.sw.lat <= minDeg || box.ne.lng - box.sw.lng <= minDeg;
}

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const round = (v) => Math.round(v * 1e7) / 1e7; // ~1 cm; keeps request bodies short
const latLng = (p) => ({ lat: round(clamp(p.lat, -90, 90)), lng: round(clamp(p.lng, -180, 180)) });

/** One prompt as the API wants it (`PointIn` or `BoxIn`). */
export function toApiPrompt(p) {
  if (p.type === 'point') return { type: 'point', ...latLng(p), label: p.label };
  if (p.type === 'box') return { type: 'box', ne: latLng(p.ne), sw: latLng(p.sw) };
  throw new Error(`unknown prompt type ${p.type}`);
}

/** The request zoom: the map zoom rounded, kept inside the source's zoom range. */
export function requestZoom(mapZoom, source) {
  const z = Math.round(mapZoom);
  if (!source) return clamp(z, 0, 24);
  return clamp(z, source.min_zoom ?? 0, Math.min(source.max_zoom ?? 24, 24));
}

/**
 * The JSON body of POST /v1/segment.
 * bounds: {south, west, north, east} in degrees (the map view); zoom: map zoom; source: source object or id;
 * windowBudget: most windows the server may follow the object into (1–16); shape: a `SHAPES` key (the outline's
 * post-processing, `shapeFields`).
 */
export function segmentRequest({ bounds, zoom, source, prompts, multimask = false, windowBudget = 4, shape = 'as-is' }) {
  const src = typeof source === 'string' ? { id: source } : source;
  return {
    bbox: {
      ne: latLng({ lat: bounds.north, lng: bounds.east }),
      sw: latLng({ lat: bounds.south, lng: bounds.west }),
    },
    zoom: requestZoom(zoom, src),
    source: src.id,
    prompts: prompts.map(toApiPrompt),
    multimask: Boolean(multimask),
    window_budget: windowBudgetValue(windowBudget),
    ...shapeFields(shape),
  };
}

/**
 * The outline shapes a request can ask for: the key → the words of the control. The server's options
 * (api/models.py SegmentRequest `regularize` / `smooth`, samgis/vector/postprocess.py): `regularize` squares
 * building-like outlines (buildingregulariser), `smooth` rounds the pixel staircase of natural features
 * (smoothify); both take `true` for their defaults, and never together.
 */
export const SHAPES = {
  'as-is': 'as is',
  regularize: 'regularize (buildings)',
  smooth: 'smooth (natural features)',
};

/** A `SHAPES` key from any value ('as-is' for anything else). */
export function shapeValue(v) {
  return Object.hasOwn(SHAPES, v) ? v : 'as-is';
}

/** The request fields of a shape: {} (as is: nothing sent), {regularize: true} or {smooth: true}. */
export function shapeFields(shape) {
  const s = shapeValue(shape);
  return s === 'as-is' ? {} : { [s]: true };
}

/** A request body (of `segmentRequest` or find-core.js `findRequest`) asked with another shape. */
export function withShape(request, shape) {
  const { regularize, smooth, ...rest } = request; // eslint-disable-line no-unused-vars
  return { ...rest, ...shapeFields(shape) };
}

export const MAX_WINDOW_BUDGET = 16;

/** A window budget as the API takes it: an integer in [1, 16] (4 when not a number). */
export function windowBudgetValue(v) {
  const n = Math.round(Number(v));
  return Number.isFinite(n) ? clamp(n, 1, MAX_WINDOW_BUDGET) : 4;
}

/** Short words for a prompt, numbered from 1 as the user counts: "include point 2", "rectangle 1". */
export function describePrompt(prompts, index) {
  const p = prompts[index];
  if (!p) return `prompt ${index + 1}`;
  const kind = p.type === 'box' ? 'rectangle' : p.label ? 'include point' : 'exclude point';
  const nth = prompts.slice(0, index + 1).filter((q) => sameKind(q, p)).length;
  return `${kind} ${nth}`;
}

function sameKind(a, b) {
  return a.type === b.type && (a.type === 'box' || a.label === b.label);
}

/** "2 include points, 1 exclude point, 1 rectangle" */
export function summarizePrompts(prompts) {
  const counts = [
    ['include point', prompts.filter((p) => p.type === 'point' && p.label).length],
    ['exclude point', prompts.filter((p) => p.type === 'point' && !p.label).length],
    ['rectangle', prompts.filter((p) => p.type === 'box').length],
  ].filter(([, n]) => n > 0);
  if (!counts.length) return 'no prompts';
  return counts.map(([w, n]) => `${n} ${w}${n === 1 ? '' : 's'}`).join(', ');
}

/** Index of the prompt named by an API error field such as "prompts[2]" or "prompts.2.lat"; -1 if none. */
export function promptIndexFromField(field) {
  if (field == null) return -1;
  const m = String(field).match(/prompts(?:\[(\d+)\]|\.(\d+))/);
  return m ? Number(m[1] ?? m[2]) : -1;
}
