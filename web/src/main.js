// The samgis web map: Leaflet, prompt tools, live segmentation, result layers, downloads.
import L from 'leaflet';
import 'leaflet/dist/leaflet.css';
import './style.css';

import * as api from './api.js';
import {
  bestScore, defaultLayerName, exportFileName, formatArea, formatScore, resultSummary, scoreColor,
  scoreGradientCss, totalArea,
} from './format.js';
import { formatHash, parseHash } from './hashstate.js';
import {
  boxCorners, describePrompt, isDegenerateBox, makeBox, makePoint, movedBox, segmentRequest, summarizePrompts,
} from './prompts.js';

const DEBOUNCE_MS = 300;
const MODES = {
  include: 'Click the object to include it. Drag a point to move it; right-click removes it.',
  exclude: 'Click an area to exclude from the object.',
  box: 'Drag a rectangle around the object. Drag its middle to move it, its corners to resize it.',
  delete: 'Click a point or a rectangle to remove it.',
  pan: 'Drag to pan. Click a result polygon to see its area and score.',
};

const $ = (id) => document.getElementById(id);

const state = {
  sources: [],
  source: null, // {id, min_zoom, max_zoom, tile_size, attribution, kind}
  prompts: [],
  mode: 'include',
  multimask: false,
  layers: [], // newest first: {id, name, fc, visible, session, group, zoom, source, prompts}
  currentId: null,
  session: 1,
  phase: 'idle',
  requestsStarted: 0,
  requestsDone: 0,
  lastRequest: null,
  messages: new Map(),
};

// --- map ------------------------------------------------------------------------------------------

const map = L.map('map', {
  center: [20, 0], zoom: 2, minZoom: 1, maxZoom: 22, worldCopyJump: true, doubleClickZoom: false, boxZoom: false,
});
map.attributionControl.setPrefix('<a href="https://leafletjs.com" title="A JavaScript library for interactive maps">Leaflet</a>');
map.createPane('results').style.zIndex = 410;
map.createPane('promptBoxes').style.zIndex = 450;
L.control.scale({ imperial: false }).addTo(map);

let basemap = null;
let basemapErrorShown = false;

const escapeHtml = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function setSource(src, { resegment = true } = {}) {
  if (!src) return;
  const changed = state.source?.id !== src.id;
  state.source = src;
  $('source-select').value = src.id;
  $('source-attribution').textContent = src.attribution ? `© ${src.attribution.replace(/^\(C\)\s*|^©\s*/i, '')}` : 'No attribution given.';
  if (basemap) basemap.remove();
  basemapErrorShown = false;
  clearMessage('basemap');
  const opts = {
    attribution: escapeHtml(src.attribution), minZoom: 0, maxZoom: 22,
    maxNativeZoom: src.max_zoom ?? 19, minNativeZoom: src.min_zoom ?? 0, crossOrigin: false,
  };
  if (src.tile_size && src.tile_size !== 256) Object.assign(opts, { tileSize: src.tile_size, zoomOffset: -Math.log2(src.tile_size / 256) });
  basemap = L.tileLayer(api.tileUrl(src.id), opts);
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

map.on('moveend', writeHash);
window.addEventListener('hashchange', applyHash);

// --- messages and status --------------------------------------------------------------------------

function setStatus(phase, text) {
  state.phase = phase;
  const el = $('status');
  el.dataset.phase = phase;
  el.textContent = text;
}

function showMessage(key, text, level = 'error') {
  state.messages.set(key, { text, level });
  renderMessages();
}

function clearMessage(key) {
  if (state.messages.delete(key)) renderMessages();
}

function renderMessages() {
  const ul = $('messages');
  ul.replaceChildren(...[...state.messages].map(([key, { text, level }]) => {
    const li = document.createElement('li');
    li.dataset.key = key;
    li.className = level;
    const span = document.createElement('span');
    span.textContent = text;
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'icon';
    close.title = 'Dismiss';
    close.setAttribute('aria-label', 'Dismiss message');
    close.textContent = '×';
    close.addEventListener('click', () => clearMessage(key));
    li.append(span, close);
    return li;
  }));
}

// --- modes and keyboard ---------------------------------------------------------------------------

function setMode(mode) {
  cancelBoxDraw();
  state.mode = mode;
  for (const b of document.querySelectorAll('[data-mode]')) b.setAttribute('aria-pressed', String(b.dataset.mode === mode));
  const c = map.getContainer();
  for (const m of Object.keys(MODES)) c.classList.toggle(`mode-${m}`, m === mode);
  c.classList.toggle('mode-prompting', mode !== 'pan');
  if (mode === 'box') map.dragging.disable();
  else map.dragging.enable();
  $('mode-hint').textContent = MODES[mode];
}

for (const b of document.querySelectorAll('[data-mode]')) b.addEventListener('click', () => setMode(b.dataset.mode));

document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(t.tagName))) {
    if (e.key === 'Escape') t.blur();
    return;
  }
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  const actions = {
    i: () => setMode('include'),
    e: () => setMode('exclude'),
    r: () => setMode('box'),
    d: () => setMode('delete'),
    Escape: () => setMode('pan'),
    Delete: removeLastPrompt,
    Backspace: removeLastPrompt,
    c: resetPrompts,
    m: () => setMultimask(!state.multimask),
  };
  if (actions[key]) {
    e.preventDefault();
    actions[key]();
  }
});

