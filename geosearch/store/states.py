"""Scene states: how a scene's chips stay unserved until the scene is finished, in both engines.

Every chip carries its scene's id (`scene_id`, a keyword-indexed payload field), and every scene has a
record in the scenes collection whose `state` says whether its chips may be served:

- `INGESTING`: written by `ChipStore.begin_scene` *before* the scene's first chip, which then deletes
  any chips the scene already has (an older version, or a run that stopped mid-scene);
- `COMPLETE`: written by `ChipStore.put_scene` *after* the scene's last chip (records written before
  states existed have no `state` and count as complete);
- `DELETING`: written by `ChipStore.delete_scene` *before* the scene's chips are deleted; the record is
  removed after them.

Searches, browsing, counts and chip lookups leave out the chips of every scene whose record is not
complete (`Where.hide`: one `must_not` keyword match on `scene_id`, exact in both engines and cheap,
since only scenes in flight are listed). A read re-checks the hidden set when it is done and re-runs
if a scene became hidden meanwhile, so a scene that starts being deleted during a search is left out
rather than served half deleted. Chips whose scene has no record at all (written through `upsert`
alone) are served as before.

A crash (even SIGKILL) therefore leaves at worst a hidden scene: `INGESTING` until the next ingest of
that file redoes it, `DELETING` until the next ingest run finishes the deletion.

The embedded engine is owned by one process, so it keeps the hidden set in memory, updated in the
order above; a Qdrant server is shared, so its store reads the set from the scenes collection on each
read (one small filtered scroll). On a server, chips are deleted in place by the engine, so a search
that spans a whole deletion (flip, chip delete and record removal all during the one search) could
still see part of that scene; the embedded engine deletes a scene's chips in one operation under the
store's lock, so its searches see all of them or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATE_KEY = "state"
"""Payload key of a scene record's state."""

INGESTING = "ingesting"
COMPLETE = "complete"
DELETING = "deleting"

HIDDEN_STATES = (INGESTING, DELETING)
"""States whose scenes' chips are never served."""

READ_RETRIES = 3
"""Times a read is re-run when scenes became hidden while it ran; after that its rows are filtered."""


def record_state(payload: Mapping[str, Any]) -> str:
    """The state of a scene record (complete when it predates states)."""
    state = payload.get(STATE_KEY, COMPLETE)
    return state if isinstance(state, str) else COMPLETE


def hidden_of(records: list[dict[str, Any]]) -> dict[str, str]:
    """{scene id: state} of the records whose chips must not be served."""
    out: dict[str, str] = {}
    for payload in records:
        state = record_state(payload)
        if state in HIDDEN_STATES and isinstance(payload.get("id"), str):
            out[payload["id"]] = state
    return out
