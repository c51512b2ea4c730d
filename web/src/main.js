// The samgis web map: wires the modules together and starts the page. Every module is free of side effects on
// import; the init functions below, called once in this order, create the map and attach the listeners.
//   map.js: the Leaflet map · basemap.js: sources, basemap, URL hash · tools.js: prompt tools ·
//   segmenter.js: live segmentation · shape.js: the outlines' post-processing · find.js: find every instance of
//   a phrase (or like an example box) · layers.js: result layers and downloads · status.js / health.js: messages.
import L from 'leaflet';
import 'leaflet/dist/leaflet.css';
import './style.css';

import { initSources } from './basemap.js';
import { initFind, refreshFindAvailability } from './find.js';
import { scoreGradientCss } from './format.js';
import { onModelReady, watchHealth } from './health.js';
import { initLayers } from './layers.js';
import { initMap } from './map.js';
import { $, state } from './state.js';
import { initShape } from './shape.js';
import { setStatus, showMessage } from './status.js';
import { initTools, setMode } from './tools.js';

async function start() {
  const map = initMap('map');
  window.samgis = { map, state, L };
  $('legend-bar').style.background = scoreGradientCss();
  initTools();
  initShape();
  setMode('include');
  initLayers();
  initFind();
  onModelReady(refreshFindAvailability);
  refreshFindAvailability();
  watchHealth();
  try {
    await initSources();
    setStatus('idle', 'Ready. Pick a tool and click the object you want to outline.');
  } catch (err) {
    setStatus('error', 'Could not load the list of basemaps.');
    showMessage('sources', err.message);
  }
}

start();
