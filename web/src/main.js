// The samgis web map: wires the modules together and starts the page.
//   map.js: the Leaflet map · basemap.js: sources, basemap, URL hash · tools.js: prompt tools ·
//   segmenter.js: live segmentation · layers.js: result layers and downloads · status.js / health.js: messages.
import L from 'leaflet';
import 'leaflet/dist/leaflet.css';
import './style.css';

import { initSources } from './basemap.js';
import { scoreGradientCss } from './format.js';
import { watchHealth } from './health.js';
import { initLayers } from './layers.js';
import { map } from './map.js';
import { $, state } from './state.js';
import { setStatus, showMessage } from './status.js';
import { setMode } from './tools.js';

async function start() {
  $('legend-bar').style.background = scoreGradientCss();
  setMode('include');
  initLayers();
  watchHealth();
  try {
    await initSources();
    setStatus('idle', 'Ready. Pick a tool and click the object you want to outline.');
  } catch (err) {
    setStatus('error', 'Could not load the list of basemaps.');
    showMessage('sources', err.message);
  }
}

window.samgis = { map, state, L };
start();
