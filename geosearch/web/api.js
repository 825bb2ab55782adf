// The geosearch HTTP API, addressed relative to this page: the page is {mount}/map, so the API's
// routes are siblings of it ({mount}/search, {mount}/chips/...), whatever the mount path is.

/** The API root: the page's own folder. */
export const API_ROOT = new URL('./', document.baseURI);

/** An API URL: `path` relative to the API root, with the non-empty `params` as a query string. */
export function apiUrl(path, params = {}) {
  const url = new URL(path, API_ROOT);
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') url.searchParams.set(key, String(value));
  }
  return url;
}

/** An API error: the server's JSON `detail` when it sent one. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function getJSON(url, init) {
  const response = await fetch(url, init);
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(body?.detail || `${response.status} ${response.statusText}`, response.status);
  return body;
}

/** Chips ranked by similarity to `text` inside `bbox` ([w, s, e, n]): a GeoJSON FeatureCollection. */
export function searchText(text, bbox, limit) {
  return getJSON(apiUrl('search', { q: text, bbox: bbox?.join(','), limit }));
}

/** "More like this": chips ranked by similarity to chip `id`, anywhere. */
export function searchLike(id, limit) {
  return getJSON(apiUrl('search'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ like: id, limit }),
  });
}

/** The ingested scenes (`GET /scenes`): [{id, bbox: [w, s, e, n], ...}]. */
export async function listScenes() {
  return (await getJSON(apiUrl('scenes'))).scenes;
}

/** The caption overlay inside `bbox` as GeoJSON (`GET /captions`), for apps without caption tiles. */
export function captionsIn(bbox, limit) {
  return getJSON(apiUrl('captions', { bbox: bbox.join(','), limit }));
}

/** The chip's thumbnail URL. */
export function chipUrl(id) {
  return apiUrl(`chips/${encodeURIComponent(id)}.png`).href;
}

/**
 * A TileJSON document at `path`, its tile templates made absolute (MapLibre fetches tiles from a
 * worker, where relative URLs do not resolve). `{z}`-style placeholders survive the resolution.
 */
export async function tileJSON(path) {
  const url = apiUrl(path);
  const doc = await getJSON(url);
  const tiles = (doc.tiles || []).map((t) => new URL(t, url).href.replace(/%7B/gi, '{').replace(/%7D/gi, '}'));
  return { ...doc, tiles };
}
