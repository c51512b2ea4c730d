// Words and colours for results: areas, scores, timings, layer and file names. Pure functions.

const nf = (digits) => new Intl.NumberFormat('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/**
 * An area in square metres in the unit a mapper would use:
 * under 1 ha in m², under 1 km² in hectares, else km².
 */
export function formatArea(m2) {
  if (m2 == null || !Number.isFinite(m2) || m2 < 0) return '–';
  if (m2 < 10) return `${nf(1).format(m2)} m²`;
  if (m2 < 10_000) return `${nf(0).format(m2)} m²`;
  if (m2 < 1_000_000) return `${nf(m2 < 100_000 ? 2 : 1).format(m2 / 10_000)} ha`;
  const km2 = m2 / 1_000_000;
  return `${nf(km2 < 10 ? 3 : km2 < 1000 ? 2 : 0).format(km2)} km²`;
}

/** "0.94" */
export function formatScore(score) {
  return Number.isFinite(score) ? score.toFixed(2) : '–';
}

const STOPS = [
  [0.0, [215, 48, 39]],
  [0.5, [244, 109, 67]],
  [0.75, [254, 224, 79]],
  [0.9, [102, 189, 99]],
  [1.0, [26, 152, 80]],
];

/** Fill colour for a mask score in [0, 1]: red (doubtful) → yellow → green (confident). "#rrggbb" */
export function scoreColor(score) {
  const s = Number.isFinite(score) ? Math.min(1, Math.max(0, score)) : 0;
  let i = 1;
  while (i < STOPS.length - 1 && s > STOPS[i][0]) i++;
  const [s0, c0] = STOPS[i - 1];
  const [s1, c1] = STOPS[i];
  const t = (s - s0) / (s1 - s0);
  return '#' + c0.map((c, k) => Math.round(c + (c1[k] - c) * t).toString(16).padStart(2, '0')).join('');
}

/** The gradient of scoreColor as a CSS linear-gradient, for the legend. */
export function scoreGradientCss() {
  return `linear-gradient(to right, ${STOPS.map(([s]) => `${scoreColor(s)} ${s * 100}%`).join(', ')})`;
}

const STAGES = ['validate', 'tiles', 'embed', 'decode', 'seams', 'vectorize'];

/** "tiles 12 ms · embed 340 ms · decode 21 ms · total 380 ms" (known stages first, total last). */
export function formatTimings(timings) {
  if (!timings) return '';
  const keys = Object.keys(timings);
  const order = [...STAGES.filter((k) => keys.includes(k)), ...keys.filter((k) => !STAGES.includes(k) && k !== 'total')];
  if (keys.includes('total')) order.push('total');
  return order.map((k) => `${k} ${formatMs(timings[k])}`).join(' · ');
}

function formatMs(ms) {
  if (!Number.isFinite(ms)) return '–';
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

/**
 * The status line after a segmentation, from the FeatureCollection:
 * "1 polygon · best score 0.97 · embedding cache miss · window z17 · tiles 12 ms · … · total 380 ms"
 */
export function resultSummary(fc) {
  const meta = fc.samgis || {};
  const n = fc.features.length;
  const parts = [n === 0 ? 'no object found' : `${n} polygon${n === 1 ? '' : 's'}`];
  const best = bestScore(fc);
  if (n) parts.push(`best score ${formatScore(best)}`);
  if (meta.cache) parts.push(`embedding cache ${meta.cache}`);
  if (meta.window) {
    let z = `window z${meta.window.z}`;
    if (meta.zoom_requested != null && meta.zoom_requested !== meta.window.z) {
      z += ` (stepped out from z${meta.zoom_requested} to fit the prompts)`;
    }
    parts.push(z);
  }
  const w = windowsText(meta);
  if (w) parts.push(w);
  const pp = postprocessText(meta.postprocess);
  if (pp) parts.push(pp);
  const t = formatTimings(meta.timings_ms);
  if (t) parts.push(t);
  return parts.join(' · ');
}

/**
 * The post-processing an answer reports (`samgis.postprocess`: {"regularize" | "smooth": parameters, "library"}):
 * "outlines regularized (buildingregulariser)", "outlines smoothed (smoothify)"; '' for none.
 */
export function postprocessText(pp) {
  if (!pp) return '';
  const how = pp.regularize ? 'regularized' : pp.smooth ? 'smoothed' : 'post-processed';
  return `outlines ${how}${pp.library ? ` (${pp.library})` : ''}`;
}

/**
 * While a request may follow its object across windows: "following… up to 4 windows" ('' for a budget of 1).
 */
export function followingText(windowBudget) {
  const n = Number(windowBudget);
  return Number.isInteger(n) && n > 1 ? `following… up to ${n} windows` : '';
}

/**
 * How many windows an answer used, from its `samgis` metadata: "3 windows (1 from the cache)", plus
 * "cut at the 2-window budget" when the object went on past them; '' for one window that holds the object.
 */
export function windowsText(meta) {
  const windows = meta?.windows ?? [];
  const parts = [];
  if (windows.length > 1) {
    const cached = windows.filter((w) => w.cache === 'hit').length;
    parts.push(`${windows.length} windows` + (cached ? ` (${cached} from the cache)` : ''));
  }
  if (meta?.follow?.stopped_by_budget) {
    const b = meta.follow.window_budget;
    parts.push(`cut at the ${b}-window budget: the object goes on`);
  }
  return parts.join(' · ');
}

/** Highest feature score of a FeatureCollection (NaN when it has none). */
export function bestScore(fc) {
  const s = fc.features.map((f) => f.properties?.score).filter(Number.isFinite);
  return s.length ? Math.max(...s) : NaN;
}

/** Sum of the features' `area_m2`. */
export function totalArea(fc) {
  return fc.features.reduce((a, f) => a + (Number(f.properties?.area_m2) || 0), 0);
}

/** The name the server would give a file: the same rule as api/routers/export.py `safe_name`. */
export function safeName(name) {
  const cleaned = String(name ?? '').replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[._]+|[._]+$/g, '');
  return cleaned.slice(0, 80) || 'samgis_segments';
}

/**
 * A default layer name QGIS shows well: "samgis_scene_z17_3" (source without provider dots, lowercase).
 */
export function defaultLayerName(source, zoom, n) {
  const src = String(source || 'map').replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').toLowerCase();
  return `samgis_${src}_z${zoom}_${n}`;
}

/** "samgis_scene_z17_3.gpkg" */
export function exportFileName(layerName, format) {
  return `${safeName(layerName)}.${format}`;
}
