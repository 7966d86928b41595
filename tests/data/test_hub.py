"""The real hub path, end to end, against a local replica of the hub (``hub_replica.py``): every task split and
language (LAReQA: its original files, served as GitHub serves them), the three text models by their canonical ids,
the CLIP tower and the caption data load through the project's public loaders and the real clients; offline from a
filled cache; ``study hub check|prefetch``; one-line errors for what cannot load. The clients read ``HF_ENDPOINT`` /
``HF_HOME`` on import, so each check runs in a subprocess."""

import dataclasses
import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import FIXTURES, free_port, stop
from hub_replica import (
    BAD_TAGS_REPO,
    ROWS,
    SCRIPT_REPO,
    hub_env,
    lareqa_originals,
    mewslix_originals,
    serve,
    start_replica,
    write_lareqa_release,
)

from study.data import tasks as T
from study.data.sources import load_split
from study.models.registry import REGISTRY

pytestmark = pytest.mark.e2e  # each check starts Python with datasets / transformers (seconds)

HUB_TASKS = [t for t in T.TASKS.values() if t.suite in ("xtreme-r", "source")]  # and XCOPA's Social IQa
LAREQA = T.TASKS["lareqa"].hub["test"]

LOAD_EVERY_SPLIT = """
import dataclasses, json
from study.data import tasks as T
from study.data.formats import Bitext, RankingSet
from study.data.sources import load_split
from study.core.errors import run_cli

def main(argv):
    counts, samples = {}, {}
    for task in T.TASKS.values():
        if task.suite not in ("xtreme-r", "source"):
            continue
        splits = [(s, "en") for s in ("train", "dev") if s in task.hub] + [("test", l) for l in task.languages]
        for split, lang in splits:
            rows, key = load_split(task, split, lang), f"{task.name} {split} {lang}"
            if isinstance(rows, Bitext):
                counts[key], samples[key] = len(rows.source), rows.source[0]
            elif isinstance(rows, RankingSet):  # tiny: all of it
                counts[key], samples[key] = len(rows.questions), dataclasses.asdict(rows)
            else:
                counts[key], samples[key] = len(rows), rows[0]
    print(json.dumps({"counts": counts, "samples": samples}))

run_cli(main)
"""


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    server, endpoint = start_replica(tmp_path_factory.mktemp("hub"), free_port())
    yield endpoint
    stop(server)


def _python(code: str, env: dict, *args: str, timeout: int = 300):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _release_copies(home: Path) -> list[Path]:
    """The files datasets' ``cached_path`` downloaded under ``home`` (beside each: its .json metadata and .lock)."""
    return [p for p in (home / "datasets" / "downloads").glob("*") if p.is_file() and not p.suffix]


