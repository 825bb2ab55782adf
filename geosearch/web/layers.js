// The map's style, sources and layers. No symbol layers, so the style needs no glyphs or sprites:
// the page works offline. Layer order, bottom to top: background, scene imagery, scene outlines,
// caption overlay, hits.

import { tileJSON } from './api.js';

const EMPTY = { type: 'FeatureCollection', features: [] };

/** The initial style: a plain background. */
export const BASE_STYLE = {
  version: 8,
  sources: {},
  layers: [{ id: 'background', type: 'background', paint: { 'background-color': '#dfe6ec' } }],
};

/** Layer ids the page queries (and the tests use through `map.queryRenderedFeatures`). */
export const LAYERS = {
  hitsFill: 'hits-fill',
  hitsLine: 'hits-line',
  hitSelected: 'hit-selected',
  captionsFill: 'captions-fill',
  captionsLine: 'captions-line',
  sceneOutline: 'scene-outline',
};

/** Add the empty sources and layers; imagery goes below `scene-outline` as scenes arrive. */
export function addBaseLayers(map) {
  map.addSource('scenes', { type: 'geojson', data: EMPTY });
  map.addLayer({
    id: LAYERS.sceneOutline,
    type: 'line',
    source: 'scenes',
    paint: { 'line-color': '#334e68', 'line-width': 1.5, 'line-dasharray': [3, 2] },
  });
  map.addSource('hits', { type: 'geojson', data: EMPTY, promoteId: 'id' });
  map.addLayer({
    id: LAYERS.hitsFill,
    type: 'fill',
    source: 'hits',
    paint: {
      'fill-color': rankColor(),
      // The selected hit unfilled, so its imagery shows when the map zooms to it.
      'fill-opacity': ['case', ['boolean', ['feature-state', 'selected'], false], 0, rankRamp(0.45, 0.08)],
    },
  });
  map.addLayer({
    id: LAYERS.hitsLine,
    type: 'line',
    source: 'hits',
    paint: { 'line-color': rankColor(), 'line-width': 2 },
  });
  map.addLayer({
    id: LAYERS.hitSelected,
    type: 'line',
    source: 'hits',
    filter: ['==', ['get', 'id'], ''],
    paint: { 'line-color': '#111827', 'line-width': 4 },
  });
}

/** 0 for the best hit .. 1 for the last (`rank` is 1-based; `rank_max` the list's length). */
const RANK_FRACTION = ['/', ['-', ['get', 'rank'], 1], ['max', 1, ['-', ['get', 'rank_max'], 1]]];

/** Colour by rank: the best hit darkest. */
function rankColor() {
  return ['interpolate', ['linear'], RANK_FRACTION, 0, '#c2410c', 1, '#fdba74'];
}

/** A number by rank, from `best` for the first hit to `last` for the last. */
function rankRamp(best, last) {
  return ['interpolate', ['linear'], RANK_FRACTION, 0, best, 1, last];
}

/** Outline every scene from its bbox (drawn eastward across the antimeridian when west > east). */
export function setSceneOutlines(map, scenes) {
  const features = scenes.map((scene) => {
    const [w, s, e0, n] = scene.bbox;
    const e = e0 < w ? e0 + 360 : e0;
    return {
      type: 'Feature',
      properties: { id: scene.id, path: scene.path },
      geometry: { type: 'Polygon', coordinates: [[[w, s], [e, s], [e, n], [w, n], [w, s]]] },
    };
  });
  map.getSource('scenes').setData({ type: 'FeatureCollection', features });
}

/** Add scene `id`'s imagery (`/scenes/{id}/tilejson.json`) as a raster layer under the outlines. */
export async function addSceneImagery(map, id) {
  const tj = await tileJSON(`scenes/${encodeURIComponent(id)}/tilejson.json`);
  const source = `scene-${id}`;
  map.addSource(source, {
    type: 'raster',
    tiles: tj.tiles,
    tileSize: tj.tileSize || tj.tile_size || 256,
    ...(tj.bounds ? { bounds: tj.bounds } : {}),
    ...(tj.minzoom !== undefined ? { minzoom: tj.minzoom } : {}),
    ...(tj.maxzoom !== undefined ? { maxzoom: tj.maxzoom } : {}),
  });
  map.addLayer({ id: source, type: 'raster', source }, LAYERS.sceneOutline);
}

const OVERLAY_LAYERS = (source, sourceLayer) => {
  const layer = sourceLayer ? { 'source-layer': sourceLayer } : {};
  return [
    {
      id: LAYERS.captionsFill,
      type: 'fill',
      source,
      ...layer,
      paint: { 'fill-color': '#0b7285', 'fill-opacity': 0.06 },
    },
    {
      id: LAYERS.captionsLine,
      type: 'line',
      source,
      ...layer,
      paint: { 'line-color': '#0b7285', 'line-width': 0.8, 'line-opacity': 0.7 },
    },
  ];
};

/**
 * Add the caption overlay under the hits: from the caption vector tiles (layer `chips`) when the
 * app serves them, else from a GeoJSON source the caller refills from `GET /captions`.
 * Returns the source's kind: 'tiles' or 'geojson'.
 */
export async function addCaptionOverlay(map, useTiles, visible) {
  let kind = 'geojson';
  if (useTiles) {
    const tj = await tileJSON('tiles/tilejson.json');
    map.addSource('captions', {
      type: 'vector',
      tiles: tj.tiles,
      ...(tj.bounds ? { bounds: tj.bounds } : {}),
      ...(tj.minzoom !== undefined ? { minzoom: tj.minzoom } : {}),
      ...(tj.maxzoom !== undefined ? { maxzoom: tj.maxzoom } : {}),
    });
    kind = 'tiles';
  } else {
    map.addSource('captions', { type: 'geojson', data: EMPTY });
  }
  for (const layer of OVERLAY_LAYERS('captions', kind === 'tiles' ? 'chips' : null)) {
    map.addLayer({ ...layer, layout: { visibility: visible ? 'visible' : 'none' } }, LAYERS.hitsFill);
  }
  return kind;
}

/** Show or hide the caption overlay. */
export function setOverlayVisible(map, visible) {
  for (const id of [LAYERS.captionsFill, LAYERS.captionsLine]) {
    if (map.getLayer(id)) map.setLayoutProperty(id, 'visibility', visible ? 'visible' : 'none');
  }
}

/** Show `features` (a search's hits, best first) as the hits layer. */
export function setHits(map, features) {
  const ranked = features.map((f, i) => ({
    ...f,
    properties: { ...f.properties, rank: i + 1, rank_max: features.length },
  }));
  map.getSource('hits').setData({ type: 'FeatureCollection', features: ranked });
}

/** Outline hit `id` (null: none), unfilled. */
export function setSelected(map, id) {
  map.removeFeatureState({ source: 'hits' });
  if (id) map.setFeatureState({ source: 'hits', id }, { selected: true });
  map.setFilter(LAYERS.hitSelected, ['==', ['get', 'id'], id || '']);
}

/** [[w, s], [e, n]] around GeoJSON `features` (lon/lat polygons). */
export function featureBounds(features) {
  let w = Infinity;
  let s = Infinity;
  let e = -Infinity;
  let n = -Infinity;
  for (const feature of features) {
    for (const ring of feature.geometry.coordinates) {
      for (const [x, y] of ring) {
        w = Math.min(w, x);
        e = Math.max(e, x);
        s = Math.min(s, y);
        n = Math.max(n, y);
      }
    }
  }
  return [[w, s], [e, n]];
}