// --- prompts --------------------------------------------------------------------------------------

const promptLayers = new Map(); // prompt id → Leaflet layers

function addPrompt(p) {
  state.prompts.push(p);
  promptsChanged();
}

function removePrompt(id) {
  state.prompts = state.prompts.filter((p) => p.id !== id);
  promptsChanged();
}

function removeLastPrompt() {
  if (state.prompts.length) removePrompt(state.prompts[state.prompts.length - 1].id);
}

function resetPrompts() {
  state.prompts = [];
  state.session += 1;
  state.currentId = null;
  promptsChanged();
  renderLayers();
}

function setMultimask(on) {
  state.multimask = Boolean(on);
  $('multimask').checked = state.multimask;
  if (state.prompts.length) scheduleSegment();
}
$('multimask').addEventListener('change', (e) => setMultimask(e.target.checked));
$('undo-btn').addEventListener('click', removeLastPrompt);
$('reset-btn').addEventListener('click', resetPrompts);

function promptsChanged() {
  renderPrompts();
  scheduleSegment();
}

function renderPrompts() {
  for (const layers of promptLayers.values()) layers.forEach((l) => l.remove());
  promptLayers.clear();
  state.prompts.forEach((p, i) => promptLayers.set(p.id, p.type === 'point' ? pointLayers(p, i) : boxLayers(p, i)));
  $('prompt-summary').textContent = state.prompts.length
    ? `${summarizePrompts(state.prompts)}.`
    : 'No prompts';
}

function removeOnRightClickOrDelete(layer, p) {
  layer.on('contextmenu', (e) => {
    L.DomEvent.preventDefault(e.originalEvent);
    removePrompt(p.id);
  });
  layer.on('click', (e) => {
    if (state.mode === 'delete') {
      L.DomEvent.stop(e);
      removePrompt(p.id);
    }
  });
}

function pointLayers(p, i) {
  const name = describePrompt(state.prompts, i);
  const m = L.marker([p.lat, p.lng], {
    draggable: true, keyboard: false, title: `${name} (drag to move, right-click to remove)`, alt: name,
    icon: L.divIcon({
      className: `prompt-point ${p.label ? 'include' : 'exclude'}`,
      html: p.label ? '+' : '−', iconSize: [22, 22], iconAnchor: [11, 11],
    }),
  });
  m.on('dragend', () => {
    const ll = m.getLatLng().wrap();
    p.lat = ll.lat;
    p.lng = ll.lng;
    promptsChanged();
  });
  removeOnRightClickOrDelete(m, p);
  return [m.addTo(map)];
}

