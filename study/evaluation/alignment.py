"""How close one language sits to English in an encoder's sentence space, from parallel sentences: bitext retrieval
both ways and the distance between the two languages' centroids. Pure numpy on embeddings; no model, no I/O.

Inputs are the mean-pooled sentence embeddings of one target language, ``target`` (n, d), and of English,
``english`` (n, d), row i of one translating row i of the other, in the encoder's own units (not L2-normalised).

* **Retrieval** (``xx_to_en`` / ``en_to_xx``): cosine nearest neighbour, as ``study.cli.evaluate``'s Tatoeba scores it;
  it sees each sentence, so it measures sentence-level alignment.
* **Centroid distance**: ||mean(target) - mean(english)|| in the encoder's units: the offset between the two
  languages' clouds (the "language identity" component that mean-centring per language removes, Libovický et al.
  2020). It grows with the encoder's scale, so it cannot be compared across encoders or checkpoints.
* **Centred distance**: the same offset divided by the pair's spread, the root-mean-square distance of all 2n
  embeddings from their pooled mean. Centring on the pooled mean makes the spread blind to a shift every language
  shares (fine-tuning often adds a common component to every embedding; divided by a spread measured from the
  origin, or with each sentence L2-normalised first, such a shift would shrink the distance and read as alignment),
  and dividing by the spread makes it blind to the scale of the space, so checkpoints compare. It lies in [0, 2]:
  (distance / 2)² is the share of the pair's variance that language identity explains (between-language over total
  sum of squares), 0 when the centroids coincide, 2 when each language collapses onto its own point.

Neither distance sees a rotation of one language's cloud about the pair's common centre: such a language keeps the
centroids together (distance 0) while retrieval still shows how far each sentence moved. Centroid distance
measures the languages' offset, not whether translations are neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from study.core.errors import StudyError
from study.core.metrics import nearest_neighbour_hits

DIRECTIONS = ("xx_to_en", "en_to_xx")  # retrieval: target finds its English translation, and the reverse


@dataclass(frozen=True)
class Alignment:
    """One target language against English at one layer: retrieval accuracies in [0, 1], the two centroid
    distances (module docstring), the number of parallel sentences and, per direction, each sentence's
    ``[correct, 1.0]`` (the ``analysis.Side`` units the report resamples)."""

    xx_to_en: float
    en_to_xx: float
    centroid_distance: float  # encoder units
    centred_distance: float  # in [0, 2], scale- and shift-free
    sentences: int
    units: dict[str, list[list[float]]]  # {direction: [[1.0 if retrieved else 0.0, 1.0], ...]}, in row order

    def measures(self) -> dict[str, float]:
        """{measure: value} of every number above (the metric keys' measure names, ``protocol.ALIGNMENT_MEASURES``)."""
        return {"xx_to_en": self.xx_to_en, "en_to_xx": self.en_to_xx, "centroid_distance": self.centroid_distance,
                "centred_distance": self.centred_distance, "sentences": float(self.sentences)}


def _check(target: np.ndarray, english: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    target, english = np.asarray(target, dtype=np.float64), np.asarray(english, dtype=np.float64)
    if target.ndim != 2 or target.shape != english.shape or not len(target):
        raise StudyError(f"alignment needs parallel embeddings of equal shape (n >= 1, d); got {target.shape} and "
                         f"{english.shape}")
    return target, english


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def retrieval_hits(target: np.ndarray, english: np.ndarray) -> dict[str, np.ndarray]:
    """{direction: (n,) bool}: whether each sentence's cosine nearest neighbour on the other side is its
    translation (``metrics.nearest_neighbour_hits``)."""
    target, english = _check(target, english)
    return nearest_neighbour_hits(_unit_rows(target) @ _unit_rows(english).T)


def centroid_distance(target: np.ndarray, english: np.ndarray) -> float:
    """||mean(target) - mean(english)||, in the encoder's units."""
    target, english = _check(target, english)
    return float(np.linalg.norm(target.mean(axis=0) - english.mean(axis=0)))


def centred_distance(target: np.ndarray, english: np.ndarray) -> float:
    """The centroid distance over the pair's spread: sqrt(mean over all 2n rows of ||row - pooled mean||²); 0.0
    when every embedding is the same point. Unchanged by a shift, rotation or rescaling of the whole space."""
    target, english = _check(target, english)
    pooled = np.concatenate([target, english])
    spread = float(np.sqrt(((pooled - pooled.mean(axis=0)) ** 2).sum(axis=1).mean()))
    return centroid_distance(target, english) / spread if spread > 0 else 0.0


def align(target: np.ndarray, english: np.ndarray) -> Alignment:
    """Every measure of one language against English (module docstring); StudyError unless both are (n, d)."""
    hits = retrieval_hits(target, english)
    return Alignment(xx_to_en=float(hits["xx_to_en"].mean()), en_to_xx=float(hits["en_to_xx"].mean()),
                     centroid_distance=centroid_distance(target, english),
                     centred_distance=centred_distance(target, english), sentences=len(target),
                     units={d: [[float(h), 1.0] for h in hits[d]] for d in DIRECTIONS})


def project_2d(embeddings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{name: (n_name, 2)}: every group of embeddings (e.g. English and a few target languages of one encoder)
    projected onto the first two principal components of all of them pooled and centred on their pooled mean,
    divided by the pooled spread (root-mean-square distance from that mean), so that panels of different encoders
    share a scale. scikit-learn's PCA, deterministic (full SVD)."""
    from sklearn.decomposition import PCA

    names = list(embeddings)
    pooled = np.concatenate([np.asarray(embeddings[n], dtype=np.float64) for n in names])
    centred = pooled - pooled.mean(axis=0)
    spread = np.sqrt((centred ** 2).sum(axis=1).mean())
    points = PCA(n_components=2, svd_solver="full").fit_transform(centred) / (spread if spread > 0 else 1.0)
    bounds = np.cumsum([0] + [len(embeddings[n]) for n in names])
    return {n: points[start:stop] for n, start, stop in zip(names, bounds[:-1], bounds[1:], strict=True)}
