// The web map's entry module: wires the map, the search form, the hit list and the URL together.
// Test hook: `window.geosearch` = {map, hits, selected}; <body data-state> is loading, ready,
// searching, results or error.

import { captionsIn, chipUrl, listScenes, searchLike, searchText } from './api.js';
import {
  BASE_STYLE,
  LAYERS,
  addBaseLayers,
  addCaptionOverlay,
  addSceneImagery,
  featureBounds,
  setHits,
  setOverlayVisible,
  setSceneOutlines,
  setSelected,
} from './layers.js';
import { markSelected, renderHits } from './results.js';
import { readState, viewBbox, wrapLon, writeState } from './state.js';

const maplibregl = window.maplibregl;
const config = readConfig();
const state = readState();
const ui = {
  form: document.getElementById('search'),
  q: document.getElementById('q'),
  limit: document.getElementById('limit'),
  toggle: document.getElementById('captions-toggle'),
  status: document.getElementById('status'),
  list: document.getElementById('hits'),
};

let hits = [];
let markers = [];
let selectedId = null;
let searchSeq = 0;
let overlayKind = null;
let overlaySeq = 0;

const map = new maplibregl.Map({
  container: 'map',
  style: BASE_STYLE,
  center: state.view ? state.view.center : [0, 20],
  zoom: state.view ? state.view.zoom : 1,
  attributionControl: { compact: true },
  maxPitch: 0,
  dragRotate: false,
});
map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
map.addControl(new maplibregl.ScaleControl(), 'bottom-right');
window.geosearch = {
  map,
  get hits() {
    return hits;
  },
  get selected() {
    return selectedId;
  },
};

ui.toggle.checked = state.captions;
ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  runSearch();
});
ui.toggle.addEventListener('change', () => {
  state.captions = ui.toggle.checked;
  setOverlayVisible(map, state.captions);
  refreshOverlay();
  saveState();
});
map.on('load', start);

async function start() {
  addBaseLayers(map);
  try {
    overlayKind = await addCaptionOverlay(map, Boolean(config.captionTiles), state.captions);
  } catch (error) {
    showStatus(`Caption overlay unavailable: ${error.message}`, true);
  }
  let scenes = [];
  try {
    scenes = await listScenes();
  } catch (error) {
    showStatus(`Could not list scenes: ${error.message}`, true);
  }
  setSceneOutlines(map, scenes);
  if (config.sceneTiles) {
    await Promise.all(scenes.map((s) => addSceneImagery(map, s.id).catch((e) => console.warn(`imagery of ${s.id}:`, e))));
  }
  if (!state.view && scenes.length) {
    map.fitBounds(scenesBounds(scenes), { padding: 40, animate: false, maxZoom: 16 });
  }
  map.on('click', onMapClick);
  for (const layer of [LAYERS.hitsFill, LAYERS.captionsFill]) {
    map.on('mouseenter', layer, () => (map.getCanvas().style.cursor = 'pointer'));
    map.on('mouseleave', layer, () => (map.getCanvas().style.cursor = ''));
  }
  map.on('moveend', () => {
    saveState();
    refreshOverlay();
  });
  refreshOverlay();
  setPageState('ready');
  if (!scenes.length) showStatus('No scenes ingested yet: run `geosearch ingest` first.');
  if (state.q) {
    ui.q.value = state.q;
    await runSearch();
  } else if (state.like) {
    await runLike(state.like, { fit: false });
  }
  saveState();
}

/** Text search inside the current view. */
async function runSearch() {
  const text = ui.q.value.trim();
  if (!text) return;
  Object.assign(state, { q: text, like: null });
  const found = await showResults(() => searchText(text, viewBbox(map), limit()));
  if (found) {
    showStatus(found.length ? `${found.length} hits in view for “${text}”` : `No hits in this view for “${text}”`);
  }
}

/** "More like this" chip `id`, anywhere; zooms out to show the hits if some lie outside the view. */
async function runLike(id, { fit = true } = {}) {
  Object.assign(state, { q: null, like: id });
  ui.q.value = '';
  const found = await showResults(() => searchLike(id, limit()));
  if (!found) return;
  showStatus(`${found.length} chips like ${id.slice(0, 8)}…`);
  if (fit && found.length && !found.every(insideView)) {
    map.fitBounds(featureBounds(found), { padding: 60, maxZoom: 17, duration: 600 });
  }
}