def _one_line_error(result, *fragments: str) -> str:
    """The error line of a CLI that failed with exit 2: the last line on stderr, no traceback (progress bars of
    the downloads before it may stand above it)."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


@pytest.mark.e2e
def test_every_task_split_and_language_loads_from_the_hub_then_offline_from_the_cache(replica, tmp_path):
    home = tmp_path / "hf"
    # LAReQA's release files from a server of their own, gone for the offline runs (the same URLs, as GitHub's are)
    write_lareqa_release(tmp_path / "github")
    github, github_url = serve(tmp_path / "github", free_port())
    releases = {"STUDY_RELEASE_BASE_URL": f"{github_url}/releases"}
    try:
        online = _python(LOAD_EVERY_SPLIT, hub_env(replica, home, **releases))
    finally:
        stop(github)
    assert online.returncode == 0, online.stderr[-3000:]
    loaded = json.loads(online.stdout.strip().splitlines()[-1])
    expected = {f"{t.name} {s} {lang}" for t in HUB_TASKS
                for s, lang in [(s, "en") for s in ("train", "dev") if s in t.hub] + [("test", x) for x in t.languages]}
    assert set(loaded["counts"]) == expected
    # every split has the replica's rows; TyDiQA's mixed GoldP split is cut to one language by id prefix; SQuAD's
    # dev set (MLQA's and TyDiQA's) has twice as many, and XQuAD's leaves out its half that is XQuAD's English test;
    # Mewsli-X's train and dev are its archive's English mention-entity pairs (the dual encoder's), one each there
    assert {k: n for k, n in loaded["counts"].items() if n != ROWS} == {"mlqa dev en": 2 * ROWS,
                                                                        "tydiqa dev en": 2 * ROWS,
                                                                        "mewslix train en": 1, "mewslix dev en": 1}
    assert loaded["samples"]["mewslix train en"]["entity"]["entity_id"] == "Q1"
    assert loaded["samples"]["tydiqa test ar"]["id"].startswith("arabic-")
    assert loaded["samples"]["tydiqa train en"]["id"].startswith("english-")
    assert set(loaded["samples"]["udpos test ja"]["tags"]) <= set(T.TASKS["udpos"].labels)  # string tags, checked
    assert loaded["samples"]["panx test de"]["tags"][0] in T.TASKS["panx"].labels  # class labels, decoded
    assert loaded["samples"]["tatoeba test zh"].startswith("cmn ")  # LASER's pair name for Chinese
    assert loaded["samples"]["mlqa test de"]["answers"]["text"] == ["answer 0"]
    assert loaded["samples"]["siqa train en"]["choices"] == ["one", "two", "three"]  # Social IQa, XCOPA's first stage
    assert loaded["samples"]["siqa train en"]["label"] == 0  # its label "1" is the first answer
    # Mewsli-X from izhx/mewsli-x's raw.tar.gz and LAReQA from its release files on GitHub: exactly what --data-dir
    # reads from the same files
    local = tmp_path / "data"
    (local / "mewslix").mkdir(parents=True)
    for name, text in mewslix_originals().items():
        (local / "mewslix" / name).write_text(text)
    (local / "lareqa" / "xquad-r").mkdir(parents=True)
    for lang, text in lareqa_originals().items():
        (local / "lareqa" / "xquad-r" / f"{lang}.json").write_text(text)
    for task in ("mewslix", "lareqa"):
        for lang in T.TASKS[task].languages:
            expected = dataclasses.asdict(load_split(T.TASKS[task], "test", lang, local))
            assert loaded["samples"][f"{task} test {lang}"] == expected and expected["questions"], (task, lang)
    assert len(loaded["samples"]["lareqa test de"]["candidates"]) == 11 * 12  # the pool: every language's sentences
    # XNLI's per-language test set comes without that language's (machine-translated) training split
    cached = {str(p.relative_to(home)) for p in home.rglob("*.parquet")}
    assert any("xnli" in p and p.endswith("ar/test-00000-of-00001.parquet") for p in cached)
    assert not any("xnli" in p and "ar/train" in p for p in cached)
    assert [p.name for p in home.rglob("*") if "mewsli-x" in str(p) and p.is_file() and "snapshots" in p.parts] == [
        "raw.tar.gz"]  # one file, read in place
    assert len(_release_copies(home)) == 11  # LAReQA's files, each downloaded once into the datasets cache

    for env in ({"HF_HUB_OFFLINE": "1"}, {}):  # offline mode, then a hub that does not answer
        endpoint = replica if env else f"http://127.0.0.1:{free_port()}"
        offline = _python(LOAD_EVERY_SPLIT, hub_env(endpoint, home, **env, **releases))
        assert offline.returncode == 0, offline.stderr[-3000:]
        assert json.loads(offline.stdout.strip().splitlines()[-1]) == loaded

    empty = _python(LOAD_EVERY_SPLIT, hub_env(replica, tmp_path / "empty", HF_HUB_OFFLINE="1"))
    _one_line_error(empty, "is not in the cache", "HF_HUB_OFFLINE is set", "study hub prefetch")


MODELS = """
import sys
from study.core.errors import run_cli
from study.train.stage import CLIP_TOWER, VisionTower
from study.models.registry import get_spec, load_model, load_tokenizer

