// The source picker, the basemap tile layer (with a warning when its tiles fail) and the view in the URL hash.
import L from 'leaflet';

import * as api from './api.js';
import { formatHash, parseHash } from './hashstate.js';
import { map } from './map.js';
import { scheduleSegment } from './segmenter.js';
import { attributionText, groupSources, tileLayerOptions } from './sources.js';
import { $, escapeHtml, state } from './state.js';
import { clearMessage, showMessage } from './status.js';

let basemap = null;
let basemapErrorShown = false;

export function setSource(src, { resegment = true } = {}) {
  if (!src) return;
  const changed = state.source?.id !== src.id;
  state.source = src;
  $('source-select').value = src.id;
  $('source-attribution').textContent = attributionText(src);
  if (basemap) basemap.remove();
  basemapErrorShown = false;
  clearMessage('basemap');
  basemap = L.tileLayer(api.tileUrl(src.id), tileLayerOptions(src, escapeHtml(src.attribution)));
  basemap.on('tileerror', onTileError);
  basemap.addTo(map);
  writeHash();
  if (changed && resegment && state.prompts.length) scheduleSegment();
}

async function onTileError(e) {
  if (basemapErrorShown) return;
  basemapErrorShown = true;
  const id = state.source.id;
  const { z, x, y } = e.coords;
  const why = await api.tileProblem(id, z, x, y);
  if (state.source.id === id) {
    showMessage('basemap', why || `Some basemap tiles of “${id}” did not load (z${z}).`, 'warning');
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
    if (src) setSource(src);
  });
  $('source-filter').addEventListener('input', (e) => fillSourceSelect(e.target.value));

  const v = parseHash(location.hash);
  if (v) map.setView([v.lat, v.lng], v.zoom);
  const { default: def, sources } = await api.getSources();
  state.sources = sources;
  fillSourceSelect();
  const wanted = parseHash(location.hash)?.source;
  const src = sources.find((s) => s.id === wanted) || sources.find((s) => s.id === def) || sources[0];
  if (wanted && src.id !== wanted) showMessage('basemap', `The link names a basemap “${wanted}” that this server does not have; showing “${src.id}”.`, 'warning');
  setSource(src, { resegment: false });
}
