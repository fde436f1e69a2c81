"""Splitting a day's judging over workers so the merged ranking is the unsharded one, bit for bit.

What a group's ranking depends on decides how groups may be split:

* every judge shows the candidates in an order hashed from (seed, headline
  id, round), never from where a group sits in a shard;
* a judge that answers each round on its own (lexical, semantic, structure,
  HTTP: one request per round) gives a group the same answers whatever else
  is judged with it, so groups can go to shards one by one;
* the local mlx judge answers a round's groups in batched forwards of
  `judge.batch_size` rows, and a row's logits (and so its recorded raw
  scores) move in their last bits with the rows that share its batch. Its
  groups are split in whole batches: a block of `batch_size` consecutive
  groups is one batch in every round as long as all groups have one size
  (every group takes part in every round; the constrained judge never gives
  up on one). A day with groups of several sizes is not split at all.

The agreement sample (re-judged in reversed order, a call of its own over the
sample groups) is split by the same rule over the sample list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgspec

from events.schema import RankedGroup
from varro.config import JudgeConfig
from varro.judging.selection import GroupToRank

G = TypeVar("G", bound=GroupToRank)


class RankedPart(msgspec.Struct, frozen=True, kw_only=True):
    """One shard's share of a day's ranking, kept as an artifact until the merge.

    `ranked_event_id` is the id of the `Ranked` event the part belongs to: it
    hashes every input of the day's ranking, so a merge can refuse a part that
    was judged from anything else.
    """

    ranked_event_id: str
    shard: int
    shards: int
    judge: str
    groups: list[RankedGroup]
    rejudged: list[RankedGroup]


def encode(part: RankedPart) -> bytes:
    return msgspec.msgpack.encode(part)


def decode(data: bytes) -> RankedPart:
    return msgspec.msgpack.decode(data, type=RankedPart)


def batch_rows(cfg: JudgeConfig) -> int | None:
    """Rows the judge answers together in one forward, where that changes its answers; None if it never does."""
    return cfg.batch_size if cfg.kind == "mlx" else None


def shard_unit(groups: Sequence[GroupToRank], rows: int | None) -> int:
    """How many consecutive groups must stay on one shard (see the module docstring)."""
    if rows is None:
        return 1
    if len({len(g.texts) for g in groups}) > 1:
        return max(len(groups), 1)
    return rows


def shard_of(groups: Sequence[G], shard: int, shards: int, rows: int | None) -> list[G]:
    """The groups of `groups` that shard `shard` of `shards` judges, in the day's order."""
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: need 0 <= shard < shards")
    unit = shard_unit(groups, rows)
    return [g for i, g in enumerate(groups) if (i // unit) % shards == shard]
