// The hit list: one item per hit, best first, with rank, score, caption and chip thumbnail.
// Captions are set as text, never as HTML.

import { chipUrl } from './api.js';

/**
 * Fill `list` (an <ol>) with `features`; `onSelect(feature)` when a hit is clicked,
 * `onLike(feature)` for its "More like this" button.
 */
export function renderHits(list, features, { onSelect, onLike }) {
  list.replaceChildren(
    ...features.map((feature, i) => {
      const p = feature.properties;
      const item = el('li', { class: 'hit', 'data-id': p.id });
      const main = el('button', { type: 'button', class: 'hit-main', title: 'Zoom to this chip' });
      const thumb = el('img', { class: 'thumb', alt: '', loading: 'lazy', width: '72', height: '72' });
      thumb.src = chipUrl(p.id);
      const meta = el('span', { class: 'meta' });
      meta.append(
        el('span', { class: 'rank' }, `#${i + 1}`),
        el('span', { class: 'score', title: 'cosine similarity' }, `score ${p.score.toFixed(3)}`),
      );
      if (typeof p.relevance === 'number') {
        meta.append(el('span', { class: 'relevance', title: 'share of reference images it outscores' },
          `relevance ${(100 * p.relevance).toFixed(0)}%`));
      }
      main.append(thumb, meta, el('span', { class: 'caption' }, p.caption || '(no caption)'));
      main.addEventListener('click', () => onSelect(feature));
      const like = el('button', { type: 'button', class: 'like' }, 'More like this');
      like.addEventListener('click', () => onLike(feature));
      item.append(main, like);
      return item;
    }),
  );
}

/** Mark hit `id` selected in `list` and scroll it into view. */
export function markSelected(list, id) {
  for (const item of list.children) {
    const selected = item.dataset.id === id;
    item.classList.toggle('selected', selected);
    if (selected) item.scrollIntoView({ block: 'nearest' });
  }
}

function el(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}
