"""Decoding: the frozen LM writes each chip's caption after [BOS] + its soft prefix.

Greedy or beam search, both batched over chips with one KV cache. Every chip's prompt has the same
length (BOS + k prefix vectors), so the batch needs no padding or attention mask; rows that finish
early keep running until all are done and are trimmed afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Finished = list[tuple[float, list[int]]]
"""One chip's finished beam hypotheses: (score, columns)."""


@dataclass
class DecodeOptions:
    """How captions are decoded: greedy (``beams=1``) or beam search, over an optional restricted vocabulary."""

    max_new_tokens: int = 30
    beams: int = 1
    allowed_token_ids: list[int] | None = None
    """Softmax restricted to these ids (the caption vocabulary the mapper was trained on)."""
    stop_token_ids: list[int] = field(default_factory=list)
    """A caption ends with the first of these it produces."""
    length_penalty: float = 0.0
    """Beam search ranks finished captions by log-probability / length**length_penalty (0: log-probability)."""


def stop_ids_for(tokenizer: Any, candidates: Sequence[int] | None = None) -> list[int]:
    """EOS plus every token whose text holds a newline or ends a sentence with a period."""
    ids = set(range(len(tokenizer))) if candidates is None else set(candidates)
    stops = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    for i in ids:
        piece = tokenizer.convert_ids_to_tokens(i)
        if isinstance(piece, str) and ("\n" in piece or piece.rstrip().endswith(".")):
            stops.add(int(i))
    return sorted(stops)


