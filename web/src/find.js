// The Find tool: a phrase → every instance of it in the map view (POST /v1/segment with a text prompt), drawn
// on the map and listed with scores. The minimum-score slider filters them in the page, without a new request;
// the shown instances can be kept as a layer (then downloaded from the Layers panel), downloaded directly, or
// one of them refined with the prompt tools (see `refine`). With a model that takes exemplar boxes, an instance
// can also be sent back as an example or a counter-example of the phrase (`addExemplar`), and an example box can
// be drawn on the map ("like this" / "not like this" tools, X / Shift+X: tools.js draws, `addDrawnExemplar` asks),
// with the phrase or alone. Shown only when the loaded model has the `text` or the `exemplars` capability (GET
// /v1/models): the phrase box with `text`, the box tools with `exemplars`; otherwise the box says why. The logic:
// find-core.js.
import L from 'leaflet';

import * as api from './api.js';
import {
  DEFAULT_MIN_SCORE, SCORE_FLOOR, exemplarPlan, exemplarPrompt, exemplarSummary, filterInstances, findAvailability,
  findErrorMessage, findName, findRequest, findSummary, findWhat, instancesOf, keptCollection, listRows,
  phraseProblem, refineSeed, withExemplars,
} from './find-core.js';
import { formatScore, resultSummary, scoreColor } from './format.js';
import { modelNotReady } from './health.js';
import { addLayer, download } from './layers.js';
import { map } from './map.js';
import { makeBox, makePoint, withShape } from './prompts.js';
import { $, state } from './state.js';
import { clearMessage, setStatus, showMessage } from './status.js';
import { boxColour, onExemplarBox, replacePrompts, setMode } from './tools.js';

let inflight = null;
let group = null; // Leaflet layer of the shown instances
const polygons = new Map(); // instance key → Leaflet layer
let exemplarsAllowed = false; // the model takes exemplar boxes: rows offer "more / not like this"
let lastAsked = null; // {text, request, exemplars} of the latest find sent

/** Ask the server what the loaded model can do, and show the Find form or say why not. */
export async function refreshFindAvailability() {
  let av;
  try {
    av = findAvailability(await api.getModels());
  } catch (err) {
    av = { state: 'unavailable', message: `Find is off: ${err.message}` };
  }
  state.findAvailable = av.state;
  exemplarsAllowed = av.state === 'ready' && av.exemplars;
  state.exemplarDrawing = exemplarsAllowed;
  $('find-draw').hidden = !exemplarsAllowed;
  if (!exemplarsAllowed && ['example', 'counter'].includes(state.mode)) setMode('pan');
  render();
  $('find-form').hidden = av.state !== 'ready';
  $('find-phrase').hidden = !av.text; // a model of exemplar boxes alone: no phrase to type
  $('find-unavailable').hidden = !av.message;
  $('find-unavailable').textContent = av.message;
  return av;
}

/** The form: a new phrase over the current view (examples of an earlier answer are forgotten). */
function runFind() {
  const text = $('find-text').value.trim();
  const problem = phraseProblem(text);
  if (problem) {
    showMessage('find', problem, 'warning');
    $('find-text').focus();
    return;
  }
  if (!state.source) {
    showMessage('find', 'No basemap is selected yet, so there is nothing to search.');
    return;
  }
  const b = map.getBounds();
  sendFind(text, findRequest({
    bounds: { south: b.getSouth(), west: b.getWest(), north: b.getNorth(), east: b.getEast() },
    zoom: map.getZoom(), source: state.source, text, scoreThreshold: SCORE_FLOOR, shape: state.shape,
  }));
}

/**
 * POST the find `request` (for `text`, '' for exemplar boxes alone) and show its answer; `exemplars` are its
 * exemplar prompts, kept with it. `pending`: a Leaflet layer shown until the answer comes (a box just drawn).
 */
