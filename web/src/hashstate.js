// The shareable view in the URL hash: #map=ZOOM/LAT/LNG&source=NAME (OpenStreetMap's style, plus the source).

/** Decimal places that resolve about one screen pixel at `zoom`. */
export function precisionFor(zoom) {
  const pxPerDegree = (256 * 2 ** Math.max(0, zoom)) / 360;
  return Math.max(0, Math.ceil(Math.log10(pxPerDegree)));
}

/** "#map=17/45.00012/11.25034&source=OpenStreetMap.Mapnik" */
export function formatHash({ zoom, lat, lng, source }) {
  const z = Math.round(zoom);
  const d = precisionFor(z);
  let hash = `#map=${z}/${lat.toFixed(d)}/${wrapLng(lng).toFixed(d)}`;
  if (source) hash += `&source=${encodeURIComponent(source)}`;
  return hash;
}

/** {zoom, lat, lng, source} from a hash, or null when it holds no valid view. Source may be null. */
export function parseHash(hash) {
  if (!hash) return null;
  const params = new URLSearchParams(String(hash).replace(/^#/, ''));
  const view = params.get('map');
  if (!view) return null;
  const parts = view.split('/');
  if (parts.length !== 3) return null;
  const [zoom, lat, lng] = parts.map(Number);
  if (![zoom, lat, lng].every(Number.isFinite)) return null;
  if (zoom < 0 || zoom > 24 || Math.abs(lat) > 90 || Math.abs(lng) > 540) return null;
  return { zoom: Math.round(zoom), lat, lng: wrapLng(lng), source: params.get('source') || null };
}

/** Longitude wrapped into [-180, 180). */
export function wrapLng(lng) {
  if (lng >= -180 && lng < 180) return lng;
  const w = ((((lng + 180) % 360) + 360) % 360) - 180;
  return Object.is(w, -0) ? 0 : w;
}
