"""Model registry: offline entries build with every head, e5-small is really multilingual, errors are one line."""

import os
import subprocess
import sys

import pytest
import torch

from study.core.errors import StudyError
from study.models.registry import REGISTRY, get_spec, load_model, load_tokenizer
from study.vme.objective import masked_mean


def test_every_entry_says_what_it_is():
    assert REGISTRY["mbert"].source == "google-bert/bert-base-multilingual-cased"  # canonical ids: the legacy ones
    assert REGISTRY["xlmr"].source == "FacebookAI/xlm-roberta-base"  # redirect, and a cache filled under one is
    assert REGISTRY["xlmr-large"].source == "FacebookAI/xlm-roberta-large"  # invisible to the other
    for key in ("e5-small", "tiny"):
        spec = REGISTRY[key]
        assert spec.offline_stand_in and "stand-in" in spec.name
        assert spec.as_params()["model_offline_stand_in"] == "True"
    assert not REGISTRY["mbert"].offline_stand_in


@pytest.mark.parametrize("key", ["tiny", "e5-small"])
def test_offline_entries_build_with_all_heads(key, e5_small):
    spec = get_spec(key)
    tokenizer = load_tokenizer(spec)
    batch = tokenizer(["A cat sat on the mat.", "Eine Katze."], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == tokenizer.bos_token_id == 0  # XLM-R <s>
    length = batch["input_ids"].shape[1]
    with torch.no_grad():
        assert load_model(spec, "sequence", num_labels=3).eval()(**batch).logits.shape == (2, 3)
        assert load_model(spec, "token", num_labels=17).eval()(**batch).logits.shape == (2, length, 17)
        qa = load_model(spec, "qa").eval()(**batch)
        assert qa.start_logits.shape == qa.end_logits.shape == (2, length)


def test_e5_small_is_a_real_multilingual_encoder(e5_small):
    tokenizer, model = load_tokenizer(e5_small), load_model(e5_small).eval()
    sentences = ["query: The weather is beautiful today.", "query: Das Wetter ist heute wunderschön.",
                 "query: Ich habe meinen Schlüssel im Büro vergessen."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = masked_mean(model(**batch).last_hidden_state, batch["attention_mask"])
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    translation, unrelated = (pooled[0] @ pooled[1]).item(), (pooled[0] @ pooled[2]).item()
    assert translation > unrelated + 0.05, (translation, unrelated)


def test_unknown_key_names_the_choices():
    with pytest.raises(StudyError, match="unknown model 'bert'.*mbert, xlmr, xlmr-large, e5-small, tiny"):
        get_spec("bert")


def test_local_directory_is_accepted_as_a_model(tiny):
    from study.models.registry import model_path

    spec = get_spec(model_path(tiny))
    assert spec.architecture == "xlm-roberta" and spec.name.startswith("local:")


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "study", "models", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.e2e
@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline-mode", "hub-unreachable"])
def test_unreachable_hub_model_gives_one_clear_line_and_exit_2(tmp_path, env):
    result = _cli("mbert", HF_HOME=str(tmp_path), **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "bert-base-multilingual-cased" in lines[0] and "HF_HOME" in lines[0] and "e5-small" in lines[0]


@pytest.mark.e2e
def test_cli_lists_registry_and_rejects_unknown_key():
    listing = _cli()
    assert listing.returncode == 0 and "offline stand-in" in listing.stdout
    unknown = _cli("roberta")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown model 'roberta'")


def test_offline_build_is_atomic_and_cached(tmp_path, monkeypatch):
    from study.models import offline
    from study.models import registry as models

    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path))

    def broken_build(out):
        (out / "partial.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        offline.ensure_built("tiny-xlmr", broken_build)
    # nothing half-written is left behind (the build's lock file stays by design: unlinking it could let two
    # builders race again)
    assert [p.name for p in tmp_path.iterdir()] == [".tiny-xlmr.lock"]
    built = models.model_path(get_spec("tiny"))
    assert (tmp_path / "tiny-xlmr" / "config.json").is_file() and built == str(tmp_path / "tiny-xlmr")
    assert offline.ensure_built("tiny-xlmr", broken_build) == tmp_path / "tiny-xlmr"  # cache hit: no rebuild


def test_quiet_transformers_nests_and_restores_the_progress_bars():
    """``load_model`` resolves the weights' directory inside its own quiet block: the inner block must not turn the
    bars back on for the load (they would print "Loading weights" before a one-line error)."""
    import transformers

    from study.models.registry import quiet_transformers

    assert transformers.logging.is_progress_bar_enabled()
    with quiet_transformers():
        with quiet_transformers():
            pass
        assert not transformers.logging.is_progress_bar_enabled()
    assert transformers.logging.is_progress_bar_enabled()
