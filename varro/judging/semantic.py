"""The semantic judge: TF-IDF cosine similarity of a prediction to the outcome headlines.

Done the standard way, which the original system got wrong (it applied the
log to the dense count matrix, so every score was about 0.93 and empty text
scored highest):

* sublinear term frequency ``1 + ln(tf)`` on the non-zero counts only, 0 elsewhere;
* smoothed idf ``ln((1 + n) / (1 + df)) + 1`` fitted on the outcome headlines,
  so a prediction's score does not depend on which siblings are shown with it;
* rows L2-normalised; an empty row stays all zeros (no division by zero);
* the score is the mean of the top three cosine similarities to single outcome
  headlines: a prediction is good when it anticipated some event, and three
  rather than one keeps a single shared word from deciding.

Empty or stop-word-only text has no terms, a zero vector and score 0, the
lowest possible (cosines of non-negative vectors are >= 0).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from varro.judging.base import RoundRequest, ScoringJudge
from varro.judging.text import content_words

TOP_K = 3


class TfidfIndex:
    """Idf weights and normalised vectors of one day's outcome headlines."""

    def __init__(self, outcomes: Sequence[str]):
        docs = [Counter(content_words(text)) for text in outcomes]
        self.vocabulary = {term: i for i, term in enumerate(sorted(set().union(*docs)))}
        df = np.zeros(len(self.vocabulary))
        for doc in docs:
            for term in doc:
                df[self.vocabulary[term]] += 1
        self.n = len(docs)
        self.idf = np.log((1.0 + self.n) / (1.0 + df)) + 1.0
        self.unseen_idf = np.log(1.0 + self.n) + 1.0
        self.outcomes = np.stack([self._in_vocab(doc) for doc in docs]) if docs else np.zeros((0, 0))

    def _in_vocab(self, counts: Counter[str]) -> np.ndarray:
        row = np.zeros(len(self.vocabulary))
        for term, tf in counts.items():
            row[self.vocabulary[term]] = (1.0 + np.log(tf)) * self.idf[self.vocabulary[term]]
        return _l2(row, extra=0.0)

    def vector(self, text: str) -> np.ndarray:
        """The L2-normalised tf-idf vector of `text` over the outcome vocabulary.

        Terms the outcomes never use still count towards the norm (with the
        idf of a term in no document), so padding a prediction with unrelated
        words dilutes its similarity instead of being ignored.
        """
        counts = Counter(content_words(text))
        row = np.zeros(len(self.vocabulary))
        unseen = 0.0
        for term, tf in counts.items():
            weight = 1.0 + np.log(tf)
            if term in self.vocabulary:
                row[self.vocabulary[term]] = weight * self.idf[self.vocabulary[term]]
            else:
                unseen += (weight * self.unseen_idf) ** 2
        return _l2(row, extra=unseen)

    def score(self, text: str) -> float:
        if not self.vocabulary:
            return 0.0
        similarities = np.sort(self.outcomes @ self.vector(text))[::-1]
        return float(similarities[:TOP_K].mean())


def _l2(row: np.ndarray, *, extra: float) -> np.ndarray:
    """Divide by the L2 norm including `extra` squared weight outside the vocabulary."""
    norm = float(np.sqrt(row @ row + extra))
    return row / norm if norm > 0 else row


@lru_cache(maxsize=8)
def tfidf_index(outcomes: tuple[str, ...]) -> TfidfIndex:
    return TfidfIndex(outcomes)


class SemanticJudge(ScoringJudge):
    name = "semantic-tfidf"

    def score(self, request: RoundRequest) -> list[float]:
        index = tfidf_index(request.outcomes)
        return [index.score(text) for text in request.candidates]