function boxLayers(p, i) {
  const name = describePrompt(state.prompts, i);
  const bounds = () => [[p.sw.lat, p.sw.lng], [p.ne.lat, p.ne.lng]];
  const rect = L.rectangle(bounds(), {
    pane: 'promptBoxes', className: 'prompt-box', color: '#1f5fbf', weight: 2, dashArray: '6 4', fillOpacity: 0.06,
    bubblingMouseEvents: false,
  }).addTo(map);
  rect.bindTooltip(name, { sticky: true, direction: 'top', opacity: 0.8 });
  removeOnRightClickOrDelete(rect, p);

  const corners = () => [
    [p.sw.lat, p.sw.lng], [p.sw.lat, p.ne.lng], [p.ne.lat, p.ne.lng], [p.ne.lat, p.sw.lng],
  ];
  const handles = corners().map((ll, k) => {
    const h = L.marker(ll, {
      draggable: true, keyboard: false, title: `resize ${name}`,
      icon: L.divIcon({ className: 'box-handle', iconSize: [12, 12], iconAnchor: [6, 6] }),
    }).addTo(map);
    h.on('drag', () => {
      const fixed = L.latLng(corners()[(k + 2) % 4]);
      Object.assign(p, boxCorners(fixed, h.getLatLng()));
      rect.setBounds(bounds());
    });
    h.on('dragend', () => promptsChanged());
    removeOnRightClickOrDelete(h, p);
    return h;
  });

  // Drag the rectangle's body to move it. A native listener on the path runs before Leaflet's map
  // handlers on the container, so the map does not pan meanwhile.
  let justMoved = false;
  rect.getElement()?.addEventListener('mousedown', (ev) => {
    if (ev.button !== 0 || state.mode === 'delete') return;
    ev.stopPropagation();
    ev.preventDefault();
    const start = map.mouseEventToLatLng(ev);
    const orig = { sw: { ...p.sw }, ne: { ...p.ne } };
    let moved = false;
    const onMove = (e2) => {
      const ll = map.mouseEventToLatLng(e2);
      const nb = movedBox(orig, ll.lat - start.lat, ll.lng - start.lng);
      p.sw = nb.sw;
      p.ne = nb.ne;
      rect.setBounds(bounds());
      handles.forEach((h, k) => h.setLatLng(corners()[k]));
      moved = true;
    };
    const onUp = () => {
      document.removeEventListener('mousemove', onMove);
      document.removeEventListener('mouseup', onUp);
      if (moved) {
        justMoved = true;
        setTimeout(() => { justMoved = false; }, 0);
        promptsChanged();
      }
    };
    document.addEventListener('mousemove', onMove);
    document.addEventListener('mouseup', onUp);
  });
  // A click inside a rectangle with a point tool still places a point there.
  rect.on('click', (e) => {
    if (justMoved || state.mode === 'delete') return;
    if (state.mode === 'include' || state.mode === 'exclude') addPrompt(makePoint(e.latlng.wrap().lat, e.latlng.wrap().lng, state.mode === 'include' ? 1 : 0));
  });
  return [rect, ...handles];
}

map.on('click', (e) => {
  if (state.mode !== 'include' && state.mode !== 'exclude') return;
  const ll = e.latlng.wrap();
  addPrompt(makePoint(ll.lat, ll.lng, state.mode === 'include' ? 1 : 0));
});

// Rectangle tool: press, drag, release.
let drawing = null; // {start, preview}

map.on('mousedown', (e) => {
  if (state.mode !== 'box' || e.originalEvent.button !== 0) return;
  // Not when pressing on a prompt (moving a point, a rectangle or its corner handles).
  if (e.originalEvent.target?.closest?.('.leaflet-marker-icon, .prompt-box')) return;
  L.DomEvent.preventDefault(e.originalEvent); // no text selection while dragging
  L.DomUtil.disableTextSelection();
  drawing = {
    start: e.latlng,
    preview: L.rectangle([e.latlng, e.latlng], {
      pane: 'promptBoxes', color: '#1f5fbf', weight: 2, dashArray: '4 4', fillOpacity: 0.1, interactive: false,
    }).addTo(map),
  };
});
map.on('mousemove', (e) => {
  if (drawing) drawing.preview.setBounds([drawing.start, e.latlng]);
});
function finishBoxDraw(latlng) {
  if (!drawing) return;
  const start = drawing.start;
  cancelBoxDraw();
  const box = makeBox(start.wrap(), latlng.wrap());
  if (isDegenerateBox(box) || map.latLngToContainerPoint(start).distanceTo(map.latLngToContainerPoint(latlng)) < 4) {
    $('mode-hint').textContent = 'Drag (press, move, release) to draw a rectangle.';
    return;
  }
  addPrompt(box);
}
map.on('mouseup', (e) => finishBoxDraw(e.latlng));
document.addEventListener('mouseup', (e) => {
  if (drawing) finishBoxDraw(map.mouseEventToLatLng(e));
});
function cancelBoxDraw() {
  if (!drawing) return;
  drawing.preview.remove();
  drawing = null;
  L.DomUtil.enableTextSelection();
}

