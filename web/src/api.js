// Thin fetch wrappers around the samgis HTTP API. Every failure becomes an ApiError with a plain message.
import { describeApiError, describeNetworkError } from './errors.js';

export class ApiError extends Error {
  constructor(message, { status = 0, body = null, aborted = false } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
    this.aborted = aborted;
  }
}

async function call(url, init, ctx) {
  let res;
  try {
    res = await fetch(url, init);
  } catch (err) {
    throw new ApiError(describeNetworkError(err, ctx), { aborted: err?.name === 'AbortError' });
  }
  if (!res.ok) {
    const text = await res.text().catch(() => '');
    let body = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* not JSON: keep the text */
    }
    throw new ApiError(describeApiError(res.status, body, ctx), { status: res.status, body });
  }
  return res;
}

const jsonPost = (body, signal) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
  signal,
});

/** GET /v1/sources → {default, sources: [{id, kind, min_zoom, max_zoom, tile_size, attribution}]} */
export async function getSources() {
  const res = await call('v1/sources', {}, { action: 'Loading the list of basemaps' });
  return res.json();
}

/** GET /health → {ok, status, detail, model} (never throws for a 503: that is an answer). */
export async function getHealth() {
  try {
    const res = await fetch('health');
    const body = await res.json().catch(() => ({}));
    return { ok: res.ok, ...body };
  } catch (err) {
    return { ok: false, status: 'unreachable', detail: describeNetworkError(err, { action: 'Checking the server' }) };
  }
}

/** POST /v1/segment → FeatureCollection with `samgis` metadata. */
export async function segment(request, { signal, prompts } = {}) {
  const res = await call('v1/segment', jsonPost(request, signal),
    { action: 'Segmentation', prompts, source: request.source });
  return res.json();
}

/** GET /v1/models → {loaded: {id, capabilities: {text, exemplars, …}, …} | null, status, …} */
export async function getModels() {
  const res = await call('v1/models', {}, { action: 'Asking the server about its model' });
  return res.json();
}

/** POST /v1/segment with a text prompt (find-core.js `findRequest`) → FeatureCollection, one feature per instance. */
export async function find(request, { signal } = {}) {
  const res = await call('v1/segment', jsonPost(request, signal), { action: 'Find', source: request.source });
  return res.json();
}

/** POST /v1/export?format=…&name=… → Blob of the file. */
export async function exportLayer(fc, format, name) {
  const q = new URLSearchParams({ format, name });
  const res = await call(`v1/export?${q}`, jsonPost(fc), { action: `Export to ${format === 'gpkg' ? 'GeoPackage' : 'GeoJSON'}` });
  return res.blob();
}

/** A tile URL template of the server's tile proxy, for Leaflet. */
export function tileUrl(sourceId) {
  return `v1/tiles/${encodeURIComponent(sourceId)}/{z}/{x}/{y}.png`;
}

/** Why a tile of the proxy failed: the server's detail for one tile, or '' when it loads. */
export async function tileProblem(sourceId, z, x, y) {
  try {
    await call(tileUrl(sourceId).replace('{z}', z).replace('{x}', x).replace('{y}', y), {},
      { action: 'Loading basemap tiles', source: sourceId });
    return '';
  } catch (err) {
    return err.message;
  }
}