async function sendFind(text, request, exemplars = [], pending = null) {
  clearMessage('find');
  inflight?.abort();
  const ctrl = new AbortController();
  inflight = ctrl;
  state.lastFindRequest = request;
  lastAsked = { text, request, exemplars };
  $('find-btn').disabled = true;
  pending?.addTo(map);
  const what = findWhat(text, exemplars);
  setStatus('busy', `Finding ${what} in the view on “${request.source}” at z${request.zoom}…`);
  try {
    const fc = await api.find(request, { signal: ctrl.signal });
    if (inflight !== ctrl) return;
    showAnswer(text, request, fc, exemplars);
    const n = fc.features.length;
    const rest = resultSummary(fc).replace('to fit the prompts', 'to fit the view')
      .split(' · ').slice(n ? 2 : 1); // the window, cache, post-processing and timings
    setStatus('ok', [`Find ${what}: ${n ? `${n} instance${n === 1 ? '' : 's'}` : 'none found'}`, ...rest].join(' · '));
  } catch (err) {
    if (inflight !== ctrl || err.aborted) return;
    setStatus('error', `Find failed (${err.status ? `HTTP ${err.status}` : 'no answer'}); see the message below.`);
    if (err.status === 503) modelNotReady(err.message);
    else showMessage('find', findErrorMessage(err, text));
  } finally {
    pending?.remove();
    if (inflight === ctrl) {
      inflight = null;
      $('find-btn').disabled = false;
      state.findsDone += 1;
    }
  }
}

/**
 * An exemplar box drawn on the map (tools.js, "like this" / "not like this"): find again over the shown answer's
 * area with it, or search the view for the phrase box's phrase (or things like the box alone), as find-core.js
 * `exemplarPlan` decides. box: {sw, ne} degrees; label: 1 = example, 0 = counter-example.
 */
function addDrawnExemplar(box, label) {
  if (!state.source) {
    showMessage('find', 'No basemap is selected yet, so there is nothing to search.');
    return;
  }
  const b = map.getBounds();
  const plan = exemplarPlan({
    shown: state.find, phrase: $('find-text').value, box, label,
    view: {
      bounds: { south: b.getSouth(), west: b.getWest(), north: b.getNorth(), east: b.getEast() },
      zoom: map.getZoom(), source: state.source, scoreThreshold: SCORE_FLOOR, shape: state.shape,
    },
  });
  if (plan.problem) {
    showMessage('find', plan.problem, 'warning');
    return;
  }
  const ex = plan.exemplars[plan.exemplars.length - 1];
  sendFind(plan.text, plan.request, plan.exemplars, exemplarLayer(ex, 'exemplar-box pending'));
}

/** The find under way, else the answer shown, asked again with the current shape (the Shape control changed). */
export function refindShown() {
  const a = inflight ? lastAsked : state.find;
  if (a) sendFind(a.text, withShape(a.request, state.shape), a.exemplars);
}

/** A dashed rectangle of an exemplar prompt ({ne, sw, label}) in the found pane: green like, red not like. */
function exemplarLayer(ex, className = 'exemplar-box') {
  return L.rectangle([[ex.sw.lat, ex.sw.lng], [ex.ne.lat, ex.ne.lng]], {
    pane: 'found', color: boxColour(ex.label ? 'example' : 'counter'), weight: 2, dashArray: '6 4', fill: false,
    interactive: false, className: `${className} ${ex.label ? 'like' : 'unlike'}`,
  });
}

/**
 * Find the same phrase over the same area again, with one more exemplar: the instance `key` as an example
 * (label 1, "more like this") or a counter-example (label 0, "not like this"). Needs the `exemplars` capability.
 */
function addExemplar(key, label) {
  const f = state.find;
  const inst = f?.instances.find((i) => i.key === key);
  const ex = inst && exemplarPrompt(inst.feature, f.request.bbox, label);
  if (!ex) return;
  const exemplars = [...f.exemplars, ex];
  sendFind(f.text, withExemplars(f.request, exemplars), exemplars);
}