def main(argv):
    for key in ("mbert", "xlmr", "xlmr-large"):
        spec = get_spec(key)
        encoded = load_tokenizer(spec)("a premise", "a hypothesis")
        model = load_model(spec, "sequence", num_labels=3)
        print(key, spec.source, type(model).__name__, max(encoded.get("token_type_ids", [0])))
    tower = VisionTower(CLIP_TOWER, "frozen")
    print("clip", type(tower.encoder).__name__, tower.image_size)

run_cli(main)
"""


@pytest.mark.e2e
def test_models_load_by_canonical_ids_and_the_clip_tower_from_a_full_checkpoint(replica, tmp_path):
    home = tmp_path / "hf"
    expected = ["mbert google-bert/bert-base-multilingual-cased BertForSequenceClassification 1",
                "xlmr FacebookAI/xlm-roberta-base XLMRobertaForSequenceClassification 0",
                "xlmr-large FacebookAI/xlm-roberta-large XLMRobertaForSequenceClassification 0",
                "clip CLIPVisionModel 32"]
    for env in ({}, {"HF_HUB_OFFLINE": "1"}):  # from the hub, then from the cache it filled
        result = _python(MODELS, hub_env(replica, home, **env))
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-4:] == expected  # mBERT's pairs carry segment ids


CAPTIONS = """
import sys
from study.data.captions import FLICKR30K, caption_set
from study.core.errors import run_cli

def main(argv):
    data = caption_set(FLICKR30K, 8, int(argv[0]))
    print(len(data.items), data.description, tuple(data.image_tensor(data.items[0], 16).shape))

run_cli(main, sys.argv[1:])
"""


@pytest.mark.e2e
def test_caption_data_downloads_only_the_shards_its_rows_need(replica, tmp_path):
    home = tmp_path / "hf"
    first = _python(CAPTIONS, hub_env(replica, home), "5")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.strip().splitlines()[-1] == "5 dataset lmms-lab/flickr30k (test, first 5 rows) (3, 16, 16)"
    assert sorted(p.name for p in home.rglob("*.parquet")) == ["test-00000-of-00002.parquet"]
    both = _python(CAPTIONS, hub_env(replica, home), str(2 * ROWS))
    assert both.returncode == 0 and len(list(home.rglob("test-*.parquet"))) == 2
    offline = _python(CAPTIONS, hub_env(replica, home, HF_HUB_OFFLINE="1"), str(2 * ROWS))
    assert offline.stdout == both.stdout


MULTI30K_STAGE = """
import json, sys
import torch
from study.core.errors import run_cli
from study.data.caption_sources import caption_set
from study.data.multi30k import MULTI30K
from study.train import stage

def main(argv):
    data = caption_set(MULTI30K, 8, int(argv[0]))
    first = data.train[0]
    sources = stage.stage_sources(False, MULTI30K, stage.SCRATCH, tuple(argv[1].split(",")) if argv[1] else None)
    cfg = stage.StageConfig(model="tiny", modality=argv[2], steps=3, batch_size=4, **sources)
    meta = stage.run_stage_worker(cfg, __import__("pathlib").Path(argv[3]), 0, 1, torch.device("cpu"),
                                  report=lambda m: None)
    print(json.dumps({"description": data.description, "items": len(data.items), "skipped": data.skipped,
                      "languages": data.probe_languages, "first": [first.image] + [data.caption(first, l)
                                                                   for l in data.probe_languages],
                      "caption_languages": sources["caption_languages"], "meta": {k: meta[k] for k in (
                          "captions_per_language", "partner_captions_per_language", "probe", "data")}}))

