"""The study: YAML search spaces, a real smoke study against a real MLflow server, NaN trials, kill and resume."""

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from helpers import LOOPBACK, start_study, study_runs

from study.core.errors import StudyError
from study.tune.search_space import load_search_space

ROOT = Path(__file__).resolve().parents[2]


# --- search spaces ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["mbert", "xlmr", "e5-small", "tiny", "tiny-bert"])
def test_shipped_search_spaces_load_and_sample(model):
    space = load_search_space(ROOT / "search_spaces" / f"{model}.yaml")
    assert space.model == model
    names = {p.name for p in space.params}
    assert {"alpha", "beta", "w_robust", "ap_layer", "ap_mask", "lr", "modality"} <= names
    assert {"smoke", "paper"} <= set(space.presets)
    def sampled(**fixed):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
        # values of parameters the space does not search are ignored
        study.enqueue_trial({p.tune_name: fixed[p.name] for p in space.params if p.name in fixed})
        trial = study.ask()
        values = space.define_by_run(trial)
        assert set(trial.params) == {p.tune_name for p in space.params if p.name in values}
        return set(values)

    by_modality = {m: sampled(modality=m, vision_train="last") for m in ("none", "text", "multimodal")}
    stage_only = {"intermediate_steps", "vision_lr", "vision_train"}
    assert not by_modality["none"] & stage_only  # define-by-run: no parameters of a branch not taken
    assert "intermediate_steps" in by_modality["text"] and not {"vision_lr", "vision_train"} & by_modality["text"]
    assert {"intermediate_steps", "vision_lr"} <= by_modality["multimodal"]
    if "vision_train" in names:  # a pretrained tower: frozen has no learning rate of its own
        assert "vision_lr" not in sampled(modality="multimodal", vision_train="frozen")


CONDITIONAL = """
model: tiny
task: pocket-topic
params:
  objective: {type: categorical, choices: [vme, plain]}
  alpha: {type: float, low: 1.0e-2, high: 1.0, log: true, when: {objective: vme}}
  modality: {type: categorical, choices: [none]}
  intermediate_steps: {type: int, low: 100, high: 1000, when: {modality: [text, multimodal]}}
  vision_lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true, when: {modality: [multimodal]}}
"""


def test_the_closing_commands_name_this_interpreter_and_open_the_runs_table():
    from study.tune.summary import next_commands

    text = next_commands("vme pocket", "sqlite:////tmp/m.db", "abc", logs="/tmp/logs", experiment_id="7")
    python = shlex.quote(sys.executable)
    assert f"{python} -m study report --experiment 'vme pocket' --mlflow-uri sqlite:////tmp/m.db" in text
    assert f"{python} -m study serve-mlflow --backend-store-uri sqlite:////tmp/m.db --port 5000" in text
    assert "http://127.0.0.1:5000/#/experiments/7/runs" in text and "/tmp/logs" in text


