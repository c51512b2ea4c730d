// The prompt tools: modes and keyboard shortcuts, include / exclude points and rectangles drawn, moved and
// removed on the map. Every change of the prompts schedules a segmentation. Two more modes draw exemplar boxes for
// Find ("like this" / "not like this"): the box goes to the handler find.js registers (`onExemplarBox`), not to the
// prompts; they are on only while `state.exemplarDrawing` says the model takes exemplar boxes.
import L from 'leaflet';

import { centreBox } from './find-core.js';
import { renderLayers } from './layers.js';
import { map } from './map.js';
import {
  boxCorners, describePrompt, isDegenerateBox, makeBox, makePoint, movedBox, summarizePrompts, windowBudgetValue,
} from './prompts.js';
import { scheduleSegment } from './segmenter.js';
import { $, state } from './state.js';

const MODES = {
  include: 'Click the object to include it. Drag a point to move it; right-click removes it.',
  exclude: 'Click an area to exclude from the object.',
  box: 'Drag a rectangle around the object. Drag its middle to move it, its corners to resize it.',
  delete: 'Click a point or a rectangle to remove it.',
  pan: 'Drag to pan. Click a result polygon to see its area and score.',
  example: 'Drag a box on the map around one example of what to find (Enter: a box at the middle of the map). Esc stops.',
  counter: 'Drag a box on the map around one thing not to find (Enter: a box at the middle of the map). Esc stops.',
};
const EXEMPLAR_LABELS = { example: 1, counter: 0 }; // exemplar-drawing mode → label of its boxes
const isExemplarMode = (mode) => Object.hasOwn(EXEMPLAR_LABELS, mode);
const boxDrawing = (mode) => mode === 'box' || isExemplarMode(mode);
let exemplarHandler = null;

/** `fn(box, label)` gets each exemplar box drawn ({sw, ne} degrees; label 1 = like this, 0 = not like this). */
export function onExemplarBox(fn) {
  exemplarHandler = fn;
}

// --- modes and keyboard ---------------------------------------------------------------------------

export function setMode(mode) {
  cancelBoxDraw();
  if (isExemplarMode(mode) && !state.exemplarDrawing) mode = 'pan';
  state.mode = mode;
  for (const b of document.querySelectorAll('[data-mode]')) b.setAttribute('aria-pressed', String(b.dataset.mode === mode));
  const c = map.getContainer();
  for (const m of Object.keys(MODES)) c.classList.toggle(`mode-${m}`, m === mode);
  c.classList.toggle('mode-prompting', mode !== 'pan');
  if (boxDrawing(mode)) map.dragging.disable();
  else map.dragging.enable();
  $('mode-hint').textContent = MODES[mode];
  $('find-draw-hint').textContent = isExemplarMode(mode) ? MODES[mode] : ''; // next to the box tools too
}

function onKeyDown(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(t.tagName))) {
    if (e.key === 'Escape') t.blur();
    return;
  }
  if (e.key === 'Enter' && isExemplarMode(state.mode) && !(t instanceof Element && t.closest('button, a'))) {
    e.preventDefault();
    exemplarAtCentre();
    return;
  }
  if (e.key.toLowerCase() === 'x' && state.exemplarDrawing) {
    e.preventDefault();
    setMode(e.shiftKey ? 'counter' : 'example');
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
}

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
  replacePrompts([]);
}

/** Start a new object with `prompts` (made by prompts.js) in place of the current ones, and segment them. */
export function replacePrompts(prompts) {
  state.prompts = [...prompts];
  state.session += 1;
  state.currentId = null;
  promptsChanged();
  renderLayers();
}

export function setMultimask(on) {
  state.multimask = Boolean(on);
  $('multimask').checked = state.multimask;
  if (state.prompts.length) scheduleSegment();
}