run_cli(main, sys.argv[1:])
"""


@pytest.mark.e2e
def test_multi30k_captions_in_the_stages_languages_train_it_from_the_hub(replica, tmp_path):
    """romrawinjp/multi30k through the real clients: its first rows, each image with its
    en/de/fr/cs captions, a row without English skipped and counted; by default a stage on it draws captions in
    all four languages, with the text arm's partner a translation; an English-only stage is one line, exit 2."""
    from replica_captions import MULTI30K_NO_ENGLISH, multi30k_row

    home = tmp_path / "hf"
    result = _python(MULTI30K_STAGE, hub_env(replica, home), "8", "", "text", str(tmp_path / "text"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["description"] == "dataset romrawinjp/multi30k (train, first 8 rows)"
    assert out["items"] == 7 and out["skipped"] == {"no English caption": 1} and MULTI30K_NO_ENGLISH < 8
    assert out["languages"] == out["caption_languages"] == ["en", "de", "fr", "cs"]
    row = multi30k_row(int(out["first"][0]))
    assert out["first"][1:] == [row["en"], row["de"], row["fr"], row["cs"]]
    meta = out["meta"]
    assert sum(meta["captions_per_language"].values()) == 12 and set(meta["captions_per_language"]) == \
        {"en", "de", "fr", "cs"} and sum(meta["partner_captions_per_language"].values()) == 12
    assert meta["data"] == "dataset romrawinjp/multi30k (train, first 16 rows)"  # the stage reads every row
    images = _python(MULTI30K_STAGE, hub_env(replica, home, HF_HUB_OFFLINE="1"), "8", "de,fr", "multimodal",
                     str(tmp_path / "mm"))
    assert images.returncode == 0, images.stderr[-3000:]
    meta = json.loads(images.stdout.strip().splitlines()[-1])["meta"]
    assert set(meta["captions_per_language"]) == {"de", "fr"} and set(meta["probe"]) <= {"en", "de", "fr", "cs"}
    english = _python(MULTI30K_STAGE, hub_env(replica, home), "8", "en", "text", str(tmp_path / "en"))
    _one_line_error(english, "--caption-languages en: dataset romrawinjp/multi30k (train, first 16 rows) has one "
                    "English caption per image", "--caption-languages en,de,fr,cs")


@pytest.mark.e2e
def test_hub_check_resolves_everything_then_prefetch_fills_the_cache_for_an_offline_run(replica, tmp_path):
    home = tmp_path / "hf"
    check = subprocess.run([sys.executable, "-m", "study", "hub", "check"], capture_output=True, text=True,
                           env=hub_env(replica, home), timeout=300)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    lines = check.stdout.strip().splitlines()
    assert lines[-1].startswith("216 checked, 0 problem(s)") and lines[-1].endswith(f"from {replica}/releases"), \
        lines[-1]
    # 195 splits, Social IQa's 3 (XCOPA's recipe trains on it first), Mewsli-X's archive (its train, dev and test
    # files), LAReQA's 11 release files, the captions, 2 models, the tower
    assert sum(line.endswith(" ok") for line in lines) == 216
    assert [line.split()[:2] for line in lines if "social_i_qa" in line] == [
        ["siqa", "train"], ["siqa", "dev"], ["siqa", "test"]]  # its "test" is the dev set, English only
    assert [line.split()[:3] for line in lines if "izhx/mewsli-x" in line] == [
        ["mewslix", split, "izhx/mewsli-x"] for split in ("train", "dev", "test")]
    assert [line.split()[:4] for line in lines if "lareqa" in line] == [
        ["lareqa", "test", f"github:{LAREQA.repo}@{LAREQA.commit[:7]}", path] for path in LAREQA.paths]
    assert not [p for pattern in ("*.parquet", "*.safetensors", "*.tar.gz") for p in home.rglob(pattern)]  # metadata
    assert not _release_copies(home)  # the release files were asked for with HEAD only

    prefetch = subprocess.run([sys.executable, "-m", "study", "hub", "prefetch", "--task", "xnli", "--task", "mewslix",
                               "--task", "lareqa", "--model", "mbert", "--vision-tower", "", "--intermediate-data", "",
                               "--lock", str(tmp_path / "hub.lock.json")],
                              capture_output=True, text=True, env=hub_env(replica, home), timeout=300)
    assert prefetch.returncode == 0, prefetch.stdout[-3000:] + prefetch.stderr[-3000:]
    assert sum(line.startswith("lareqa") and "1 file(s) cached" in line for line in prefetch.stdout.splitlines()) == 11
    assert len(_release_copies(home)) == 11
    offline = _python("""
        from study.data import tasks as T
        from study.data.sources import load_split
        from study.models.registry import get_spec, load_model
        nli, mentions = load_split(T.TASKS["xnli"], "test", "sw"), load_split(T.TASKS["mewslix"], "test", "ta")
        answers = load_split(T.TASKS["lareqa"], "test", "th")
        squad = load_split(T.TASKS["xquad"], "train")  # LAReQA's dual encoder trains on it: prefetched with lareqa
        pairs = load_split(T.TASKS["mewslix"], "train")  # Mewsli-X's dual encoder's English pairs
        print(len(nli), len(mentions.questions), len(answers.questions), len(squad), len(pairs),
              type(load_model(get_spec("mbert"))).__name__)
    """, hub_env(f"http://127.0.0.1:{free_port()}", home, HF_HUB_OFFLINE="1",  # the release URLs prefetched
                 STUDY_RELEASE_BASE_URL=f"{replica}/releases"))  # (offline, datasets would refuse any request)
    assert offline.stdout.split() == [str(ROWS), str(ROWS), str(ROWS), str(ROWS), "1", "BertModel"], \
        offline.stderr[-3000:]


BROKEN_SOURCE = """
import dataclasses, sys
from study.data import tasks as T
from study.data.sources import load_split
from study.core.errors import run_cli

def main(argv):
    # in place of the config: an archive's file name, or the commit of release files
    task, repo, config, source = T.TASKS[argv[0]], argv[1], argv[2] or None, T.TASKS[argv[0]].hub["test"]
    if isinstance(source, T.HubArchive):
        source = T.HubArchive(repo, config)
    elif isinstance(source, T.ReleaseFiles):
        source = T.ReleaseFiles(repo, config, source.paths)
    else:
        source = (repo, config, "test")
    load_split(dataclasses.replace(task, hub={"test": source}), "test", task.languages[0])

run_cli(main, sys.argv[1:])
"""


@pytest.mark.e2e
@pytest.mark.parametrize("task, repo, config, fragments", [
    ("udpos", SCRIPT_REPO, "", ("lists no data-file configs", "loading-script repository")),
    ("udpos", BAD_TAGS_REPO, "en", ("tags outside the task's label set: NOT-A-TAG",)),
    ("udpos", "izhx/xtreme-r-udpos", "xx", ("has no config 'xx'", "it has af, ar")),
    ("xnli", "nobody/no-such-dataset", "", ("dataset nobody/no-such-dataset does not exist on the hub",)),
    ("mewslix", "izhx/mewsli-x", "raw.tar", ("dataset izhx/mewsli-x has no file raw.tar on the hub",)),
    ("mewslix", "nobody/no-such-dataset", "raw.tar.gz", ("dataset nobody/no-such-dataset does not exist on the hub",)),
    ("lareqa", LAREQA.repo, "0" * 40, (f"/releases/{LAREQA.repo}/{'0' * 40}/xquad-r/ar.json does not exist (HTTP "
                                        "404)", "pass --data-dir")),
], ids=["script-only", "bad-string-tags", "missing-config", "missing-repository", "missing-archive",
        "archive-of-missing-repository", "release-files-at-a-missing-commit"])
def test_what_cannot_load_is_one_line_and_exit_2(replica, tmp_path, task, repo, config, fragments):
    _one_line_error(_python(BROKEN_SOURCE, hub_env(replica, tmp_path / "hf"), task, repo, config), *fragments)


@pytest.mark.e2e
@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "no-server"])
def test_release_files_with_no_hub_and_no_cache_are_one_line_and_exit_2(replica, tmp_path, offline):
    endpoint = replica if offline else f"http://127.0.0.1:{free_port()}"  # hub and releases on a dead port
    env = hub_env(endpoint, tmp_path / "hf", **({"HF_HUB_OFFLINE": "1"} if offline else {}))
    line = _one_line_error(_python(BROKEN_SOURCE, env, "lareqa", LAREQA.repo, LAREQA.commit),
                           f"release file {endpoint}/releases/{LAREQA.repo}/{LAREQA.commit}/xquad-r/ar.json is not in "
                           f"the cache {tmp_path / 'hf' / 'datasets' / 'downloads'} and ",
                           "study hub prefetch", "or pass --data-dir with the original files")
    assert ("HF_HUB_OFFLINE is set" if offline else "cannot be downloaded (ClientConnectorError: ") in line, line


