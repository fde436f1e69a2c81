"""The structure judge: a verifiable reward, the share of the six sections present.

It ignores the outcomes on purpose. A loop trained with it should learn the
format, and an A/B on held-out headlines can check that it did, which is what
the end-to-end "can the loop learn?" test relies on.
"""

from __future__ import annotations

from varro.judging.base import RoundRequest, ScoringJudge
from varro.structure import structure_score


class StructureJudge(ScoringJudge):
    name = "structure"

    def score(self, request: RoundRequest) -> list[float]:
        return [structure_score(text) for text in request.candidates]
