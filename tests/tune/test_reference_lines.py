"""Reference lines: the frozen-encoder probe and the random-init floor, on the runs' own evaluation items."""

import pytest

from study.core import protocol
from study.core.protocol import target_average_key
from study.train.config import TrainConfig


def test_reference_lines_score_the_runs_items_and_are_cached(tmp_path, monkeypatch):
    from study.tune import reference_lines as R

    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path))
    cfg = TrainConfig(model="tiny", task="pocket-topic", max_length=32, max_train_examples=96, max_eval_examples=24,
                      languages=("en", "de", "ja"))
    lines = R.reference_lines(cfg)
    assert set(lines) == set(protocol.REFERENCE_LINES) == {"frozen_probe", "random_init_probe"}
    for scores in lines.values():
        assert {"dev_en/accuracy", "test/accuracy/en", "test/accuracy/de", "test/accuracy/ja",
                target_average_key("accuracy"), "family/accuracy/Japonic"} <= set(scores)
        assert scores[target_average_key("accuracy")] == pytest.approx(
            (scores["test/accuracy/de"] + scores["test/accuracy/ja"]) / 2)  # English is not a target
    assert lines["frozen_probe"] != lines["random_init_probe"]  # different weights, different probes

    def recompute(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(R, "_probe", recompute)
    assert R.reference_lines(cfg) == lines
    with pytest.raises(AssertionError, match="recomputed"):  # another evaluation subset is another entry
        R.reference_lines(TrainConfig(**{**cfg.to_dict(), "max_eval_examples": 20}))


def test_only_classification_tasks_get_reference_lines():
    from study.data.tasks import get_task
    from study.tune.reference_lines import supported

    assert supported(get_task("pocket-topic")) and supported(get_task("xnli"))
    assert not any(supported(get_task(t)) for t in ("udpos", "xquad", "xcopa"))