@pytest.mark.e2e
@pytest.mark.parametrize("model", ["mbert", "xlmr"])
def test_the_users_command_runs_a_smoke_trial_with_the_multimodal_stage_from_the_hub(replica, tmp_path, model):
    """``python -m study.tune --model mbert --preset smoke`` as a user with internet types it (tiny random weights
    under the real ids), one trial whose intermediate stage is the multimodal one on Flickr30k and CLIP: the
    search space is the model's own, narrowed to that branch and a few stage steps."""
    from helpers import start_study, study_runs

    space = tmp_path / f"{model}.yaml"  # the model's space (one include level: the shared base) on one branch
    space.write_text(f"include: {Path(__file__).parents[2] / 'search_spaces' / 'xtreme-r-base.yaml'}\n"
                     f"model: {model}\nparams:\n  modality: {{type: categorical, choices: [multimodal]}}\n"
                     "  intermediate_steps: {type: categorical, choices: [4]}\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = hub_env(replica, tmp_path / "hf", STUDY_CACHE_DIR=str(tmp_path / "cache"))
    # the presets' counter-fitted synonyms come from GitHub, not the hub: a filled cache, as a prefetched one is
    synonyms = tmp_path / "cache" / "synonyms" / "counterfitted_neighbors.json"
    synonyms.parent.mkdir(parents=True)
    synonyms.write_bytes(gzip.decompress((FIXTURES / "synonyms" / "counterfitted_neighbors.json.gz").read_bytes()))
    process = start_study("--preset", "smoke", "--arms", "vme-tuned", "--trials", "1", "--seeds", "1",
                          "--search-space", str(space), "--storage", str(tmp_path / "runs"), "--mlflow-uri", uri,
                          "--experiment", "hub", model=model, env=env, cwd=tmp_path)
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 0, output[-3000:]
    _, parents, trials = study_runs(uri, "hub", model, phase="search")
    assert len(parents) == 1 and parents[0].data.params["model_source"] == REGISTRY[model].source
    assert len(trials) == 1 and trials[0].info.status == "FINISHED", output[-3000:]
    assert [r.info.status for r in study_runs(uri, "hub", model, phase="confirm")[2]] == ["FINISHED"]
    params, metrics = trials[0].data.params, trials[0].data.metrics
    assert params["modality"] == "multimodal" and "dev_en/accuracy" in metrics and "test/accuracy/sw" in metrics
    assert params["intermediate.data"].startswith("dataset lmms-lab/flickr30k (test")
    assert params["intermediate.vision_tower"].startswith("openai/clip-vit-base-patch32")
    # the hub commits the study resolved at its start, on the parent run and every trial (the workers read them)
    commits = {k: v for k, v in parents[0].data.params.items() if k.startswith("revision.")}
    assert set(commits) == {"revision.dataset.facebook/xnli", f"revision.model.{REGISTRY[model].source}"}
    assert all(len(v) == 40 and trials[0].data.tags[k] == v for k, v in commits.items())