def test_define_by_run_samples_only_the_branch_taken(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(CONDITIONAL)
    space = load_search_space(path)
    plain = optuna.trial.FixedTrial({"train_loop_config/objective": "plain", "stage/modality": "none"})
    assert space.define_by_run(plain) == {"objective": "plain", "modality": "none"}  # no VME weight, no stage one
    assert set(plain.params) == {"train_loop_config/objective", "stage/modality"}
    vme = optuna.trial.FixedTrial({"train_loop_config/objective": "vme", "train_loop_config/alpha": 0.1,
                                   "stage/modality": "none"})
    assert space.define_by_run(vme) == {"objective": "vme", "alpha": 0.1, "modality": "none"}


def test_optuna_search_puts_each_searched_value_in_its_section_of_the_trial_config(tmp_path):
    """The config Ray's OptunaSearch builds from the search space and the study's constants parses back into the
    effective training options (base overridden by searched), the stage, the scaling and the fault hooks."""
    from ray.tune.search.optuna import OptunaSearch

    from study.core.faults import FaultHooks
    from study.train.config import TrainConfig
    from study.train.ray_setup import Scaling
    from study.tune.phases import DefineByRun
    from study.tune.trial import TrialConfig, confirm_config, tune_constants

    path = tmp_path / "space.yaml"
    path.write_text(CONDITIONAL)
    space = load_search_space(path)
    base = TrainConfig(model="tiny", seed=3, alpha=0.5, lr=1e-4)
    constants = tune_constants(base, {"data": "emoji", "vision_tower": "scratch"}, Scaling(workers=2),
                               str(tmp_path), "study-x", FaultHooks(step_delay_s=1.0), arm="vme-tuned")
    searcher = OptunaSearch(space=DefineByRun(space, constants), metric="m", mode="max",
                            points_to_evaluate=[{"train_loop_config/objective": "vme", "stage/modality": "none"}])
    config = searcher.suggest("t1")
    assert set(config) == {"train_loop_config", "stage", "run"}
    trial = TrialConfig.from_tune(config)
    assert set(trial.searched) == {"objective", "alpha", "modality"} and trial.searched["objective"] == "vme"
    assert trial.train.alpha == trial.searched["alpha"] != 0.5  # searched beats the preset ...
    assert (trial.train.lr, trial.train.seed, trial.train.model) == (1e-4, 3, "tiny")  # ... the rest is the preset's
    assert trial.scaling == Scaling(workers=2) and trial.faults == FaultHooks(step_delay_s=1.0)
    assert trial.modality == "none" and trial.stage_config() is None
    assert trial.params()["alpha"] == trial.searched["alpha"] and trial.params()["scaling.workers"] == 2
    assert (trial.arm, trial.phase) == ("vme-tuned", "search")
    repeat = TrialConfig.from_tune({"confirm": confirm_config(config, 9)})  # as the confirm phase's grid gives it
    assert repeat.train.seed == 9 and repeat.train.alpha == trial.train.alpha
    assert (repeat.arm, repeat.phase, repeat.searched) == ("vme-tuned", "confirm", trial.searched)
    staged = TrialConfig.from_tune({**config, "stage": {"modality": "text", "intermediate_steps": 200}})
    stage = staged.stage_config()
    assert (stage.modality, stage.steps, stage.seed, stage.data) == ("text", 200, 3, "emoji")


def test_a_modality_arms_confirm_seed_drives_its_stage_and_its_fine_tuning_as_one_seed(tmp_path):
    """Stage and fine-tuning seeds are paired, not crossed: each confirm run of a modality arm trains its stage and
    its fine-tuning on the run's seed (the ``seed`` the report pairs arms by, recorded beside the stage's as
    ``intermediate.seed``), so seed s of every arm shares its stage seed, and another seed is another stage."""
    from study.core.arms import modality_arms, parse_arms
    from study.core.protocol import StageResult
    from study.train.config import TrainConfig
    from study.train.ray_setup import Scaling
    from study.tune.callbacks import stage_writes
    from study.tune.phases import confirm_seeds
    from study.tune.trial import TrialConfig, confirm_config, tune_constants

    base = TrainConfig(model="tiny", seed=0)
    sources = {"data": "emoji", "vision_tower": "scratch", "caption_languages": ("en",)}
    keys = {}
    for arm in modality_arms(parse_arms("plain,vme-reference", ()), {"intermediate_steps": 4}, 8):
        constants = tune_constants(TrainConfig.from_dict({**base.to_dict(), **arm.fixed}), sources, Scaling(),
                                   str(tmp_path), "study-x", arm=arm.name, stage_options=dict(arm.stage))
        for seed in confirm_seeds(base.seed, 3):
            trial = TrialConfig.from_tune({"confirm": confirm_config(constants, seed)})
            stage = trial.stage_config()
            assert trial.train.seed == seed and trial.params()["seed"] == seed
            if arm.modality == "none":
                assert stage is None
                continue
            assert stage.seed == seed and stage.modality == arm.modality
            keys.setdefault((arm.modality, stage.steps), {})[seed] = stage.key("data")
            meta = {"config": {"seed": stage.seed, "caption_languages": ["en"]}, "losses": [], "examples":
                    {"train": 1, "skipped": {}}, "vision_tower": None, "data": "d"}
            assert dict(stage_writes(StageResult("dir", meta, False)))["params"]["intermediate.seed"] == seed
    # plain+m and vme-reference+m at seed s run one stage (same key); another seed, another stage
    assert all(len(set(by_seed.values())) == 3 for by_seed in keys.values()) and len(keys) == 6


@pytest.mark.parametrize("body, message", [
    ("model: tiny\ntask: pocket-topic\nparams:\n  alpha: {type: float, low: 1e-2, high: 1.0}\n",
     r"params.alpha.low: low must be a number, got '1e-2'; fix: write numbers like 1.0e-5"),
    ("model: tiny\ntask: pocket-topic\nparams:\n  alfa: {type: float, low: 0.1, high: 1.0}\n",
     r"params.alfa: unknown parameter; fix: use one of"),
    ("model: tiny\ntask: pocket-topic\nparams:\n  alpha: {type: float, low: 0.1, high: 1.0}\n"
     "presets:\n  paper.xnlii: {epochs: 1}\n", r"presets.paper.xnlii: unknown preset; fix: use smoke, paper, or"),
    ("model: tiny\ntask: pocket-topic\nparams:\n  ap_layer: {type: int, low: 1, high: 4, step: 2}\n",
     r"params.ap_layer.step: must be a whole number >= 1 that divides high - low \(3\)"),
    ("model: tiny\ntask: pocket-topic\nparams:\n  lr: {type: float, low: 0.1, high: 0.01}\n",
     r"params.lr: low \(0.1\) must be below high"),
    ("model: tiny\ntask: pocket-topic\nparams:\n  lr: {type: uniform, low: 0.1, high: 0.2}\n",
     r"params.lr: needs a mapping with type float, int or categorical"),
    ("model: tiny\ntask: pocket-topic\nparams:\n  modality: {type: categorical, choices: [none, video]}\n",
     r"params.modality.choices: unknown modality \['video'\]"),
    ("model: tiny\ntask: pocket-topic\nparams:\n  alpha: {type: float, low: -1.0, high: 1.0}\n",
     r"params.alpha: the range is not valid for training"),
    ("model: tiny\ntask: pocket-topic\nparams: {alpha: {type: float, low: 0.1, high: 1.0}}\nsmoke: {}\n",
     r"smoke: unknown top-level key"),
    ("model: tiny\ntask: [unclosed\n", r"line \d+: not valid YAML"),
])
def test_bad_search_space_names_file_key_and_fix(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(StudyError, match=message) as info:
        load_search_space(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


BASE = """task: pocket-topic
seed: 3
params:
  alpha: {type: float, low: 0.01, high: 1.0, log: true}
  beta: {type: float, low: 0.1, high: 10.0, log: true}
presets:
  smoke: {epochs: 1, max_steps: 6}
  paper: {epochs: 2}
"""


def test_include_merges_a_base_space_entry_by_entry(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "child.yaml").write_text("include: base.yaml\nmodel: tiny\nparams:\n"
                                         "  beta: {type: float, low: 0.5, high: 2.0}\n"
                                         "  lr: {type: float, low: 1.0e-5, high: 1.0e-4, log: true}\n"
                                         "presets:\n  smoke: {max_steps: 3}\n")
    space = load_search_space(tmp_path / "child.yaml")
    assert (space.model, space.task, space.seed) == ("tiny", "pocket-topic", 3)
    assert [(p.name, p.low, p.high) for p in space.params] == [("alpha", 0.01, 1.0), ("beta", 0.5, 2.0),
                                                               ("lr", 1.0e-5, 1.0e-4)]
    assert space.presets == {"smoke": {"epochs": 1, "max_steps": 3}, "paper": {"epochs": 2}}
    assert space.files == (tmp_path / "child.yaml", tmp_path / "base.yaml")
    (tmp_path / "base.yaml").write_text(BASE.replace("seed: 3", "seed: 4"))
    assert load_search_space(tmp_path / "child.yaml").sha256 != space.sha256  # provenance covers the base too


@pytest.mark.parametrize("child, base, message", [
    ("include: missing.yaml\nmodel: tiny\n", None, r"search space .*missing.yaml does not exist"),
    ("include: base.yaml\nmodel: tiny\n", "include: other.yaml\n", r"base.yaml: \(top level\): an included file"),
    ("include: base.yaml\nmodel: tiny\n", BASE.replace("high: 10.0", "high: 0.01"),
     r"child.yaml \(including .*base.yaml\): params.beta: low"),
])
def test_bad_include_names_the_file(tmp_path, child, base, message):
    (tmp_path / "child.yaml").write_text(child)
    if base is not None:
        (tmp_path / "base.yaml").write_text(base)
    with pytest.raises(StudyError, match=message):
        load_search_space(tmp_path / "child.yaml")


def test_the_hub_models_share_one_space():
    mbert, xlmr = (load_search_space(ROOT / "search_spaces" / f"{m}.yaml") for m in ("mbert", "xlmr"))
    assert (mbert.params, mbert.presets, mbert.task, mbert.seed) == (xlmr.params, xlmr.presets, xlmr.task, xlmr.seed)


def test_every_presets_languages_belong_to_its_task():
    """A preset that names languages does so for one task (``<preset>.<task>``): ``--task xquad`` with the tiny model
    once stopped on pocket-topic's ``ja``."""
    from study.data.tasks import TASKS

    included = "xtreme-r-base.yaml"  # not a space of its own: mbert.yaml and xlmr.yaml include it
    for path in sorted(p for p in (ROOT / "search_spaces").glob("*.yaml") if p.name != included):
        space = load_search_space(path)
        for preset in ("smoke", "paper"):
            for task in TASKS.values():
                chosen = space.preset(preset, task.name).get("languages", ())
                assert set(chosen) <= set(task.languages), (path.name, preset, task.name, chosen)
    assert load_search_space(ROOT / "search_spaces" / "tiny.yaml").preset("smoke", "pocket-topic")["languages"] == [
        "en", "de", "ja", "uk"]


def test_the_paper_preset_is_xtreme_rs_per_task():
    """google-research/xtreme scripts/train_{xnli,udpos,panx,qa}.sh for base models."""
    space = load_search_space(ROOT / "search_spaces" / "mbert.yaml")
    settings = {task: space.preset("paper", task) for task in ("xnli", "udpos", "panx", "xquad", "mlqa", "tydiqa")}
    assert {t: s["epochs"] for t, s in settings.items()} == {"xnli": 5, "udpos": 10, "panx": 10, "xquad": 3,
                                                              "mlqa": 3, "tydiqa": 3}
    assert {s["max_length"] for t, s in settings.items() if t in ("xquad", "mlqa", "tydiqa")} == {384}
    assert all(s["global_batch"] == 32 and 32 % s["batch_size"] == 0 for s in settings.values())  # batch 8x4, 4x8
    assert all(s["lr"] == 2e-5 and s["synonyms"] == "counter-fitted" for s in settings.values())  # the authors'


# --- the study end to end (slow) ---------------------------------------------------------------------------------


@pytest.mark.e2e
def test_smoke_study_records_every_trial_in_mlflow(smoke_experiment):
    output = smoke_experiment["outputs"]["tiny"]
    assert "=== arm vme-tuned" in output and "=== arm plain" in output
    for noise in ("Token authentication", "Writing model shards"):
        assert noise not in output  # the libraries' notices stay in their log files
    python = shlex.quote(sys.executable)  # the commands name the interpreter that ran the study: they work as printed
    assert f"{python} -m study report --experiment e2e" in output
    assert f"{python} -m study serve-mlflow --backend-store-uri {smoke_experiment['uri']}" in output
    assert output.index("=== the answer: test/accuracy/avg") > output.index("serve-mlflow")  # the answer ends it
    client, parents, trials = study_runs(smoke_experiment["uri"], "e2e", model="tiny", phase="search")
    assert f"/#/experiments/{parents[0].info.experiment_id}/runs" in output  # opens on the runs table
    for run in trials:  # named for people, with arm and phase as params the runs table can show
        assert run.info.run_name.startswith("search · vme-tuned · #") and run.data.params["arm"] == "vme-tuned"
        assert run.data.params["phase"] == "search"
    assert len(parents) == 1 and len(trials) == 3 and {r.data.tags["arm"] for r in trials} == {"vme-tuned"}
    parent = parents[0]
    assert parent.data.params["model_offline_stand_in"] == "True" and parent.data.params["preset"] == "smoke"
    assert parent.data.params["search_space_sha256"] and parent.info.status == "FINISHED"
    assert parent.data.params["arms"] == "plain,vme-tuned" and parent.data.params["arm.plain.objective"] == "plain"
    assert parent.data.params["synonyms_source"] == "roget (offline substitute for counter-fitted)"
    # where the data and model came from (offline stand-ins: their packages) and the budget, on every run
    revisions = {k: v for k, v in parent.data.params.items() if k.startswith("revision.")}
    assert set(revisions) == {"revision.dataset.pocket-topic", "revision.model.tiny"}
    assert revisions["revision.dataset.pocket-topic"].startswith("offline stand-in: chatterbot-corpus==")
    assert all(run.data.tags[k] == v for run in [parent, *trials] for k, v in revisions.items())
    assert parent.data.params["budget"] == "preset" and all(r.data.tags["budget"] == "preset" for r in trials)
    assert "preset smoke, budget preset); arms plain, vme-tuned" in output
    summary = parent.data.metrics
    assert "search/vme-tuned/dev_en/accuracy" in summary and not any(k.startswith("best/") for k in summary)
    assert summary["confirm/plain/runs_finished"] == summary["confirm/vme-tuned/runs_finished"] == 2
    assert {"confirm/plain/test/accuracy/avg/mean", "confirm/vme-tuned/dev_en/accuracy/std"} <= set(summary)
    assert {"reference/frozen_probe/test/accuracy/avg", "reference/random_init_probe/dev_en/accuracy"} <= set(summary)
    assert "[reference] frozen_probe: English dev" in output
    assert {"per_language_plain.csv", "per_language_vme-tuned.csv"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    profile = {k: v for k, v in summary.items() if k.startswith("profile/")}  # the study's time profile
    assert profile["profile/training_steps_s"] > 0 and profile["profile/evaluation_s"] > 0, profile
    assert "time profile over 7 trial run(s)" in output  # 3 search trials, 2 confirm seeds x 2 arms
    assert summary["plan/runs"] == 7 and summary["plan/wall_s"] > 0  # the plan's estimate, beside the measured
    assert "[study] wall time: planned " in output
    # the console a person reads: one line per run event, a progress line per run, none of Ray's noise
    lines = output.splitlines()
    assert sum(" started   search vme-tuned seed 7 " in line for line in lines) == 3
    assert sum(" started   confirm " in line for line in lines) == 4
    ended = [line for line in lines if re.match(r"\[\d\d:\d\d:\d\d\] \S+ (finished$|stopped early at step )", line)]
    assert len(ended) == 7, ended  # a run's end, once per run (the arm summaries below say "... finished" too)
    assert "[study] 7/7 runs done" in output and "ray-logs" in output
    for noise in ("PlacementGroupCleaner", "TensorBoard", "Current best trial", "PreemptionWatcher",
                  "worker processes", "Configuration for experiment", "A new study created"):
        assert noise not in output, noise
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert {"modality", "alpha", "beta", "w_robust", "ap_layer", "lr"} <= set(run.data.params)
        assert run.data.params["scaling.workers"] == "2"
        for lang in ("en", "de", "ja", "uk"):
            assert f"test/accuracy/{lang}" in run.data.metrics
        for family in ("Indo-European", "Japonic"):
            assert f"family/accuracy/{family}" in run.data.metrics
        assert {"dev_en/accuracy", "loss/ep", "loss/ap", "train/tokens_per_s", "train/sequences_per_s"} <= set(
            run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "dev_en/accuracy")) == 3  # a step series
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        modality = run.data.params["modality"]
        # the selected report per language, and per example (for the report's bootstrap intervals)
        if modality == "none":
            assert artifacts == {"per_language.csv", "per_example.json"}
            assert "intermediate_steps" not in run.data.params
        else:  # the stage's parameters, loss series, checkpoint and metadata are part of the trial's run
            assert artifacts == {"per_language.csv", "per_example.json", "stage.json"}
            assert {"intermediate_steps", "intermediate.checkpoint", "intermediate.cache_hit"} <= set(run.data.params)
            assert client.get_metric_history(run.info.run_id, "intermediate/loss")
            assert ("vision_lr" in run.data.params) == (modality == "multimodal")
    assert sorted(r.data.params["modality"] for r in trials) == ["multimodal", "none", "text"]
    assert {r.data.params["seed"] for r in trials} == {"7"}  # the search runs on the preset's seed
    _, _, confirm = study_runs(smoke_experiment["uri"], "e2e", model="tiny", phase="confirm")
    seeds = {(r.data.tags["arm"], r.data.params["seed"]) for r in confirm}
    assert seeds == {(arm, seed) for arm in ("plain", "vme-tuned") for seed in ("8", "9")}  # fresh, shared by arms
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.info.status == "FINISHED"
               for r in confirm)
    plain = [r for r in confirm if r.data.tags["arm"] == "plain"]
    assert all(r.data.params["objective"] == "plain" and r.data.params["k_copies"] == "3"
               and r.data.params["global_batch"] == "32" and r.data.params["grad_accum"] == "1" for r in plain)
    tuned = [r for r in confirm if r.data.tags["arm"] == "vme-tuned"]
    assert all(r.data.params["alpha"] == tuned[0].data.params["alpha"] for r in tuned)  # one selected configuration
    source = [r for r in trials if r.data.params["alpha"] == tuned[0].data.params["alpha"]]  # ... a search trial's
    assert len(source) == 1 and source[0].data.params["modality"] == tuned[0].data.params["modality"]
    assert all(len(client.get_metric_history(r.info.run_id, "dev_en/accuracy")) == 3 for r in confirm)  # no stop


@pytest.mark.e2e
def test_confirm_runs_carry_the_alignment_probe_unless_it_is_switched_off(smoke_experiment):
    """tiny-bert's study probed by default (a pocket task): each confirm run's selected evaluation logged the probe
    (metrics, per-sentence hits in per_example.json, the figure's embeddings); tiny's ran --no-alignment-probe."""
    client, parents, confirms = study_runs(smoke_experiment["uri"], "e2e", model="tiny-bert", phase="confirm")
    assert len(confirms) == 4 and parents[0].data.params["alignment_probe"] == "True"
    for run in confirms:
        metrics = run.data.metrics
        for lang in ("de", "ja", "uk"):  # the targets, each with Django catalogue sentences; 6 layers, ap_layer 5:
            # hidden state 6 is both probed layers
            assert f"align_delta/xx_to_en/layer6/{lang}" in metrics, sorted(metrics)[:20]
            assert f"align_pretrained/centred_distance/layer6/{lang}" in metrics
        assert not any(k.endswith("/en") for k in metrics if k.startswith("align"))  # English is the pivot
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"per_example.json", "alignment_embeddings.npz"} <= artifacts
        examples = json.loads(Path(client.download_artifacts(run.info.run_id, "per_example.json")).read_text())
        assert set(examples["alignment_units"]["xx_to_en/layer6"]) == {"de", "ja", "uk"}
        assert examples["alignment_metrics"]["align_delta/xx_to_en/layer6/de"] == pytest.approx(
            examples["alignment_metrics"]["align/xx_to_en/layer6/de"]
            - examples["alignment_metrics"]["align_pretrained/xx_to_en/layer6/de"])
    _, tiny_parents, others = study_runs(smoke_experiment["uri"], "e2e", model="tiny")
    assert tiny_parents[0].data.params["alignment_probe"] == "False"
    assert others and not any(k.startswith("align") for run in others for k in run.data.metrics)


def test_the_alignment_probe_is_on_by_default_where_parallel_sentences_are_at_hand(capsys):
    from study.data.tasks import get_task
    from study.train.config import TrainConfig
    from study.tune.settings import resolve_alignment_probe

    pocket, xnli = get_task("pocket-topic"), get_task("xnli")
    base = TrainConfig(model="tiny", task="pocket-topic", languages=["en", "de"], max_eval_examples=8)
    assert resolve_alignment_probe(None, pocket, base) is True
    assert resolve_alignment_probe(False, pocket, base) is False
    assert resolve_alignment_probe(None, xnli, base) is False  # XTREME-R: Tatoeba is read only when asked for
    english_only = TrainConfig(model="tiny", task="pocket-topic", languages=["en"])
    assert resolve_alignment_probe(None, pocket, english_only) is False
    assert "no alignment probe: alignment probe: none of the languages en" in capsys.readouterr().err
    with pytest.raises(StudyError, match="none of the languages en has parallel sentences in pocket-retrieval"):
        resolve_alignment_probe(True, pocket, english_only)


def test_the_modality_experiment_probes_alignment_by_default_and_stops_early_without_its_sentences(capsys):
    """The modality experiment asks whether a stage aligns the languages: its confirm runs carry the probe unless
    --no-alignment-probe, on XTREME-R too; sentences it cannot read are one StudyError (before Ray), not a warning."""
    from study.data.tasks import get_task
    from study.train.config import TrainConfig
    from study.tune.settings import resolve_alignment_probe

    pocket, udpos = get_task("pocket-topic"), get_task("udpos")
    base = TrainConfig(model="tiny", task="pocket-topic", languages=["en", "de"], max_eval_examples=8)
    assert resolve_alignment_probe(None, pocket, base, modality_design=True) is True
    assert resolve_alignment_probe(False, pocket, base, modality_design=True) is False
    english_only = TrainConfig(model="tiny", task="pocket-topic", languages=["en"])
    with pytest.raises(StudyError, match=r"^--experiment-design modality runs the alignment probe by default, and it "
                                         r"cannot run \(alignment probe: none of the languages en .*\): give it "
                                         r"parallel sentences, or pass --no-alignment-probe$"):
        resolve_alignment_probe(None, pocket, english_only, modality_design=True)
    yoruba = TrainConfig(model="tiny", task="udpos", languages=["en", "yo"])  # XTREME-R: no Tatoeba for yo
    assert resolve_alignment_probe(None, udpos, yoruba) is False  # the arms design reads nothing here
    with pytest.raises(StudyError, match="none of the languages en, yo has parallel sentences in tatoeba"):
        resolve_alignment_probe(None, udpos, yoruba, modality_design=True)
    assert resolve_alignment_probe(None, udpos, yoruba, modality_design=True, fetch=False) is True  # a plan
    assert "no alignment probe" not in capsys.readouterr().err


@pytest.mark.e2e
def test_smoke_study_listens_on_loopback_only_but_for_torchs_store(smoke_experiment):
    """Every socket the study's processes listened on while it ran (sampled every half second: the driver, GCS,
    raylet, Ray's agents, Tune and Train actors, Train workers mid-trial) was on loopback, but one: the c10d store
    of torch's process group, which rank 0 of each Train run hosts on every interface (torch's TCPStore takes no
    bind address; README, Security defaults) and is itself a client of."""
    for model, seen in smoke_experiment["listeners"].items():
        processes = {s.process for s in seen}
        assert {"gcs_server", "raylet", "ray::RayTrainWorker"} <= processes, (model, processes)  # seen mid-trial
        stores = {(s.pid, s.port) for s in seen if s.process == "ray::RayTrainWorker" and s.self_connected}
        exposed = [s for s in seen if s.ip not in LOOPBACK and (s.pid, s.port) not in stores]
        assert not exposed, f"{model}: " + "; ".join(map(str, exposed))
        assert {s.ip for s in seen if (s.pid, s.port) in stores} <= LOOPBACK | {"::", "0.0.0.0"}


@pytest.mark.e2e
def test_nan_trial_is_failed_and_the_study_continues(mlflow_server, tmp_path):
    process = start_study("--arms", "vme-tuned", "--trials", "2", "--seeds", "1", "--storage", str(tmp_path),
                          "--mlflow-uri", mlflow_server, "--experiment", "nan", "--max-concurrent", "1",
                          "--inject-faults", json.dumps({"nan_marker": str(tmp_path / "nan")}))
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    _, _, trials = study_runs(mlflow_server, "nan", phase="search")
    assert sorted(r.info.status for r in trials) == ["FAILED", "FINISHED"]
    _, _, confirm = study_runs(mlflow_server, "nan", phase="confirm")
    assert [r.info.status for r in confirm] == ["FINISHED"]  # the selection went on without the failed trial
    assert "loss became non-finite" in output


@pytest.mark.e2e
def test_kills_during_a_trial_a_write_and_the_confirm_phase_lose_nothing(tmp_path):
    """benchmarks/chaos.py with 3 signals — SIGKILL of the driver and everything it started, SIGINT to its process
    group, SIGTERM to it or its group, in a seeded order — one while a run is RUNNING past its first report with a
    checkpoint registered, one inside an MLflow write, one while a confirm run is RUNNING — each followed by
    --resume: each SIGINT/SIGTERM ends the study by itself (exit 128 + the signal, KILLED), every search trial and
    confirm run exists once, FINISHED at its last step, with its English-dev history and per-language table, and each
    interrupted run went on from its checkpoint. The moments are states the script waits for (MLflow, Ray Train's
    checkpoint snapshot, the write marker), not times."""
    figures_file = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--kills", "3", "--seed", "0",
                             "--workdir", str(tmp_path / "study"), "--json", str(figures_file)],
                            capture_output=True, text=True, timeout=2400)
    assert figures_file.exists(), result.stderr[-3000:]
    figures = json.loads(figures_file.read_text())
    assert sorted(k.split("/")[0] for k in figures["kinds"]) == ["confirm", "trial", "write"], (figures,
                                                                                                result.stderr[-3000:])
    assert sorted(k.split("/")[1] for k in figures["kinds"]) == ["SIGINT", "SIGKILL", "SIGTERM"], figures
    assert figures["survived"] == 3 and figures["wrongly_finished"] == 0, (figures, result.stderr[-3000:])
    assert figures["runs_lost"] == 0 and figures["duplicates"] == 0, figures
    assert figures["runs_found"] == figures["runs_expected"] == 7, figures  # 3 search trials, 2 arms x 2 seeds
    assert len(figures["victims_resumed_from_step"]) == 2 and min(figures["victims_resumed_from_step"]) >= 2, figures
    assert result.returncode == 0 and "kills survived: 3 of 3" in result.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("args, message", [
    (["--search-space", "BAD"], "not valid YAML"),
    (["--model", "roberta"], "unknown model 'roberta'"),
    (["--mlflow-uri", "http://127.0.0.1:9"], "MLflow tracking server http://127.0.0.1:9 is unreachable"),
    (["--model", "mbert"], "use --model e5-small"),
    (["--search-space", "FROZEN"], "frozen.yaml: params.vision_train: vision_train=frozen needs a pretrained vision"),
    (["--intermediate-data", "EMPTY"], "captions.tsv has no captions"),
    (["--caption-languages", "en,de,de"], "--caption-languages en,de,de lists de more than once"),
    (["--caption-languages", "en,hi"], "(offline) has no captions in hi; it has en, es, ja"),
    (["--workers", "0"], "--workers 0 is invalid: it must be a whole number >= 1"),
    (["--gpus-per-worker", "-1"], "--gpus-per-worker -1 is invalid"),
    (["--cpus-per-worker", "0"], "--cpus-per-worker 0.0 is invalid: it must be > 0"),
    (["--max-concurrent", "0"], "--max-concurrent 0 is invalid: it must be >= 1"),
    (["--trials", "-2"], "--trials -2 is invalid: it must be >= 1"),
    (["--seeds", "0"], "--seeds 0 is invalid: it must be >= 1"),
    (["--arms", "plain,vme"], "--arms 'plain,vme': unknown arm(s) vme; choose from plain, vme-reference, vme-tuned"),
    (["--arms", "plain,plain"], "--arms 'plain,plain' names an arm twice"),
    (["--experiment-design", "modality", "--arms", "vme-tuned"], "--experiment-design modality fixes the fine-tuning"),
    (["--data-dir", "MISSING"], "is not a directory"),
    (["--search-space", "NOPARALLEL", "--alignment-probe"],
     "alignment probe: none of the languages en, yo has parallel sentences in tatoeba"),
    (["--search-space", "NOPARALLEL", "--experiment-design", "modality"],
     "--experiment-design modality runs the alignment probe by default, and it cannot run (alignment probe: none"),
])
def test_bad_input_exits_2_before_ray_or_mlflow(args, message, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\nparams: [unclosed\n")
    frozen = tmp_path / "frozen.yaml"  # a scratch vision tower (the offline default) cannot be frozen
    frozen.write_text("model: tiny\ntask: pocket-topic\nparams:\n  modality: {type: categorical, choices: [none, "
                      "multimodal]}\n  vision_train: {type: categorical, choices: [frozen], when: {modality: "
                      "[multimodal]}}\npresets:\n  smoke: {max_steps: 2}\n")
    no_parallel = tmp_path / "no_parallel.yaml"  # Yoruba has UD-POS test data but no Tatoeba sentences
    no_parallel.write_text("model: tiny\ntask: udpos\nparams:\n  lr: {type: float, low: 1.0e-4, high: 3.0e-3}\n"
                           "presets:\n  smoke: {max_steps: 2, languages: [en, yo]}\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "captions.tsv").write_text("")
    placeholders = {"BAD": bad, "FROZEN": frozen, "EMPTY": tmp_path / "empty", "MISSING": tmp_path / "missing",
                    "NOPARALLEL": no_parallel}
    args = [str(placeholders.get(a, a)) for a in args]
    if "--search-space" not in args and "--model" not in args:  # the tiny space searches the modality
        args += ["--search-space", str(ROOT / "search_spaces" / "tiny.yaml")]
    db = tmp_path / "mlflow.db"
    if "--mlflow-uri" not in args:
        args += ["--mlflow-uri", f"sqlite:///{db}"]
    process = subprocess.run([sys.executable, "-m", "study.tune", *args, "--storage", str(tmp_path / "runs")],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert process.returncode == 2, process.stderr
    assert message in process.stderr and len(process.stderr.strip().splitlines()) == 1, process.stderr
    assert not db.exists() and not (tmp_path / "runs").exists()  # no MLflow run, no Ray storage
    assert "Ray" not in process.stderr


def test_resume_without_name_takes_the_newest_study_not_a_trial_run(tmp_path):
    from argparse import Namespace

    from study.tune.settings import _default_name

    for name, phase in (("study-m-t-smoke-20260101-000000", "search-vme-tuned"),
                        ("study-m-t-smoke-20260102-000000", "confirm")):
        (tmp_path / name / phase).mkdir(parents=True)
        (tmp_path / name / phase / "tuner.pkl").write_bytes(b"")
    (tmp_path / "study-m-t-smoke-20260102-000000-trial-abc").mkdir()  # a trial's Train run: no Tuner state
    assert _default_name(Namespace(resume=True), str(tmp_path), "study-m-t-smoke") == "study-m-t-smoke-20260102-000000"
    with pytest.raises(StudyError, match="nothing to resume"):
        _default_name(Namespace(resume=True), str(tmp_path), "study-other")
    assert _default_name(Namespace(resume=False), str(tmp_path), "study-m").startswith("study-m-20")


def test_mlflow_check_waits_for_a_slow_server_and_fails_at_once_on_a_refused_one():
    """A loaded machine's MLflow server may take longer than one probe to answer: the check tries again on a timeout,
    but a refused connection (nothing listens) is a one-line error at once."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from helpers import free_port

    from study.track.mlflow_store import check_server

    calls = []

    class SlowFirstAnswer(BaseHTTPRequestHandler):
        def do_GET(self):
            calls.append(self.path)
            if len(calls) == 1:
                time.sleep(1.0)  # longer than the probe's timeout below
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowFirstAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_server(f"http://127.0.0.1:{server.server_address[1]}", attempts=3, timeout_s=0.3)
        assert calls[:2] == ["/health", "/health"]  # timed out once, answered on the second try
    finally:
        server.shutdown()
    started = time.time()
    with pytest.raises(StudyError, match="is unreachable"):
        check_server(f"http://127.0.0.1:{free_port()}", attempts=3, timeout_s=5)
    assert time.time() - started < 2  # refused: no retry


# --- every end of the study leaves MLflow terminal (stand-in tuners drive the MLflow callback: no Ray) -------------


class StandInTrial(SimpleNamespace):
    def __str__(self):
        return f"trial_{self.trial_id}"


class StandInTuner:
    """A Tuner's part in the study's MLflow record: ``fit`` starts each trial in the MLflow callback, then raises
    ``raises`` if given, or reports English dev ``dev`` and completes the trial (fails it when ``dev`` is None) and
    returns the results."""

    def __init__(self, callback, config: dict, trials: dict, raises: BaseException | None = None):
        self.callback, self.config, self.trials, self.raises = callback, config, trials, raises

    def fit(self) -> list:
        from study.core.protocol import evaluation_metrics

        trials = {trial_id: StandInTrial(trial_id=trial_id, config=self.config) for trial_id in self.trials}
        for trial in trials.values():
            self.callback.on_trial_start(0, [], trial)
        if self.raises:
            raise self.raises
        results = []
        for trial_id, dev in self.trials.items():
            if dev is None:
                self.callback.on_trial_error(0, [], trials[trial_id])
                results.append(SimpleNamespace(error=RuntimeError("trial failed"), metrics={}))
                continue
            report = {"step": 2, "train/total_steps": 2, "dev_en/accuracy": dev,
                      **evaluation_metrics("accuracy", {"en": 0.9, "de": dev}, english_dev=dev)}
            self.callback.on_trial_result(0, [], trials[trial_id], report)
            self.callback.on_trial_complete(0, [], trials[trial_id])
            results.append(SimpleNamespace(error=None, metrics=report, metrics_dataframe=None, config=self.config,
                                           path=f"/runs/study-x/{trial_id}"))
        return results


FINE, FAILING = {"t1": 0.5, "t2": 0.6}, {"t1": None, "t2": None}
SEEDS, FAILING_SEEDS = {"s1": 0.55, "s2": 0.65}, {"s1": None, "s2": None}
DONE = {"t1": "FINISHED", "t2": "FINISHED"}


@pytest.mark.e2e
@pytest.mark.parametrize("search, seeds, flush_fails, raised, expected", [
    ((FINE, RuntimeError("injected in search")), None, False, RuntimeError,
     {"study": "FAILED", "t1": "KILLED", "t2": "KILLED"}),
    ((FINE, KeyboardInterrupt()), None, False, KeyboardInterrupt, {"study": "KILLED", "t1": "KILLED", "t2": "KILLED"}),
    ((FAILING, None), None, False, StudyError, {"study": "FAILED", "t1": "FAILED", "t2": "FAILED"}),
    ((FINE, None), (SEEDS, RuntimeError("injected in confirm")), False, RuntimeError,
     {"study": "FAILED", **DONE, "s1": "KILLED", "s2": "KILLED"}),
    ((FINE, None), (FAILING_SEEDS, None), False, None, {"study": "FINISHED", **DONE, "s1": "FAILED", "s2": "FAILED"}),
    ((FINE, None), (SEEDS, None), True, OSError, {"study": "FAILED", **DONE, "s1": "FINISHED", "s2": "FINISHED"}),
    ((FINE, None), (SEEDS, None), False, None, {"study": "FINISHED", **DONE, "s1": "FINISHED", "s2": "FINISHED"}),
], ids=["search raises", "search interrupted", "no trial finishes", "confirm raises", "every confirm run fails",
        "final flush raises", "no failure"])
def test_every_end_of_the_study_leaves_its_runs_in_mlflow_terminal(tmp_path, monkeypatch, search, seeds, flush_fails,
                                                                  raised, expected):
    from mlflow.tracking import MlflowClient

    from study.cli.tune import parse_args
    from study.track.writer import StudyRun
    from study.train.ray_setup import Scaling
    from study.tune import driver as tune
    from study.tune.settings import resolve
    from study.tune.trial import tune_constants

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = parse_args(["--model", "tiny", "--arms", "vme-tuned", "--trials", "2", "--seeds", "2",
                            "--storage", str(tmp_path / "runs"), "--name", "study-x", "--mlflow-uri", uri,
                            "--experiment", "end"])
    settings = resolve(args)
    config = {**tune_constants(settings.base, settings.stage, Scaling(), settings.storage, settings.name,
                               arm="vme-tuned"),
              "train_loop_config": {"alpha": 0.1}, "stage": {"modality": "none"}}
    monkeypatch.setattr(tune, "concurrency", lambda *args: (1, 1))
    monkeypatch.setattr(tune, "build_tuner", lambda settings, arm, scaling, limit, callbacks, trainable, path, verbose:
                        StandInTuner(callbacks[0], config, *search))
    monkeypatch.setattr(tune, "confirm_tuner", lambda args, settings, selected, callbacks, trainable, limit, path:
                        StandInTuner(callbacks[0], config, *seeds))
    flushes, flush = [], StudyRun.flush

    def final_flush_fails(study_run):
        flushes.append(1)
        if flush_fails and len(flushes) == 2:
            raise OSError("injected in the final flush")
        flush(study_run)

    monkeypatch.setattr(StudyRun, "flush", final_flush_fails)
    if raised:
        with pytest.raises(raised):
            tune._run(args, settings)
    else:
        assert tune._run(args, settings) == 0
    mlflow = MlflowClient(uri)
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("end").experiment_id])
    assert {run.data.tags.get("trial_id", "study"): run.info.status for run in runs} == expected
    if seeds == (FAILING_SEEDS, None):  # no mean over no confirm run: the study says so and ends
        assert next(r for r in runs if "trial_id" not in r.data.tags).data.metrics[
            "confirm/vme-tuned/runs_finished"] == 0
    parent = next(r for r in runs if "trial_id" not in r.data.tags)
    assert parent.data.params["plan.device"].startswith("cpu: ")  # the plan's estimate, logged before anything ran
    if expected["study"] == "FINISHED":  # and its counts beside the study's measured metrics
        assert parent.data.metrics["plan/runs"] == 4 and "plan/vme-tuned/search/steps_per_run" in parent.data.metrics


def test_the_time_profile_splits_each_trial_into_its_phases(capsys):
    """Hand-made last reports: trial a started at unix 100, ran a 5 s intermediate stage, and its workers started at
    112 (7 s of start-up); trial b was not seen starting (a resumed study), so its start-up counts under "other"."""
    from study.tune.driver import PROFILE_PHASES, time_profile
    from study.tune.summary import print_time_profile

    a = SimpleNamespace(metrics={"trial_id": "a", "time_total_s": 60.0, "time/worker_start_unix": 112.0,
                                 "time/train_s": 30.0, "time/eval_s": 10.0, "time/checkpoint_s": 2.0})
    b = SimpleNamespace(metrics={"trial_id": "b", "time_total_s": 20.0, "time/worker_start_unix": 500.0,
                                 "time/train_s": 10.0, "time/eval_s": 5.0, "time/checkpoint_s": 1.0})
    failed_early = SimpleNamespace(metrics={})  # no report at all: nothing to count
    totals = time_profile([a, b, failed_early], trial_started={"a": 100.0}, stage_seconds={"a": 5.0})
    assert list(totals) == list(PROFILE_PHASES)
    assert totals == {"start-up": 7.0, "intermediate stage": 5.0, "training steps": 40.0, "evaluation": 15.0,
                      "checkpoints": 3.0, "other": (60 - 7 - 5 - 42) + (20 - 16)}
    print_time_profile(totals, mlflow_seconds=1.5, trials=2)
    shown = capsys.readouterr().err
    assert "time profile over 2 trial run(s) (80 s of trial wall time)" in shown
    assert "training steps" in shown and "50.0 %" in shown and "MLflow writes" in shown


def test_a_failed_runs_line_is_its_errors_last_line_read_locally_before_storage_has_it(tmp_path):
    """Tune writes error.txt locally before it reaches the trial's storage (get_error is still None then): the
    console reads the local copy, and names the error class without its module."""
    from study.tune.console import error_line

    local = tmp_path / "error.txt"
    local.write_text("Failure # 1\nTraceback (most recent call last):\n  File ...\n"
                     "study.core.errors.StudyError: 24 training pairs give no full optimizer step\n\n")
    assert error_line(StandInTrial(get_error=lambda: None, error_file=str(local))) == (
        "StudyError: 24 training pairs give no full optimizer step")
    assert error_line(StandInTrial(get_error=lambda: None, error_file=None)) == "see the log files"


def test_the_console_prints_one_line_per_run_event_and_the_progress():
    """Stand-in trials through ConsoleCallback: started (phase, arm, seed, searched values in short form),
    evaluated (English dev and target mean), finished or stopped early (a last step before the planned ones),
    failed (the error's last line), and after each end the runs done of the total with an ETA."""
    import io

    from study.train.config import TrainConfig
    from study.train.ray_setup import Scaling
    from study.tune.console import ConsoleCallback
    from study.tune.trial import tune_constants

    config = {**tune_constants(TrainConfig(model="tiny", seed=8), {}, Scaling(), "/runs", "s", arm="vme-tuned"),
              "train_loop_config": {"alpha": 0.123456}, "stage": {"modality": "text"}}
    stream = io.StringIO()
    console = ConsoleCallback("accuracy", total=3, stream=stream)
    runs = [StandInTrial(trial_id=f"t{i}", config=config, last_result={"step": step, "train/total_steps": 6},
                        get_error=lambda: RuntimeError("Traceback ...\nStudyError: loss became non-finite"),
                        error_file=None)
            for i, step in enumerate((6, 2, 4))]
    for trial in runs:
        console.on_trial_start(0, [], trial)
    console.on_trial_result(0, [], runs[0], {"step": 2, "dev_en/accuracy": 0.5, "test/accuracy/avg": 0.25})
    console.on_trial_complete(0, [], runs[0])
    console.on_trial_complete(0, [], runs[1])
    console.on_trial_error(0, [], runs[2])
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("t0 started   search vme-tuned seed 8 modality text alpha=0.1235")
    assert "t0 evaluated step 2: English dev 0.5000, target mean 0.2500 (study ETA " in lines[3]
    assert lines[4].endswith("t0 finished") and lines[5].startswith("[study] 1/3 runs done, elapsed ")
    assert lines[6].endswith("t1 stopped early at step 2 of 6 (ASHA)")
    assert lines[8].endswith("t2 FAILED: StudyError: loss became non-finite")
    assert lines[9].startswith("[study] 3/3 runs done") and lines[9].endswith("ETA 0s") and len(lines) == 10


def test_the_eta_weighs_runs_by_their_cost_and_counts_runs_in_progress():
    """The ETA extrapolates cost units, not runs: a finished plain run (1 unit) of a study of one plain and one VME
    run (1 + 1.7 units) leaves 1.7 units; half of the VME run done leaves 0.85."""
    from study.tune.console import VME_STEP_COST, eta

    assert eta(1.0, 1.0 + VME_STEP_COST, 60.0) == "1m42s"
    assert eta(1.0 + VME_STEP_COST / 2, 1.0 + VME_STEP_COST, 111.0) == "51s"
    assert eta(0.0, 3.0, 5.0) == "?"


def test_runs_are_named_for_people_and_carry_arm_and_phase_as_params():
    from study.train.config import TrainConfig
    from study.train.ray_setup import Scaling
    from study.tune.callbacks import run_name
    from study.tune.trial import TrialConfig, confirm_config, tune_constants

    base = TrainConfig(model="tiny", task="pocket-topic", seed=7)
    search = {**tune_constants(base, {}, Scaling(), "/tmp", "s", arm="vme-tuned"), "train_loop_config": {},
              "stage": {"modality": "none"}}
    assert run_name(TrialConfig.from_tune(search), "ab12c_00002") == "search · vme-tuned · #3"
    assert run_name(TrialConfig.from_tune(confirm_config(search, 8)), "ab12c_00000") == "confirm · vme-tuned · seed 8"


def test_the_study_ends_with_its_answer_computed_by_the_reports_inference():
    """The console's last lines: the arm contrast with its paired-by-seed interval (also when it covers zero), the
    runs per side and languages, each arm's mean ± sample s.d., and the reference lines. Hand-computed: per-seed
    differences 0.01, 0.02, 0.00 -> mean 0.01, s.d. 0.01, se 0.01/sqrt(3), t(2, 0.975) = 4.3027 -> ±0.0248."""
    from study.tune.summary import SEED_KEY, headline

    key = "test/accuracy/avg"
    settings = SimpleNamespace(task=SimpleNamespace(metric="accuracy", languages=("en", "de", "ja")),
                               base=SimpleNamespace(languages=None),
                               arms=(SimpleNamespace(name="plain"), SimpleNamespace(name="vme-reference")))
    reports = {"plain": [{key: v, SEED_KEY: s} for v, s in ((0.24, 8), (0.25, 9), (0.26, 10))],
               "vme-reference": [{key: v, SEED_KEY: s} for v, s in ((0.27, 9), (0.25, 8), (0.26, 10))]}
    lines, numbers = headline(settings, reports, {"reference/frozen_probe/test/accuracy/avg": 0.51})
    assert lines[1] == "=== the answer: test/accuracy/avg, the mean over 2 target languages"
    assert lines[2].startswith("  vme-reference − plain: +0.0100 [-0.0148, +0.0348] (paired-by-seed t, df=2; "
                               "3 vs 3 runs): no detectable difference")
    assert lines[3] == "  plain: 0.2500 ± 0.0100 (sample s.d.) over 3 seed(s)"
    assert lines[-1] == "  reference lines (same test items): frozen probe 0.5100"
    assert not any("overall" in line.lower() or "xtreme-r" in line.lower() for line in lines)  # one task: no aggregate
    assert numbers["answer/vme-reference-plain/estimate"] == pytest.approx(0.01)
    assert numbers["answer/vme-reference-plain/low"] == pytest.approx(-0.014841, abs=1e-5)
