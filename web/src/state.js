// The page's shared state and two DOM helpers; every other module reads and writes this one object.

export const state = {
  sources: [],
  source: null, // what clicks segment: {id, min_zoom, max_zoom, tile_size, attribution, kind, bounds?}
  basemap: null, // the tile source shown under it (the source itself unless that is a raster)
  prompts: [],
  mode: 'include',
  multimask: false,
  windowBudget: 4, // most windows a click may follow its object into
  shape: 'as-is', // outlines' post-processing asked of the server: a prompts.js SHAPES key (shape.js)
  layers: [], // newest first: {id, name, fc, visible, session, group, zoom, source, prompts}
  currentId: null,
  session: 1,
  phase: 'idle',
  requestsStarted: 0,
  requestsDone: 0,
  lastRequest: null,
  messages: new Map(),
  // Find (find.js): the answer shown, null when none: {text, request, fc, instances, exemplars, minScore, selected}
  find: null,
  findAvailable: 'unknown', // 'ready' | 'loading' | 'unavailable' (find-core.js findAvailability)
  exemplarDrawing: false, // the model takes exemplar boxes: the "like this / not like this" box tools are on
  lastFindRequest: null,
  findsDone: 0, // finished find requests (tests wait on it)
};

export const $ = (id) => document.getElementById(id);

export const escapeHtml = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