// --- segmentation ---------------------------------------------------------------------------------

let timer = null;
let inflight = null;

function scheduleSegment() {
  clearTimeout(timer);
  if (!state.prompts.length) {
    inflight?.abort();
    inflight = null;
    clearMessage('segment');
    setStatus('idle', 'Add a prompt: pick a tool and click the object you want.');
    renderCurrent();
    return;
  }
  setStatus('pending', `Segmenting shortly (${summarizePrompts(state.prompts)})…`);
  timer = setTimeout(runSegment, DEBOUNCE_MS);
}

async function runSegment() {
  if (!state.source) {
    showMessage('segment', 'No basemap is selected yet, so there is nothing to segment.');
    return;
  }
  inflight?.abort();
  const ctrl = new AbortController();
  inflight = ctrl;
  const prompts = state.prompts.map((p) => structuredClone(p));
  const b = map.getBounds();
  const request = segmentRequest({
    bounds: { south: b.getSouth(), west: b.getWest(), north: b.getNorth(), east: b.getEast() },
    zoom: map.getZoom(), source: state.source, prompts, multimask: state.multimask,
  });
  state.lastRequest = request;
  state.requestsStarted += 1;
  const session = state.session;
  setStatus('busy', `Segmenting ${summarizePrompts(prompts)} on “${request.source}” at z${request.zoom}…`);
  try {
    const fc = await api.segment(request, { signal: ctrl.signal, prompts });
    if (inflight !== ctrl) return;
    clearMessage('segment');
    setStatus('ok', resultSummary(fc));
    addResult(fc, request, prompts, session);
  } catch (err) {
    if (inflight !== ctrl || err.aborted) return;
    setStatus('error', `Segmentation failed (${err.status ? `HTTP ${err.status}` : 'no answer'}); see the message below.`);
    if (err.status === 503) {
      // One message about the model, not two: the server's reason replaces the health check's.
      clearMessage('segment');
      showMessage('model', err.message);
      markModel(false, 'model not ready');
      healthTimer ??= setTimeout(watchHealth, 5000);
    } else {
      showMessage('segment', err.message);
    }
  } finally {
    if (inflight === ctrl) {
      inflight = null;
      state.requestsDone += 1;
    }
  }
}

// --- results and layers ---------------------------------------------------------------------------

let layerSeq = 0;

function addResult(fc, request, prompts, session) {
  // The previous result of the same object is superseded: keep it in the history, hidden.
  for (const l of state.layers) if (l.session === session && l.visible) setVisible(l, false);
  if (!fc.features.length) {
    state.currentId = null;
    renderLayers();
    return;
  }
  layerSeq += 1;
  const z = fc.samgis?.window?.z ?? request.zoom;
  const layer = {
    id: layerSeq, name: defaultLayerName(request.source, z, layerSeq), fc, visible: false, session, zoom: z,
    source: request.source, prompts: summarizePrompts(prompts), group: null,
  };
  layer.group = resultGroup(layer);
  state.layers.unshift(layer);
  state.currentId = layer.id;
  setVisible(layer, true);
  renderLayers();
}

function resultGroup(layer) {
  const features = [...layer.fc.features].sort((a, b) => (a.properties?.score ?? 0) - (b.properties?.score ?? 0));
  return L.geoJSON({ type: 'FeatureCollection', features }, {
    pane: 'results',
    style: (f) => {
      const c = scoreColor(f.properties?.score);
      return { color: c, weight: 2, opacity: 0.95, fillColor: c, fillOpacity: 0.35, className: 'result-polygon' };
    },
    onEachFeature: (f, lyr) => lyr.bindPopup(() => popupHtml(layer, f), { maxWidth: 280 }),
  });
}

