// Pure helpers about the server's sources (/v1/sources entries): grouping for the picker, tile layer options.

/** The picker's groups: Map group label → sources, in server order. A filter (case-insensitive) keeps sources
 * whose id or attribution contains it, and always the current one. Groups: the provider prefix of dotted ids
 * ("Esri.WorldImagery" → "Esri"), "Other" for other XYZ sources, "Local" for tile folders and MBTiles. */
export function groupSources(sources, filter = '', currentId = null) {
  const f = filter.trim().toLowerCase();
  const groups = new Map();
  for (const s of sources) {
    if (f && !s.id.toLowerCase().includes(f) && !(s.attribution || '').toLowerCase().includes(f) && s.id !== currentId) continue;
    const g = s.id.includes('.') ? s.id.split('.')[0] : s.kind === 'xyz' ? 'Other' : 'Local';
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(s);
  }
  return groups;
}

/** The attribution line under the picker. */
export function attributionText(src) {
  return src.attribution ? `© ${src.attribution.replace(/^\(C\)\s*|^©\s*/i, '')}` : 'No attribution given.';
}

/** Leaflet tileLayer options for a source: its native zooms (overzoomed past them), and for tiles other than
 * 256 px the zoom offset that keeps the map's zoom levels the usual 256 px ones. */
export function tileLayerOptions(src, attributionHtml) {
  const opts = {
    attribution: attributionHtml, minZoom: 0, maxZoom: 22,
    maxNativeZoom: src.max_zoom ?? 19, minNativeZoom: src.min_zoom ?? 0, crossOrigin: false,
  };
  if (src.tile_size && src.tile_size !== 256) Object.assign(opts, { tileSize: src.tile_size, zoomOffset: -Math.log2(src.tile_size / 256) });
  return opts;
}
