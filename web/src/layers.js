// Result layers: the history panel (show, rename, zoom to, download, delete) and the current result.
import L from 'leaflet';

import * as api from './api.js';
import {
  bestScore, defaultLayerName, exportFileName, formatArea, formatScore, scoreColor, totalArea,
} from './format.js';
import { map } from './map.js';
import { summarizePrompts } from './prompts.js';
import { $, escapeHtml, state } from './state.js';
import { clearMessage, setStatus, showMessage } from './status.js';

let layerSeq = 0;

export function addResult(fc, request, prompts, session) {
  // The previous result of the same object is superseded: keep it in the history, hidden.
  for (const l of state.layers) if (l.session === session && l.visible) setVisible(l, false);
  if (!fc.features.length) {
    state.currentId = null;
    renderLayers();
    return;
  }
  const layer = newLayer(fc, {
    source: request.source, zoom: fc.samgis?.window?.z ?? request.zoom, summary: summarizePrompts(prompts), session,
  });
  state.currentId = layer.id;
  renderLayers();
}

/**
 * Keep a FeatureCollection (lon/lat polygons, as the API answers) as a visible layer of the history, outside any
 * prompt session: it is never superseded and is not the current result. `label` names it (default: the source).
 * Returns the layer.
 */
export function addLayer(fc, { source, zoom, summary, label }) {
  const layer = newLayer(fc, { source, zoom, summary, session: null, label });
  renderLayers();
  return layer;
}

function newLayer(fc, { source, zoom, summary, session, label }) {
  layerSeq += 1;
  const layer = {
    id: layerSeq, name: defaultLayerName(label ?? source, zoom, layerSeq), fc, visible: false, session, zoom,
    source, prompts: summary, group: null,
  };
  layer.group = resultGroup(layer);
  state.layers.unshift(layer);
  setVisible(layer, true);
  return layer;
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

export function layerById(id) {
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

export function renderLayers() {
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

export function renderCurrent() {
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


export async function download(layer, format) {
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

/** The "download current result" buttons. */
export function initLayers() {
  $('dl-current-geojson').addEventListener('click', () => download(layerById(state.currentId), 'geojson'));
  $('dl-current-gpkg').addEventListener('click', () => download(layerById(state.currentId), 'gpkg'));
  renderLayers();
}