async function showResults(fetchHits) {
  const seq = ++searchSeq;
  setPageState('searching');
  showStatus('Searching…');
  let features;
  try {
    features = (await fetchHits()).features;
  } catch (error) {
    if (seq !== searchSeq) return null;
    showStatus(error.message, true);
    setPageState('error');
    return null;
  }
  if (seq !== searchSeq) return null;
  hits = features;
  setHits(map, hits);
  renderHits(ui.list, hits, { onSelect: (f) => select(f, { zoom: true }), onLike: (f) => runLike(f.properties.id) });
  renderMarkers();
  select(null);
  saveState();
  setPageState('results');
  return hits;
}

/** Select hit `feature` (null: none) on the map and in the list; `zoom` fits the map to it. */
function select(feature, { zoom = false } = {}) {
  selectedId = feature ? feature.properties.id : null;
  setSelected(map, selectedId);
  markSelected(ui.list, selectedId);
  markers.forEach((marker, i) => {
    const on = marker._hitId === selectedId;
    marker.getElement().classList.toggle('selected', on);
    marker.getElement().style.zIndex = String(on ? markers.length + 1 : markers.length - i);
  });
  if (feature && zoom) map.fitBounds(featureBounds([feature]), { padding: 80, maxZoom: 19, duration: 700 });
}

/** Numbered markers at the hits' centres, so list and map match at a glance (no glyphs needed). */
function renderMarkers() {
  for (const marker of markers) marker.remove();
  markers = hits.map((feature, i) => {
    const element = document.createElement('div');
    element.className = 'hit-marker';
    element.textContent = String(i + 1);
    element.title = feature.properties.caption || '';
    element.style.zIndex = String(hits.length - i); // the best on top where markers overlap
    element.addEventListener('click', (event) => {
      event.stopPropagation();
      select(feature, { zoom: true });
    });
    const [[w, s], [e, n]] = featureBounds([feature]);
    const marker = new maplibregl.Marker({ element }).setLngLat([(w + e) / 2, (s + n) / 2]).addTo(map);
    marker._hitId = feature.properties.id;
    return marker;
  });
}

function onMapClick(event) {
  const [hit] = map.queryRenderedFeatures(event.point, { layers: [LAYERS.hitsFill] });
  if (hit) {
    select(hits.find((f) => f.properties.id === hit.properties.id) || null);
    return;
  }
  const layers = map.getLayer(LAYERS.captionsFill) && state.captions ? [LAYERS.captionsFill] : [];
  const [chip] = layers.length ? map.queryRenderedFeatures(event.point, { layers }) : [];
  if (chip) captionPopup(event.lngLat, chip.properties);
}

function captionPopup(lngLat, properties) {
  const body = document.createElement('div');
  body.className = 'popup-caption';
  const image = document.createElement('img');
  image.alt = '';
  image.src = chipUrl(properties.id);
  const text = document.createElement('div');
  text.textContent = properties.caption || '(no caption)';
  const like = document.createElement('button');
  like.type = 'button';
  like.className = 'like';
  like.textContent = 'More like this';
  const popup = new maplibregl.Popup({ closeButton: true, maxWidth: '240px' }).setLngLat(lngLat).setDOMContent(body);
  like.addEventListener('click', () => {
    popup.remove();
    runLike(properties.id);
  });
  body.append(image, text, like);
  popup.addTo(map);
}

/** Refill the GeoJSON caption overlay for the view (the vector-tile overlay needs nothing). */
async function refreshOverlay() {
  if (overlayKind !== 'geojson' || !state.captions) return;
  const seq = ++overlaySeq;
  try {
    const collection = await captionsIn(viewBbox(map), 1000);
    if (seq === overlaySeq) map.getSource('captions').setData(collection);
  } catch (error) {
    console.warn('caption overlay:', error);
  }
}

function saveState() {
  const center = map.getCenter();
  writeState({
    view: { center: [wrapLon(center.lng), center.lat], zoom: map.getZoom() },
    q: state.q,
    like: state.like,
    captions: state.captions,
  });
}

function insideView(feature) {
  const bounds = map.getBounds();
  const [[w, s], [e, n]] = featureBounds([feature]);
  return bounds.contains([w, s]) && bounds.contains([e, n]);
}

function scenesBounds(scenes) {
  const west = Math.min(...scenes.map((s) => s.bbox[0]));
  const south = Math.min(...scenes.map((s) => s.bbox[1]));
  const east = Math.max(...scenes.map((s) => s.bbox[2]));
  const north = Math.max(...scenes.map((s) => s.bbox[3]));
  return [[west, south], [east, north]];
}

function limit() {
  return Number(ui.limit.value) || 20;
}

function showStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', isError);
}

function setPageState(name) {
  document.body.dataset.state = name;
}

function readConfig() {
  try {
    return JSON.parse(document.getElementById('geosearch-config').textContent);
  } catch {
    return {};
  }
}
