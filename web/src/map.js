// The Leaflet map, its panes and controls (one per page).
import L from 'leaflet';

export const map = L.map('map', {
  center: [20, 0], zoom: 2, minZoom: 1, maxZoom: 22, worldCopyJump: true, doubleClickZoom: false, boxZoom: false,
});
map.attributionControl.setPrefix('<a href="https://leafletjs.com" title="A JavaScript library for interactive maps">Leaflet</a>');
map.createPane('results').style.zIndex = 410;
map.createPane('promptBoxes').style.zIndex = 450;
L.control.scale({ imperial: false }).addTo(map);
