import { describe, expect, it } from 'vitest';
import { formatHash, parseHash, precisionFor, wrapLng } from './hashstate.js';

describe('URL hash', () => {
  it('round-trips a view with its source', () => {
    const h = formatHash({ zoom: 17, lat: 45.0001234, lng: 11.2503456, source: 'OpenStreetMap.Mapnik' });
    expect(h).toBe('#map=17/45.00012/11.25035&source=OpenStreetMap.Mapnik');
    expect(parseHash(h)).toEqual({ zoom: 17, lat: 45.00012, lng: 11.25035, source: 'OpenStreetMap.Mapnik' });
  });

  it('uses fewer decimals when zoomed out', () => {
    expect(precisionFor(2)).toBe(1);
    expect(precisionFor(17)).toBe(5);
    expect(formatHash({ zoom: 3, lat: 12.3456, lng: -45.6789 })).toBe('#map=3/12.3/-45.7');
  });

  it('encodes odd source names and reads them back', () => {
    const h = formatHash({ zoom: 5, lat: 1, lng: 2, source: 'My tiles&co' });
    expect(parseHash(h).source).toBe('My tiles&co');
  });

  it('wraps longitudes from other world copies', () => {
    expect(wrapLng(190)).toBe(-170);
    expect(wrapLng(-180)).toBe(-180);
    expect(wrapLng(540)).toBe(-180);
    expect(parseHash('#map=4/10/370').lng).toBe(10);
  });

  it('rejects hashes that hold no valid view', () => {
    for (const h of ['', '#', '#foo', '#map=17/45', '#map=a/b/c', '#map=40/0/0', '#map=3/95/0', null]) {
      expect(parseHash(h)).toBeNull();
    }
    expect(parseHash('#map=3/10/20')).toEqual({ zoom: 3, lat: 10, lng: 20, source: null });
  });
});
