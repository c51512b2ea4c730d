// Watches /health: the model badge and message, re-checked every 5 s until the model is ready.
import * as api from './api.js';
import { clearMessage, markModel, showMessage } from './status.js';

const RECHECK_MS = 5000;
let healthTimer = null;
const readyListeners = [];

/** Call `fn()` each time a health check finds the model ready (e.g. to ask what it can do). */
export function onModelReady(fn) {
  readyListeners.push(fn);
}

export async function watchHealth() {
  clearTimeout(healthTimer);
  healthTimer = null;
  const h = await api.getHealth();
  if (h.ok) {
    markModel(true, `model ${h.model ?? 'ready'}`);
    clearMessage('model');
    for (const fn of readyListeners) fn();
    return;
  }
  markModel(false, h.status === 'unreachable' ? 'server unreachable' : `model ${h.status ?? 'not ready'}`);
  showMessage('model', h.status === 'unreachable' ? h.detail
    : `The segmentation model is not ready (${h.status}): ${h.detail ?? 'no detail'}`);
  healthTimer = setTimeout(watchHealth, RECHECK_MS);
}

/** The server said the model is not ready (a 503): say so, and re-check health unless already scheduled. */
export function modelNotReady(message) {
  clearMessage('segment');
  showMessage('model', message);
  markModel(false, 'model not ready');
  healthTimer ??= setTimeout(watchHealth, RECHECK_MS);
}
