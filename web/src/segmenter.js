// Live segmentation: prompts changed → debounce → POST /v1/segment for the view → a result layer.
import * as api from './api.js';
import { modelNotReady } from './health.js';
import { addResult, renderCurrent } from './layers.js';
import { map } from './map.js';
import { segmentRequest, summarizePrompts } from './prompts.js';
import { followingText, resultSummary } from './format.js';
import { state } from './state.js';
import { clearMessage, setStatus, showMessage } from './status.js';

const DEBOUNCE_MS = 300;
let timer = null;
let inflight = null;

export function scheduleSegment() {
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
    windowBudget: state.windowBudget, shape: state.shape,
  });
  state.lastRequest = request;
  state.requestsStarted += 1;
  const session = state.session;
  const following = followingText(request.window_budget);
  setStatus('busy', `Segmenting ${summarizePrompts(prompts)} on “${request.source}” at z${request.zoom}…`
    + (following ? ` (${following})` : ''));
  try {
    const fc = await api.segment(request, { signal: ctrl.signal, prompts });
    if (inflight !== ctrl) return;
    clearMessage('segment');
    setStatus('ok', resultSummary(fc));
    addResult(fc, request, prompts, session);
  } catch (err) {
    if (inflight !== ctrl || err.aborted) return;
    setStatus('error', `Segmentation failed (${err.status ? `HTTP ${err.status}` : 'no answer'}); see the message below.`);
    // One message about the model, not two: the server's reason replaces the health check's.
    if (err.status === 503) modelNotReady(err.message);
    else showMessage('segment', err.message);
  } finally {
    if (inflight === ctrl) {
      inflight = null;
      state.requestsDone += 1;
    }
  }
}
