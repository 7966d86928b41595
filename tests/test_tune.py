"""The study: YAML search spaces, a real smoke study against a real MLflow server, NaN trials, kill and resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from helpers import LOOPBACK, start_study, study_runs, trials_past_first_report

from study.errors import StudyError
from study.search_space import load_search_space

ROOT = Path(__file__).resolve().parents[1]


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
        study.enqueue_trial(fixed)  # values of parameters the space does not search are ignored
        trial = study.ask()
        space.define_by_run(trial)
        return set(trial.params)

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


def test_define_by_run_samples_only_the_branch_taken(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(CONDITIONAL)
    space = load_search_space(path)
    plain = optuna.trial.FixedTrial({"objective": "plain", "modality": "none"})
    space.define_by_run(plain)
    assert set(plain.params) == {"objective", "modality"}  # no VME weight, no multimodal-only parameter
    vme = optuna.trial.FixedTrial({"objective": "vme", "alpha": 0.1, "modality": "none"})
    space.define_by_run(vme)
    assert set(vme.params) == {"objective", "alpha", "modality"}


@pytest.mark.parametrize("body, message", [
    ("model: tiny\ntask: pocket-topic\nparams:\n  alpha: {type: float, low: 1e-2, high: 1.0}\n",
     r"params.alpha.low: low must be a number, got '1e-2'; fix: write numbers like 1.0e-5"),
    ("model: tiny\ntask: pocket-topic\nparams:\n  alfa: {type: float, low: 0.1, high: 1.0}\n",
     r"params.alfa: unknown parameter; fix: use one of"),
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


# --- the study end to end (slow) ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_study_records_every_trial_in_mlflow(smoke_experiment):
    output = smoke_experiment["outputs"]["tiny"]
    assert "best configuration (selected on English dev" in output and "mlflow ui" in output
    client, parents, trials = study_runs(smoke_experiment["uri"], "e2e", model="tiny")
    assert len(parents) == 1 and len(trials) == 3
    parent = parents[0]
    assert parent.data.params["model_offline_stand_in"] == "True" and parent.data.params["preset"] == "smoke"
    assert parent.data.params["search_space_sha256"] and parent.info.status == "FINISHED"
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert {"modality", "alpha", "beta", "w_robust", "ap_layer", "lr"} <= set(run.data.params)
        assert run.data.params["scaling.workers"] == "2"
        for lang in ("en", "de", "ja", "uk"):
            assert f"test/accuracy/{lang}" in run.data.metrics
        for family in ("Indo-European", "Japonic"):
            assert f"family/accuracy/{family}" in run.data.metrics
        assert {"dev_en/accuracy", "loss/ep", "loss/ap"} <= set(run.data.metrics)
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
    repeats = [r for r in client.search_runs([parent.info.experiment_id], "tags.run_kind = 'seed-repeat'")]
    assert len(repeats) == 2 and {r.data.params["seed"] for r in repeats} == {"8", "9"}  # best config, new seeds
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in repeats)
    assert "seeds_finished" in client.get_run(parent.info.run_id).data.metrics


@pytest.mark.slow
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


@pytest.mark.slow
def test_nan_trial_is_failed_and_the_study_continues(mlflow_server, tmp_path):
    process = start_study("--trials", "3", "--storage", str(tmp_path), "--mlflow-uri", mlflow_server,
                     "--experiment", "nan", "--max-concurrent", "1", env={"STUDY_NAN_MARKER": str(tmp_path / "nan")})
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    _, _, trials = study_runs(mlflow_server, "nan")
    assert sorted(r.info.status for r in trials) == ["FAILED", "FINISHED", "FINISHED"]
    assert "loss became non-finite" in output


@pytest.mark.slow
def test_killed_driver_resumes_without_duplicate_runs(mlflow_server, tmp_path):
    """SIGKILL of the study driver while a trial is mid-way (one finished, the next past its first report with a
    checkpoint registered), then --resume: no trial runs twice in MLflow and the interrupted one resumes from its
    checkpoint. The test waits on those states, not on time; a 2 s step delay keeps the window open for seconds."""
    args = ("--trials", "3", "--storage", str(tmp_path), "--mlflow-uri", mlflow_server, "--experiment", "resume",
            "--max-concurrent", "1")
    process = start_study(*args, env={"STUDY_STEP_DELAY_S": "2"})
    deadline, interrupted = time.time() + 600, []
    while time.time() < deadline and not interrupted and process.poll() is None:
        _, _, trials = study_runs(mlflow_server, "resume")
        if any(r.info.status == "FINISHED" for r in trials):
            interrupted = trials_past_first_report(mlflow_server, "resume", tmp_path, reports=1)
        time.sleep(0.5)
    if process.poll() is not None:
        pytest.fail(f"the study ended before a trial could be interrupted: {process.communicate()[0][-3000:]}")
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    process.wait()
    assert interrupted, "no trial was found running past its first report after another had finished"
    client, _, before = study_runs(mlflow_server, "resume")
    victim = client.get_run(interrupted[0].info.run_id)
    assert victim.info.status == "RUNNING", "the kill landed after the trial had finished: nothing was interrupted"
    assert len(before) < 3 or any(r.info.status != "FINISHED" for r in before)
    resumed = start_study(*args, "--resume")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output[-3000:]
    _, parents, trials = study_runs(mlflow_server, "resume")
    assert len(parents) == 1 and len(trials) == 3
    assert all(r.info.status == "FINISHED" for r in trials)
    assert len({r.data.tags["trial_id"] for r in trials}) == 3
    steps = [m.step for m in client.get_metric_history(victim.info.run_id, "dev_en/accuracy")]
    assert steps == sorted(set(steps)) and steps[-1] == 6, steps  # went on from its checkpoint, no step twice
    resumed_from = [m.value for m in client.get_metric_history(victim.info.run_id, "train/resumed_from_step")]
    assert max(resumed_from) >= 2, resumed_from  # the resumed trial restored its checkpoint, not a fresh start


@pytest.mark.parametrize("args, message", [
    (["--search-space", "BAD"], "not valid YAML"),
    (["--model", "roberta"], "unknown model 'roberta'"),
    (["--mlflow-uri", "http://127.0.0.1:9"], "MLflow tracking server http://127.0.0.1:9 is unreachable"),
    (["--model", "mbert"], "use --model e5-small"),
    (["--search-space", "FROZEN"], "frozen.yaml: params.vision_train: vision_train=frozen needs a pretrained vision"),
    (["--intermediate-data", "EMPTY"], "captions.tsv has no captions"),
])
def test_bad_input_exits_2_before_ray_or_mlflow(args, message, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\nparams: [unclosed\n")
    frozen = tmp_path / "frozen.yaml"  # a scratch vision tower (the offline default) cannot be frozen
    frozen.write_text("model: tiny\ntask: pocket-topic\nparams:\n  modality: {type: categorical, choices: [none, "
                      "multimodal]}\n  vision_train: {type: categorical, choices: [frozen], when: {modality: "
                      "[multimodal]}}\npresets:\n  smoke: {max_steps: 2}\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "captions.tsv").write_text("")
    placeholders = {"BAD": bad, "FROZEN": frozen, "EMPTY": tmp_path / "empty"}
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

    from study.tune import _default_name

    for name in ("study-m-t-smoke-20260101-000000", "study-m-t-smoke-20260102-000000"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tuner.pkl").write_bytes(b"")
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

    from study.mlflow_store import check_server

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
