// The "Shape" control: how the server post-processes the outlines of every answer — as is, regularized
// (building-like: straight edges, right angles) or smoothed (natural features: no pixel staircase). Sent with
// clicks, rectangles and Find (prompts.js `shapeFields`); a change asks the shown prompts and find answer again.
import { refindShown } from './find.js';
import { SHAPES, shapeValue } from './prompts.js';
import { scheduleSegment } from './segmenter.js';
import { $, state } from './state.js';

/** Use `shape` (a prompts.js `SHAPES` key) from now on, and segment / find the shown prompts again with it. */
export function setShape(shape) {
  const s = shapeValue(shape);
  const changed = s !== state.shape;
  state.shape = s;
  $('shape').value = s;
  if (!changed) return;
  if (state.prompts.length) scheduleSegment();
  refindShown();
}

/** Fill and wire the Shape control (once, after `initMap`). */
export function initShape() {
  const select = $('shape');
  select.replaceChildren(...Object.entries(SHAPES).map(([value, words]) => new Option(words, value)));
  select.value = state.shape;
  select.addEventListener('change', () => setShape(select.value));
}