function popupHtml(layer, f) {
  const p = f.properties || {};
  const rows = [
    ['Area', formatArea(p.area_m2)],
    ['Score', formatScore(p.score)],
    ['Mask', p.mask_index != null ? `${p.mask_index}${p.prompt_index != null ? ` (prompt group ${p.prompt_index})` : ''}` : '–'],
    ['Zoom', p.zoom != null ? `z${p.zoom}` : '–'],
    ['Source', p.source ?? layer.source],
    ['Model', p.model ?? '–'],
  ];
  return `<div class="popup"><strong>${escapeHtml(layer.name)}</strong><table>${rows
    .map(([k, v]) => `<tr><th>${k}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table></div>`;
}

function setVisible(layer, on) {
  layer.visible = on;
  if (on) layer.group.addTo(map);
  else layer.group.remove();
}

function layerById(id) {
  return state.layers.find((l) => l.id === id);
}

function deleteLayer(id) {
  const l = layerById(id);
  if (!l) return;
  l.group.remove();
  state.layers = state.layers.filter((x) => x.id !== id);
  if (state.currentId === id) state.currentId = null;
  renderLayers();
}

function layerSummary(l) {
  const n = l.fc.features.length;
  return `${n} polygon${n === 1 ? '' : 's'} · ${formatArea(totalArea(l.fc))} · score ${formatScore(bestScore(l.fc))} · z${l.zoom} · ${l.source} · ${l.prompts}`;
}

function button(text, title, onClick, cls = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.title = title;
  b.setAttribute('aria-label', title);
  if (cls) b.className = cls;
  b.addEventListener('click', onClick);
  return b;
}

function renderLayers() {
  const ul = $('layer-list');
  ul.replaceChildren(...state.layers.map((l) => {
    const li = document.createElement('li');
    li.dataset.layerId = String(l.id);
    li.classList.toggle('current', l.id === state.currentId);
    li.classList.toggle('hidden-layer', !l.visible);

    const top = document.createElement('div');
    top.className = 'layer-top';
    const cb = document.createElement('input');
    cb.type = 'checkbox';
    cb.checked = l.visible;
    cb.className = 'layer-toggle';
    cb.title = 'Show or hide this layer';
    cb.setAttribute('aria-label', `Show ${l.name}`);
    cb.addEventListener('change', () => {
      setVisible(l, cb.checked);
      li.classList.toggle('hidden-layer', !l.visible);
    });
    const name = document.createElement('input');
    name.type = 'text';
    name.className = 'layer-name';
    name.value = l.name;
    name.title = 'Layer name (used for the downloaded file and the GeoPackage layer)';
    name.setAttribute('aria-label', 'Layer name');
    name.addEventListener('change', () => {
      l.name = name.value.trim() || l.name;
      name.value = l.name;
      if (l.id === state.currentId) renderCurrent();
    });
    name.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') name.blur();
    });
    top.append(cb, name);
    if (l.id === state.currentId) {
      const badge = document.createElement('span');
      badge.className = 'badge current-badge';
      badge.textContent = 'current';
      top.append(badge);
    }

    const info = document.createElement('div');
    info.className = 'layer-info small muted';
    info.textContent = layerSummary(l);

    const actions = document.createElement('div');
    actions.className = 'layer-actions';
    actions.append(
      button('Zoom to', `Zoom to ${l.name}`, () => map.fitBounds(l.group.getBounds(), { padding: [30, 30], maxZoom: l.zoom })),
      button('GeoJSON', `Download ${l.name} as GeoJSON`, () => download(l, 'geojson'), 'dl-geojson'),
      button('GeoPackage', `Download ${l.name} as GeoPackage`, () => download(l, 'gpkg'), 'dl-gpkg'),
      button('Delete', `Delete ${l.name}`, () => deleteLayer(l.id), 'danger layer-delete'),
    );
    li.append(top, info, actions);
    return li;
  }));
  $('layers-empty').hidden = state.layers.length > 0;
  renderCurrent();
}

function renderCurrent() {
  const l = layerById(state.currentId);
  $('dl-current-geojson').disabled = !l;
  $('dl-current-gpkg').disabled = !l;
  if (l) {
    $('current-summary').textContent = `${l.name}: ${layerSummary(l)}`;
  } else if (state.prompts.length) {
    $('current-summary').textContent = state.phase === 'ok' ? 'No object found under these prompts.' : 'Waiting for a result…';
  } else {
    $('current-summary').textContent = 'Nothing yet: pick a tool and click the object you want.';
  }
}

$('dl-current-geojson').addEventListener('click', () => download(layerById(state.currentId), 'geojson'));
$('dl-current-gpkg').addEventListener('click', () => download(layerById(state.currentId), 'gpkg'));

async function download(layer, format) {
  if (!layer) return;
  const label = format === 'gpkg' ? 'GeoPackage' : 'GeoJSON';
  setStatus('busy', `Preparing ${label} of “${layer.name}”…`);
  try {
    const fc = { type: 'FeatureCollection', features: layer.fc.features };
    const blob = await api.exportLayer(fc, format, layer.name);
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = exportFileName(layer.name, format);
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    clearMessage('export');
    setStatus('ok', `Downloaded ${a.download} (${label}, ${layer.fc.features.length} feature${layer.fc.features.length === 1 ? '' : 's'}).`);
  } catch (err) {
    setStatus('error', `${label} download failed; see the message below.`);
    showMessage('export', err.message);
  }
}

// --- sources, health, start -----------------------------------------------------------------------

function fillSourceSelect(filter = '') {
  const sel = $('source-select');
  const f = filter.trim().toLowerCase();
  const groups = new Map();
  for (const s of state.sources) {
    if (f && !s.id.toLowerCase().includes(f) && !(s.attribution || '').toLowerCase().includes(f) && s.id !== state.source?.id) continue;
    const g = s.id.includes('.') ? s.id.split('.')[0] : s.kind === 'xyz' ? 'Other' : 'Local';
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(s);
  }
  const children = [...groups].map(([g, list]) => {
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

$('source-select').addEventListener('change', (e) => {
  const src = state.sources.find((s) => s.id === e.target.value);
  if (src) setSource(src);
});
$('source-filter').addEventListener('input', (e) => fillSourceSelect(e.target.value));

function markModel(ok, text) {
  const badge = $('model-badge');
  badge.textContent = text;
  badge.dataset.state = ok ? 'ok' : 'bad';
}

let healthTimer = null;

async function watchHealth() {
  clearTimeout(healthTimer);
  healthTimer = null;
  const h = await api.getHealth();
  if (h.ok) {
    markModel(true, `model ${h.model ?? 'ready'}`);
    clearMessage('model');
    return;
  }
  markModel(false, h.status === 'unreachable' ? 'server unreachable' : `model ${h.status ?? 'not ready'}`);
  showMessage('model', h.status === 'unreachable' ? h.detail
    : `The segmentation model is not ready (${h.status}): ${h.detail ?? 'no detail'}`);
  healthTimer = setTimeout(watchHealth, 5000);
}

async function start() {
  $('legend-bar').style.background = scoreGradientCss();
  setMode('include');
  renderLayers();
  watchHealth();
  const hadView = Boolean(parseHash(location.hash));
  if (hadView) {
    const v = parseHash(location.hash);
    map.setView([v.lat, v.lng], v.zoom);
  }
  try {
    const { default: def, sources } = await api.getSources();
    state.sources = sources;
    fillSourceSelect();
    const wanted = parseHash(location.hash)?.source;
    const src = sources.find((s) => s.id === wanted) || sources.find((s) => s.id === def) || sources[0];
    if (wanted && src.id !== wanted) showMessage('basemap', `The link names a basemap “${wanted}” that this server does not have; showing “${src.id}”.`, 'warning');
    setSource(src, { resegment: false });
    setStatus('idle', 'Ready. Pick a tool and click the object you want to outline.');
  } catch (err) {
    setStatus('error', 'Could not load the list of basemaps.');
    showMessage('sources', err.message);
  }
}

window.samgis = { map, state, L };
start();
