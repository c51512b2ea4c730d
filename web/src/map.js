// The Leaflet map, its panes and controls (one per page). `map` is null until `initMap` runs (main.js does,
// first); every other module reads it through this live binding.
import L from 'leaflet';

export let map = null;

/** Create the map in the element with id `elementId`, with the result, find and prompt panes. */
export function initMap(elementId = 'map') {
  map = L.map(elementId, {
    center: [20, 0], zoom: 2, minZoom: 1, maxZoom: 22, worldCopyJump: true, doubleClickZoom: false, boxZoom: false,
  });
  map.attributionControl.setPrefix('<a href="https://leafletjs.com" title="A JavaScript library for interactive maps">Leaflet</a>');
  map.createPane('results').style.zIndex = 410;
  map.createPane('found').style.zIndex = 405; // under the results: a refined object shows over its instance
  map.createPane('promptBoxes').style.zIndex = 450;
  L.control.scale({ imperial: false }).addTo(map);
  return map;
}