function showAnswer(text, request, fc, exemplars) {
  clearAnswer();
  const instances = instancesOf(fc);
  state.find = { text, request, fc, instances, exemplars, minScore: minScore(), selected: null };
  group = L.layerGroup().addTo(map);
  for (const inst of instances) {
    const c = scoreColor(inst.score);
    const lyr = L.geoJSON(inst.feature, {
      pane: 'found',
      style: { color: c, weight: 2, opacity: 1, fillColor: c, fillOpacity: 0.25, dashArray: '5 3', className: 'found-polygon' },
    });
    lyr.on('click', (e) => {
      if (state.mode !== 'pan') return; // with a prompt tool the click places a prompt (CSS lets it through)
      L.DomEvent.stop(e);
      select(inst.key);
    });
    lyr.bindTooltip(`#${inst.instance + 1} · score ${formatScore(inst.score)}`, { sticky: true, opacity: 0.85 });
    polygons.set(inst.key, lyr);
  }
  for (const ex of exemplars) group.addLayer(exemplarLayer(ex));
  render();
}

function clearAnswer() {
  group?.remove();
  group = null;
  polygons.clear();
  state.find = null;
  render();
}

const minScore = () => Number($('find-score').value);

/** The instances that pass the slider. */
function shown() {
  return state.find ? filterInstances(state.find.instances, state.find.minScore) : [];
}

/** Draw the shown instances, list them, and enable the actions: runs on every answer and slider move. */
function render() {
  const f = state.find;
  $('find-score-value').textContent = formatScore(minScore());
  const list = shown();
  const keys = new Set(list.map((i) => i.key));
  for (const [key, lyr] of polygons) {
    const on = keys.has(key);
    if (on && !group.hasLayer(lyr)) group.addLayer(lyr);
    if (!on && group.hasLayer(lyr)) group.removeLayer(lyr);
    lyr.setStyle({ weight: f?.selected === key ? 4 : 2, fillOpacity: f?.selected === key ? 0.45 : 0.25 });
  }
  $('find-summary').textContent = f ? findSummary(f.text, f.instances.length, list.length, f.minScore) : '';
  $('find-list').replaceChildren(...listRows(list).map((row) => {
    const li = document.createElement('li');
    li.dataset.key = String(row.key);
    li.classList.toggle('selected', f.selected === row.key);
    const pick = document.createElement('button');
    pick.type = 'button';
    pick.className = 'find-pick';
    pick.title = `${row.title}. Show it on the map`;
    pick.setAttribute('aria-label', `Show ${row.title}`);
    pick.setAttribute('aria-pressed', String(f.selected === row.key));
    const sw = document.createElement('span');
    sw.className = 'swatch';
    sw.style.background = scoreColor(Number(row.score));
    pick.append(sw, [row.label, `score ${row.score}`, row.area, row.edge].filter(Boolean).join(' · '));
    pick.addEventListener('click', () => select(row.key, { zoom: true }));
    const refineBtn = rowButton('Refine', 'find-refine', `Refine ${row.label} with include / exclude points`, () => refine(row.key));
    li.append(pick, refineBtn);
    if (exemplarsAllowed) {
      li.append(
        rowButton('+', 'find-more', `More like ${row.label}: find again with it as an example`, () => addExemplar(row.key, 1)),
        rowButton('−', 'find-less', `Not like ${row.label}: find again with it as a counter-example`, () => addExemplar(row.key, 0)),
      );
    }
    return li;
  }));
  const ex = f?.exemplars?.length ? exemplarSummary(f.exemplars) : '';
  $('find-exemplars').hidden = !ex;
  $('find-exemplars-text').textContent = ex ? `Found with ${ex}.` : '';
  $('find-forget').textContent = f && !f.text ? 'Clear examples' : 'Forget examples';
  for (const id of ['find-keep', 'find-dl-geojson', 'find-dl-gpkg']) $(id).disabled = !list.length;
  $('find-clear').disabled = !f;
}

function rowButton(text, className, label, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = className;
  b.textContent = text;
  b.title = label;
  b.setAttribute('aria-label', label);
  b.addEventListener('click', onClick);
  return b;
}

function select(key, { zoom = false } = {}) {
  if (!state.find) return;
  state.find.selected = key;
  render();
  const lyr = polygons.get(key);
  if (zoom && lyr) map.fitBounds(lyr.getBounds(), { padding: [40, 40], maxZoom: map.getZoom(), animate: false });
  document.querySelector(`#find-list li[data-key="${key}"] .find-pick`)?.focus();
}