export function setWindowBudget(v) {
  state.windowBudget = windowBudgetValue(v);
  $('window-budget').value = String(state.windowBudget);
  if (state.prompts.length) scheduleSegment();
}

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
    if (ev.button !== 0 || state.mode === 'delete' || isExemplarMode(state.mode)) return;
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

function onMapClick(e) {
  if (state.mode !== 'include' && state.mode !== 'exclude') return;
  const ll = e.latlng.wrap();
  addPrompt(makePoint(ll.lat, ll.lng, state.mode === 'include' ? 1 : 0));
}

// Rectangle tool: press, drag, release.
let drawing = null; // {start, preview}

/** The colour of a box drawn in `mode`: prompts blue, examples green, counter-examples red. */
export function boxColour(mode) {
  return mode === 'example' ? '#1a9850' : mode === 'counter' ? '#d73027' : '#1f5fbf';
}

function onMapMouseDown(e) {
  if (!boxDrawing(state.mode) || e.originalEvent.button !== 0) return;
  // Not when pressing on a prompt (moving a point, a rectangle or its corner handles) with the rectangle tool.
  if (state.mode === 'box' && e.originalEvent.target?.closest?.('.leaflet-marker-icon, .prompt-box')) return;
  L.DomEvent.preventDefault(e.originalEvent); // no text selection while dragging
  L.DomUtil.disableTextSelection();
  drawing = {
    start: e.latlng,
    mode: state.mode,
    preview: L.rectangle([e.latlng, e.latlng], {
      pane: 'promptBoxes', color: boxColour(state.mode), weight: 2, dashArray: '4 4', fillOpacity: 0.1, interactive: false,
    }).addTo(map),
  };
}
function finishBoxDraw(latlng) {
  if (!drawing) return;
  const { start, mode } = drawing;
  cancelBoxDraw();
  const box = makeBox(start.wrap(), latlng.wrap());
  if (isDegenerateBox(box) || map.latLngToContainerPoint(start).distanceTo(map.latLngToContainerPoint(latlng)) < 4) {
    const hint = `Drag (press, move, release) to draw a ${isExemplarMode(mode) ? 'box' : 'rectangle'}.`;
    $('mode-hint').textContent = hint;
    if (isExemplarMode(mode)) $('find-draw-hint').textContent = hint;
    return;
  }
  if (isExemplarMode(mode)) exemplarHandler?.({ sw: box.sw, ne: box.ne }, EXEMPLAR_LABELS[mode]);
  else addPrompt(box);
}

/** The keyboard's exemplar box: `centreBox` of the view, in the current exemplar mode. */
function exemplarAtCentre() {
  const b = map.getBounds();
  exemplarHandler?.(centreBox({ south: b.getSouth(), west: b.getWest(), north: b.getNorth(), east: b.getEast() }),
    EXEMPLAR_LABELS[state.mode]);
}
function cancelBoxDraw() {
  if (!drawing) return;
  drawing.preview.remove();
  drawing = null;
  L.DomUtil.enableTextSelection();
}

/** Wire the tool buttons, the keyboard shortcuts and the map's pointer events (once, after `initMap`). */
export function initTools() {
  for (const b of document.querySelectorAll('[data-mode]')) b.addEventListener('click', () => setMode(b.dataset.mode));
  document.addEventListener('keydown', onKeyDown);
  $('multimask').addEventListener('change', (e) => setMultimask(e.target.checked));
  $('window-budget').addEventListener('change', (e) => setWindowBudget(e.target.value));
  $('undo-btn').addEventListener('click', removeLastPrompt);
  $('reset-btn').addEventListener('click', resetPrompts);
  map.on('click', onMapClick);
  map.on('mousedown', onMapMouseDown);
  map.on('mousemove', (e) => {
    if (drawing) drawing.preview.setBounds([drawing.start, e.latlng]);
  });
  map.on('mouseup', (e) => finishBoxDraw(e.latlng));
  document.addEventListener('mouseup', (e) => {
    if (drawing) finishBoxDraw(map.mouseEventToLatLng(e));
  });
}
