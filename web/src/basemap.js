// The source picker, the basemap tile layer (with a warning when its tiles fail), a raster source's display tiles
// over the basemap, and the view in the URL hash. `state.source` is what clicks segment (a basemap or a raster);
// `state.basemap` is the tile source shown under it (never a raster).
import L from 'leaflet';

import * as api from './api.js';
import { formatHash, parseHash } from './hashstate.js';
import { map } from './map.js';
import { scheduleSegment } from './segmenter.js';
import {
  attributionText, basemapFor, extentLatLngBounds, groupSources, isRaster, tileLayerOptions,
} from './sources.js';
import { $, escapeHtml, state } from './state.js';
import { clearMessage, showMessage } from './status.js';

let basemap = null;
let rasterLayer = null;
let defaultId = null;
const errorShown = new Set(); // sources whose tile failure was already reported

/** Show `src` and segment it from now on. A raster goes over the basemap (the current one, or the default) and,
 * with `fit`, the view goes to its extent; any other source becomes the basemap. */
export function setSource(src, { resegment = true, fit = false } = {}) {
  if (!src) return;
  const changed = state.source?.id !== src.id;
  state.source = src;
  $('source-select').value = src.id;
  $('source-attribution').textContent = attributionText(src);
  clearMessage('basemap');
  if (isRaster(src)) {
    const under = basemapFor(state.sources, defaultId, state.basemap);
    if (under && under.id !== state.basemap?.id) showBasemap(under);
    showRaster(src);
    if (under) $('source-attribution').textContent += ` Raster over the basemap “${under.id}”.`;
    const extent = extentLatLngBounds(src);
    if (fit && extent) map.fitBounds(extent);
  } else {
    showRaster(null);
    showBasemap(src);
  }
  writeHash();
  if (changed && resegment && state.prompts.length) scheduleSegment();
}

function tileLayer(src, opts = {}) {
  errorShown.delete(src.id);
  const layer = L.tileLayer(api.tileUrl(src.id), { ...tileLayerOptions(src, escapeHtml(src.attribution)), ...opts });
  layer.on('tileerror', (e) => onTileError(src.id, e));
  return layer.addTo(map);
}

function showBasemap(src) {
  basemap?.remove();
  state.basemap = src;
  basemap = tileLayer(src);
}

function showRaster(src) {
  rasterLayer?.remove();
  const extent = src && extentLatLngBounds(src);
  // Over the basemap; no tile requests outside the raster's extent (they would be all transparent).
  rasterLayer = src ? tileLayer(src, { zIndex: 10, className: 'raster-layer', ...(extent ? { bounds: extent } : {}) }) : null;
}

async function onTileError(id, e) {
  if (errorShown.has(id)) return;
  errorShown.add(id);
  const { z, x, y } = e.coords;
  const why = await api.tileProblem(id, z, x, y);
  if (state.source?.id === id || state.basemap?.id === id) {
    showMessage('basemap', why || `Some tiles of “${id}” did not load (z${z}).`, 'warning');
  }
}

// --- URL hash -------------------------------------------------------------------------------------

function writeHash() {
  const c = map.getCenter();
  const hash = formatHash({ zoom: map.getZoom(), lat: c.lat, lng: c.lng, source: state.source?.id });
  if (location.hash !== hash) history.replaceState(null, '', hash);
}

function applyHash() {
  const v = parseHash(location.hash);
  if (!v) return false;
  map.setView([v.lat, v.lng], v.zoom);
  const src = v.source && state.sources.find((s) => s.id === v.source);
  if (src) setSource(src);
  return true;
}

// --- the picker -----------------------------------------------------------------------------------

export function fillSourceSelect(filter = '') {
  const sel = $('source-select');
  const children = [...groupSources(state.sources, filter, state.source?.id)].map(([g, list]) => {
    const og = document.createElement('optgroup');
    og.label = g;
    og.append(...list.map((s) => {
      const o = document.createElement('option');
      o.value = s.id;
      o.textContent = `${s.id}  (z${s.min_zoom}–${s.max_zoom})`;
      o.title = s.attribution || '';
      return o;
    }));
    return og;
  });
  sel.replaceChildren(...children);
  if (state.source) sel.value = state.source.id;
}

/** Wire the picker, the filter and the hash; then load the sources and show the linked (or default) one. */
export async function initSources() {
  map.on('moveend', writeHash);
  window.addEventListener('hashchange', applyHash);
  $('source-select').addEventListener('change', (e) => {
    const src = state.sources.find((s) => s.id === e.target.value);
    if (src) setSource(src, { fit: true });
  });
  $('source-filter').addEventListener('input', (e) => fillSourceSelect(e.target.value));

  const v = parseHash(location.hash);
  if (v) map.setView([v.lat, v.lng], v.zoom);
  const { default: def, sources } = await api.getSources();
  state.sources = sources;
  defaultId = def;
  fillSourceSelect();
  const wanted = parseHash(location.hash)?.source;
  const src = sources.find((s) => s.id === wanted) || sources.find((s) => s.id === def) || sources[0];
  if (wanted && src.id !== wanted) showMessage('basemap', `The link names a basemap “${wanted}” that this server does not have; showing “${src.id}”.`, 'warning');
  setSource(src, { resegment: false, fit: !v });
}