/**
 * Refine one instance with the prompt tools: the view zooms to it (as close as the source allows, with a margin),
 * the prompts are replaced by a rectangle around it and an include point inside it (find-core.js `refineSeed`) —
 * a new object, segmented at once at that zoom, which shows in "Current result" and the Layers history — and the
 * include tool is picked, so every further click adds an include point (E: exclude points, R: rectangle) and
 * segments again. The found instances stay on the map until cleared.
 */
function refine(key) {
  const inst = state.find?.instances.find((i) => i.key === key);
  if (!inst) return;
  state.find.selected = key;
  const lyr = polygons.get(key);
  const maxZoom = Math.min(state.source?.max_zoom ?? 19, 19);
  if (lyr) map.fitBounds(lyr.getBounds(), { padding: [60, 60], maxZoom, animate: false });
  const b = map.getBounds();
  const seed = refineSeed(inst.feature, { south: b.getSouth(), west: b.getWest(), north: b.getNorth(), east: b.getEast() });
  if (!seed) {
    showMessage('find', `Instance #${inst.instance + 1} has no polygon to refine.`);
    return;
  }
  render();
  setMode('include');
  replacePrompts([makeBox(seed.box.sw, seed.box.ne), makePoint(seed.point.lat, seed.point.lng, 1)]);
}

function keptName() {
  const f = state.find;
  return {
    label: `find ${findName(f.text)}`,
    summary: `find ${f.text ? `“${f.text}”` : 'like your examples'} · score ≥ ${formatScore(f.minScore)}`,
  };
}

function keep() {
  const f = state.find;
  const list = shown();
  if (!f || !list.length) return;
  const { label, summary } = keptName();
  const layer = addLayer(keptCollection(list), {
    source: f.request.source, zoom: f.fc.samgis?.window?.z ?? f.request.zoom, summary, label,
  });
  setStatus('ok', `Kept ${list.length} ${f.text ? `“${f.text}” ` : ''}instance${list.length === 1 ? '' : 's'} as the layer “${layer.name}”.`);
}

function downloadShown(format) {
  const f = state.find;
  const list = shown();
  if (!f || !list.length) return;
  const z = f.fc.samgis?.window?.z ?? f.request.zoom;
  const name = `samgis_find-${findName(f.text)}_z${z}`.replace(/[^A-Za-z0-9_-]+/g, '-');
  download({ name, fc: keptCollection(list) }, format);
}

/** F (outside text fields) puts the cursor in the phrase box when Find is available. */
function onKeyDown(e) {
  if (e.key.toLowerCase() !== 'f' || e.ctrlKey || e.metaKey || e.altKey || $('find-form').hidden || $('find-phrase').hidden) {
    return;
  }
  const t = e.target;
  if (t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(t.tagName))) return;
  e.preventDefault();
  $('find-text').focus();
  $('find-text').select();
}

/** Wire the Find form (after `initMap`); its availability comes from `refreshFindAvailability`. */
export function initFind() {
  document.addEventListener('keydown', onKeyDown);
  const slider = $('find-score');
  slider.min = String(SCORE_FLOOR);
  slider.value = String(DEFAULT_MIN_SCORE);
  $('find-form').addEventListener('submit', (e) => {
    e.preventDefault();
    runFind();
  });
  slider.addEventListener('input', () => {
    if (state.find) state.find.minScore = minScore();
    render();
  });
  $('find-keep').addEventListener('click', keep);
  $('find-dl-geojson').addEventListener('click', () => downloadShown('geojson'));
  $('find-dl-gpkg').addEventListener('click', () => downloadShown('gpkg'));
  $('find-forget').addEventListener('click', () => {
    const f = state.find;
    if (!f?.exemplars.length) return;
    if (f.text) sendFind(f.text, withExemplars(f.request, []), []);
    else clearAnswer(); // exemplar boxes alone: nothing is left to ask
  });
  onExemplarBox(addDrawnExemplar);
  // Picking a box tool puts the keyboard on the map: arrows pan, Enter draws a box at its middle (tools.js).
  for (const b of document.querySelectorAll('#find-draw [data-mode]')) {
    b.addEventListener('click', () => map.getContainer().focus({ preventScroll: true }));
  }
  $('find-clear').addEventListener('click', () => {
    inflight?.abort();
    clearAnswer();
    clearMessage('find');
  });
  render();
}
