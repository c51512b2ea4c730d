// API failures in plain words. Pure: takes the HTTP status and the parsed body, returns a sentence.
import { describePrompt, promptIndexFromField } from './prompts.js';

/**
 * A message for a failed API call.
 * status: HTTP status; body: parsed JSON body or text (or null);
 * ctx: {prompts, source, action} — the prompts that were sent (to name the one at fault), the tile source id,
 * and what was being done ("Segmentation", "Export", "Loading tile sources").
 */
export function describeApiError(status, body, ctx = {}) {
  const action = ctx.action || 'The request';
  const detail = detailText(body, ctx.prompts);
  const src = ctx.source ? `“${ctx.source}”` : 'the tile source';
  switch (status) {
    case 400:
    case 422: {
      const field = body && typeof body === 'object' ? body.field : null;
      const i = promptIndexFromField(field);
      if (i >= 0 && /outside/i.test(detail)) {
        return `${action} failed: the ${describePrompt(ctx.prompts || [], i)} is outside the map view. ` +
          'Pan or zoom out so every prompt is visible, or remove that prompt.';
      }
      const step = /^(regularize|smooth)\b/.exec(field ?? '')?.[1];
      if (step) { // the Shape control's option (samgis/vector/postprocess.py), e.g. over its vertex budget
        return `${action} could not ${step} the outlines: ${detail.replace(/^(regularize|smooth)[\w.]*: /, '')} ` +
          'Set Shape to “as is”, or zoom in on fewer objects.';
      }
      if (field === 'zoom' || /zoom/i.test(detail)) {
        return `${action} failed at this zoom: ${detail} Zoom out, or pick another basemap.`;
      }
      return `${action} was refused: ${detail}`;
    }
    case 413:
      return `${action} is too large for the server (${detail || 'body over the limit'}). Use fewer prompts.`;
    case 502:
      return `${action} failed: the map tiles from ${src} could not be fetched. ${detail}`.trim();
    case 504:
      return `${action} failed: the tile source ${src} did not answer in time. ${detail}`.trim();
    case 503:
      return `The segmentation model is not ready: ${detail || 'it is still loading'}. ` +
        'Try again in a moment; if it persists, check the server log.';
    case 404:
      return `${action} failed: the server has no such route (${detail || 'not found'}). Is this a samgis server?`;
    default:
      if (status >= 500) return `${action} failed with a server error (HTTP ${status}): ${detail || 'no detail'}`;
      return `${action} failed (HTTP ${status}): ${detail || 'no detail'}`;
  }
}

/** A message for a request that got no answer at all (server down, network gone). */
export function describeNetworkError(err, ctx = {}) {
  const action = ctx.action || 'The request';
  if (err && err.name === 'AbortError') return `${action} was cancelled.`;
  return `${action} failed: the samgis server could not be reached (${err?.message || err}). Is it still running?`;
}

/**
 * The `detail` of an error body as one sentence-like string. Handles our `{detail, field}` and pydantic's
 * `{detail: [{loc, msg}, …]}`; for prompt fields the location is named as the user counts prompts.
 */
export function detailText(body, prompts = []) {
  if (body == null || body === '') return '';
  if (typeof body === 'string') return clip(body);
  const d = body.detail;
  if (Array.isArray(d)) {
    return d.map((e) => `${locText(e.loc, prompts)}: ${e.msg}`).join('; ');
  }
  if (typeof d === 'string') return d;
  if (d != null) return clip(JSON.stringify(d));
  return clip(JSON.stringify(body));
}

function locText(loc, prompts) {
  const parts = (Array.isArray(loc) ? loc : [loc]).filter((p) => p !== 'body');
  const i = parts.indexOf('prompts');
  if (i >= 0 && Number.isInteger(parts[i + 1])) {
    const rest = parts.slice(i + 2).filter((p) => p !== 'point' && p !== 'box');
    return [describePrompt(prompts, parts[i + 1]), ...rest].join(' ');
  }
  return parts.join('.') || 'request';
}

function clip(s, n = 300) {
  s = String(s).trim();
  return s.length > n ? `${s.slice(0, n)}…` : s;
}
