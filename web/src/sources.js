// Pure helpers about the server's sources (/v1/sources entries): grouping for the picker, tile layer options,
// and raster sources (shown over a basemap, with their extent).

/** The picker's groups: Map group label → sources, in server order. A filter (case-insensitive) keeps sources
 * whose id or attribution contains it, and always the current one. Groups: the provider prefix of dotted ids
 * ("Esri.WorldImagery" → "Esri"), "Other" for other XYZ sources, "Local" for tile folders and MBTiles,
 * "Rasters" for raster sources (GeoTIFF / COG), whatever their id. */
export function groupSources(sources, filter = '', currentId = null) {
  const f = filter.trim().toLowerCase();
  const groups = new Map();
  for (const s of sources) {
    if (f && !s.id.toLowerCase().includes(f) && !(s.attribution || '').toLowerCase().includes(f) && s.id !== currentId) continue;
    const g = s.kind === 'raster' ? 'Rasters' : s.id.includes('.') ? s.id.split('.')[0] : s.kind === 'xyz' ? 'Other' : 'Local';
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

export const isRaster = (src) => src?.kind === 'raster';

/** The basemap to show under a raster: the current basemap if there is one, else the server's default unless it
 * is a raster, else the first source that is not a raster; null when the server has only rasters. */
export function basemapFor(sources, defaultId, currentBasemap = null) {
  if (currentBasemap && !isRaster(currentBasemap)) return currentBasemap;
  const def = sources.find((s) => s.id === defaultId);
  if (def && !isRaster(def)) return def;
  return sources.find((s) => !isRaster(s)) ?? null;
}

/** A raster source's extent as Leaflet bounds [[south, west], [north, east]] (degrees), from its `bounds`
 * [west, south, east, north]; null when it has none or they are not finite numbers with west < east, south < north. */
export function extentLatLngBounds(src) {
  const b = src?.bounds;
  if (!Array.isArray(b) || b.length !== 4 || !b.every((v) => typeof v === 'number' && Number.isFinite(v))) return null;
  const [w, s, e, n] = b;
  if (!(w < e && s < n)) return null;
  return [[s, w], [n, e]];
}
