// What the page's URL carries, so a view can be shared and restored on load:
//   ?view=LON,LAT,ZOOM   the map's centre and zoom
//   &q=TEXT              the text search (run inside the restored view), or
//   &like=CHIP_ID        a "more like this" search
//   &captions=off        the caption overlay hidden (shown by default)

/** The state in `search` (a location.search string): {view: {center, zoom} | null, q, like, captions}. */
export function readState(search = window.location.search) {
  const params = new URLSearchParams(search);
  return {
    view: parseView(params.get('view')),
    q: params.get('q') || null,
    like: params.get('like') || null,
    captions: params.get('captions') !== 'off',
  };
}

function parseView(text) {
  const parts = (text || '').split(',').map(Number);
  if (parts.length !== 3 || parts.some((n) => !Number.isFinite(n))) return null;
  const [lon, lat, zoom] = parts;
  if (Math.abs(lat) > 90 || zoom < 0 || zoom > 24) return null;
  return { center: [wrapLon(lon), lat], zoom };
}

/** Replace the URL's query with `state` (no history entry: panning is not navigation). */
export function writeState({ view, q, like, captions }) {
  const params = new URLSearchParams();
  if (view) {
    const [lon, lat] = view.center;
    params.set('view', `${lon.toFixed(6)},${lat.toFixed(6)},${view.zoom.toFixed(2)}`);
  }
  if (q) params.set('q', q);
  else if (like) params.set('like', like);
  if (!captions) params.set('captions', 'off');
  const query = params.toString().replace(/%2C/g, ',');
  window.history.replaceState(null, '', `${window.location.pathname}${query ? `?${query}` : ''}`);
}

/** Longitude wrapped into [-180, 180). */
export function wrapLon(lon) {
  return lon - 360 * Math.floor((lon + 180) / 360);
}

/**
 * The API bbox [w, s, e, n] of the map's view, longitudes in [-180, 180]: a view across the
 * antimeridian comes out west > east, as the API (and STAC) write it; a view wider than the world
 * is the whole world.
 */
export function viewBbox(map) {
  const bounds = map.getBounds();
  const south = Math.max(-90, bounds.getSouth());
  const north = Math.min(90, bounds.getNorth());
  let west = bounds.getWest();
  let east = bounds.getEast();
  if (east - west >= 360) {
    west = -180;
    east = 180;
  } else {
    west = wrapLon(west);
    east = wrapLon(east);
    if (east === -180) east = 180;
  }
  return [west, south, east, north].map((n) => Math.round(n * 1e6) / 1e6);
}