class PrefixDecoder:
    """Batched decoding from [BOS] + soft prefix with a KV cache.

    Internally a token is a *column*: its row in ``head``, the LM output embeddings the softmax runs
    over (only the allowed tokens' rows when the vocabulary is restricted).
    """

    def __init__(self, lm: Any, tokenizer: Any, options: DecodeOptions):
        self.lm = lm
        self.tok = tokenizer
        self.options = options
        weight = lm.get_output_embeddings().weight.detach()
        self.vocab: torch.Tensor | None = None  # token id of each column; None: column j is token j
        if options.allowed_token_ids:
            self.vocab = torch.tensor(options.allowed_token_ids, dtype=torch.long)
        self.head = weight if self.vocab is None else weight[self.vocab]
        stop_ids = torch.tensor(sorted(set(options.stop_token_ids)), dtype=torch.long)
        if self.vocab is None:
            self.stops = torch.zeros(self.head.shape[0], dtype=torch.bool)
            self.stops[stop_ids] = True
        else:
            self.stops = torch.isin(self.vocab, stop_ids)  # whether each column ends a caption

    @torch.inference_mode()
    def generate(self, prefix: torch.Tensor) -> list[str]:
        """Each chip's caption text (special tokens dropped, up to its first newline, stripped)."""
        return [self._text(ids) for ids in self.decode(prefix)]

    @torch.inference_mode()
    def decode(self, prefix: torch.Tensor) -> list[list[int]]:
        """Each chip's caption as token ids: at most max_new_tokens, ending with a stop token if one came."""
        cols = self._beam(prefix) if self.options.beams > 1 else self._greedy(prefix)
        return [self._to_ids(torch.tensor(c, dtype=torch.long)).tolist() for c in cols]

    # -- the LM, one step at a time -----------------------------------------------------------------
    def _prompt(self, prefix: torch.Tensor, copies: int) -> tuple[Any, torch.Tensor]:
        """Run [BOS] + prefix, each chip's row repeated `copies` times: the KV cache and last hidden states."""
        bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        bos_embeds = self.lm.get_input_embeddings()(torch.full((prefix.shape[0], 1), int(bos), dtype=torch.long))
        embeds = torch.cat([bos_embeds.to(prefix.dtype), prefix], dim=1).repeat_interleave(copies, dim=0)
        out = self.lm.model(inputs_embeds=embeds, use_cache=True)
        return out.past_key_values, out.last_hidden_state[:, -1]

    def _feed(self, cache: Any, cols: torch.Tensor, dtype: torch.dtype) -> tuple[Any, torch.Tensor]:
        """Append one token (a column) to each row of the cache: the cache and the new last hidden states."""
        nxt = self.lm.get_input_embeddings()(self._to_ids(cols)[:, None]).to(dtype)
        out = self.lm.model(inputs_embeds=nxt, past_key_values=cache, use_cache=True)
        return out.past_key_values, out.last_hidden_state[:, -1]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = hidden.float() @ self.head.float().T
        return logits

    def _to_ids(self, cols: torch.Tensor) -> torch.Tensor:
        return self.vocab[cols] if self.vocab is not None else cols

    def _text(self, ids: list[int]) -> str:
        text: str = self.tok.decode(ids, skip_special_tokens=True)
        return text.split("\n")[0].strip()

    # -- search -------------------------------------------------------------------------------------
    def _greedy(self, prefix: torch.Tensor) -> list[list[int]]:
        n = prefix.shape[0]
        cache, hidden = self._prompt(prefix, 1)
        done = torch.zeros(n, dtype=torch.bool)
        steps: list[torch.Tensor] = []
        for _ in range(self.options.max_new_tokens):
            col = self._logits(hidden).argmax(dim=-1)
            steps.append(torch.where(done, torch.full_like(col, -1), col))
            done |= self.stops[col]
            if bool(done.all()):
                break
            cache, hidden = self._feed(cache, col, prefix.dtype)
        seq = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(n)]
        return [[c for c in row if c >= 0] for row in seq]

    def _beam(self, prefix: torch.Tensor) -> list[list[int]]:
        """Beam search, still batched: the cache holds each chip's `beams` rows (chip-major), reordered each step.

        A chip is done once it holds `beams` finished hypotheses and the best is no worse than its best
        live beam (a beam's log-probability only falls as it grows). It gets its best finished
        hypothesis, or, when none finished within max_new_tokens, its best live beam.
        """
        n, b = prefix.shape[0], self.options.beams
        cache, hidden = self._prompt(prefix, b)
        v = self.head.shape[0]
        scores = torch.zeros(n, b)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
        seqs = torch.zeros(n * b, 0, dtype=torch.long)
        finished: list[Finished] = [[] for _ in range(n)]
        for step in range(self.options.max_new_tokens):
            logp = torch.log_softmax(self._logits(hidden), dim=-1).view(n, b, v)
            top, idx = (scores[:, :, None] + logp).view(n, b * v).topk(2 * b, dim=-1)
            scores, src, col = self._extend(top, idx // v, idx % v, seqs, finished)
            order = (torch.arange(n)[:, None] * b + src).view(-1)
            seqs = torch.cat([seqs[order], col.view(-1, 1)], dim=1)
            if step == self.options.max_new_tokens - 1 or _all_done(finished, scores):
                break
            cache.reorder_cache(order)
            cache, hidden = self._feed(cache, col.view(-1), prefix.dtype)
        return [max(f, key=lambda h: h[0])[1] if f else seqs[i * b].tolist() for i, f in enumerate(finished)]

    def _extend(
        self, top: torch.Tensor, src: torch.Tensor, col: torch.Tensor, seqs: torch.Tensor, finished: list[Finished]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Walk each chip's best extensions (score, source beam, column), best first: one ending in a stop
        token joins `finished`, the first `beams` others become the live beams. Their (score, source, column)."""
        n, b = len(finished), self.options.beams
        new_scores = torch.full((n, b), float("-inf"))
        new_src = torch.zeros(n, b, dtype=torch.long)
        new_col = torch.zeros(n, b, dtype=torch.long)
        for i in range(n):
            kept = 0
            for score, beam, c in zip(top[i].tolist(), src[i].tolist(), col[i].tolist(), strict=True):
                if score == float("-inf"):
                    break
                if bool(self.stops[c]):
                    hyp = [*seqs[i * b + beam].tolist(), c]
                    penalty = self.options.length_penalty
                    finished[i].append((score / (len(hyp) ** penalty if penalty else 1.0), hyp))
                    continue
                new_scores[i, kept], new_src[i, kept], new_col[i, kept] = score, beam, c
                kept += 1
                if kept == b:
                    break
        return new_scores, new_src, new_col


def _all_done(finished: list[Finished], live: torch.Tensor) -> bool:
    """Whether every chip holds a full beam of finished hypotheses, the best no worse than any live beam."""
    return all(
        len(f) >= len(row) and max(h[0] for h in f) >= float(row.max()) for f, row in zip(finished, live, strict=True)
    )
