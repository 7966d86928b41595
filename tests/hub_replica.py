"""A local Hugging Face hub replica for the tests: tiny repositories with the real repositories' ids, configs, splits,
file layouts and schemas, served on 127.0.0.1 by ``hub_server.py`` (why not a package: its docstring), so that the
real ``huggingface_hub``, ``datasets`` and ``transformers`` clients load them through ``HF_ENDPOINT``.

Dataset repositories hold parquet written by ``datasets`` (features embedded) and a card whose YAML has ``configs``
(Mewsli-X: the one archive of the original files the loader reads); model repositories hold tiny random checkpoints
under the registry's canonical ids; LAReQA's XQuAD-R files, which the loader takes from GitHub at a pinned commit,
are served at that commit under ``/releases`` (``STUDY_RELEASE_BASE_URL``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import replica_captions

from study.core.languages import get_language
from study.data import tasks as T
from study.data.sources import TATOEBA_CODES
from study.models.registry import REGISTRY
from study.train.stage import CLIP_TOWER

ROWS = 8  # rows of every split: enough for a smoke trial's batches
LAYERS = 9  # the hub models' search space pulls attention of layers up to 8
SCRIPT_REPO = "replica/script-only"  # negative fixture: a loading-script repository
BAD_TAGS_REPO = "replica/udpos-bad-tags"  # negative fixture: tags outside the UPOS label set


def _dataset_repo(mirrors: Path, repo: str, configs: dict[str, dict[str, object]], layout: str = "{config}/{split}",
                  shards: int = 1) -> None:
    """A dataset repository: ``configs`` maps config name -> split -> ``datasets.Dataset``, written as parquet shards
    ``{config}/{split}-0000k-of-0000n.parquet`` (the hub's layout) and listed in the card's ``configs`` and
    ``dataset_info`` YAML, as the hub's parquet conversion writes them."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    root = mirrors / "datasets" / repo
    card, infos = DatasetCardData(), {}
    for config, splits in configs.items():
        for split, rows in splits.items():
            stem = root / layout.format(config=config, split=split)
            stem.parent.mkdir(parents=True, exist_ok=True)
            for k in range(shards):
                rows.shard(shards, k, contiguous=True).to_parquet(f"{stem}-{k:05d}-of-{shards:05d}.parquet")
        infos[config] = DatasetInfo(features=next(iter(splits.values())).features, config_name=config)
    MetadataConfigs({config: {"data_files": [{"split": split, "path": layout.format(config=config, split=split) + "-*"}
                                             for split in splits]}
                     for config, splits in configs.items()}).to_dataset_card_data(card)
    DatasetInfosDict(infos).to_dataset_card_data(card)
    DatasetCard(f"---\n{card.to_yaml()}\n---\n# replica of {repo}\n").save(root / "README.md")


def _rows(columns: dict, features=None):
    import datasets

    return datasets.Dataset.from_dict(columns, features=features)


def _nli(lang: str):
    import datasets

    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(T.TASKS["xnli"].labels))})
    return _rows({"premise": [f"{lang} premise {i}" for i in range(ROWS)],
                  "hypothesis": [f"{lang} hypothesis {i}" for i in range(ROWS)],
                  "label": [i % 3 for i in range(ROWS)]}, features)


def _copa(lang: str):
    import datasets

    features = datasets.Features({"premise": datasets.Value("string"), "choice1": datasets.Value("string"),
                                  "choice2": datasets.Value("string"), "question": datasets.Value("string"),
                                  "idx": datasets.Value("int32"),
                                  "label": datasets.ClassLabel(names=["choice1", "choice2"])})
    return _rows({"premise": [f"{lang} premise {i}" for i in range(ROWS)], "choice1": ["one"] * ROWS,
                  "choice2": ["two"] * ROWS, "question": ["cause", "effect"] * (ROWS // 2), "idx": list(range(ROWS)),
                  "label": [i % 2 for i in range(ROWS)]}, features)


def _siqa():
    """Social IQa as allenai/social_i_qa's parquet holds it: answerA-C and the label as a string "1"-"3"."""
    import datasets

    text = datasets.Value("string")
    features = datasets.Features({name: text for name in ("context", "question", "answerA", "answerB", "answerC",
                                                            "label")})
    return _rows({"context": [f"context {i}" for i in range(ROWS)], "question": ["What next?"] * ROWS,
                  "answerA": ["one"] * ROWS, "answerB": ["two"] * ROWS, "answerC": ["three"] * ROWS,
                  "label": [str(1 + i % 3) for i in range(ROWS)]}, features)


def _tagging(lang: str, names, column: str, as_strings: bool = False):
    import datasets

    tag = datasets.Value("string") if as_strings else datasets.ClassLabel(names=list(names))
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  column: datasets.Sequence(tag)})
    tags = [[(i + j) % len(names) for j in range(4)] for i in range(ROWS)]
    return _rows({"tokens": [[f"{lang}{i}w{j}" for j in range(4)] for i in range(ROWS)],
                  column: [[names[t] for t in row] for row in tags] if as_strings else tags}, features)


def _squad(lang: str, prefix: str = ""):
    import datasets

    features = datasets.Features({"id": datasets.Value("string"), "title": datasets.Value("string"),
                                  "context": datasets.Value("string"), "question": datasets.Value("string"),
                                  "answers": datasets.Sequence({"text": datasets.Value("string"),
                                                                "answer_start": datasets.Value("int32")})})
    contexts = [f"The {lang} answer {i} is here." for i in range(ROWS)]
    return _rows({"id": [f"{prefix}{lang}-{i}" for i in range(ROWS)], "title": ["t"] * ROWS, "context": contexts,
                  "question": [f"Where is answer {i}?" for i in range(ROWS)],
                  "answers": [{"text": [f"answer {i}"], "answer_start": [c.index("answer")]}
                              for i, c in enumerate(contexts)]}, features)


def _bitext(code: str):
    return _rows({"sentence1": [f"{code} sentence {i}" for i in range(ROWS)],
                  "sentence2": [f"English sentence {i}" for i in range(ROWS)]})


def _spans(text: str, pieces: list[str]) -> list[dict]:
    """Mewsli-X's sentence spans ({start, end} into ``text``) of consecutive pieces of it."""
    spans = []
    for piece in pieces:
        start = text.index(piece, spans[-1]["end"] if spans else 0)
        spans.append({"start": start, "end": start + len(piece)})
    return spans


def mewslix_originals() -> dict[str, str]:
    """get-mewsli-x.sh's five output files in its schema.py's JSON (Entity, ContextualMentions, MentionEntityPair),
    tiny: 2 * ROWS candidate entities; per test language two WikiNews articles (a headline, a blank line, three
    sentences) with one mention per sentence: ROWS mentions."""
    entities = []
    for i in range(2 * ROWS):
        pieces = [f"Entity {i} is a thing.", f"It is number {i}."]
        description = " ".join(pieces)
        entities.append({"entity_id": f"Q{i}", "title": f"Entity {i}", "description": description,
                         "sentence_spans": _spans(description, pieces), "description_language": "en",
                         "description_url": f"https://en.wikipedia.org/wiki/Entity_{i}"})

    def article(lang: str, number: int, first: int) -> dict:
        pieces = [f"{lang} news {number}", *(f"{lang} sentence {k} names Entity {first + k}." for k in range(1, 4))]
        text = f"{pieces[0]}\n\n{' '.join(pieces[1:])}"
        spans = _spans(text, pieces)
        mentions = []
        for k, span in enumerate(spans):
            name = "news" if k == 0 else f"Entity {first + k}"
            start = text.index(name, span["start"])
            mentions.append({"example_id": f"{lang}-{number}-{k}", "entity_id": f"Q{first + k}",
                             "mention_span": {"start": start, "end": start + len(name), "text": name}})
        return {"context": {"document_title": pieces[0], "document_url": f"https://{lang}.wikinews.org/wiki?curid="
                            f"{number}", "document_id": f"{lang}-{number}", "language": lang, "text": text,
                            "sentence_spans": spans}, "mentions": mentions}

    test = [article(lang, n, 4 * n) for lang in T.TASKS["mewslix"].languages for n in range(ROWS // 4)]
    dev = article("de", 9, 0)
    pair = {"contextual_mention": {"context": dev["context"], "mention": dev["mentions"][1]}, "entity": entities[1]}
    return {"candidate_set_entities.jsonl": _jsonl(entities), "wikinews_mentions-dev.jsonl": _jsonl([dev]),
            "wikinews_mentions-test.jsonl": _jsonl(test), "wikipedia_pairs-dev.jsonl": _jsonl([pair]),
            "wikipedia_pairs-train.jsonl": _jsonl([pair])}


def lareqa_originals() -> dict[str, str]:
    """The release's ``xquad-r/{lang}.json`` in its format (SQuAD v1.1 plus each paragraph's ``sentences`` and
    their ``sentence_breaks``, half-open [start, end) offsets into the context), tiny: per language two articles of
    two three-sentence paragraphs with two questions each (ROWS questions), the same question ids in every
    language. Chinese sentences abut (no space between them, as mostly in the real zh.json), so an answer at the
    start of sentence 2 lies at the end of sentence 1's span: it belongs to the sentence starting there."""
    files = {}
    for lang in T.TASKS["lareqa"].languages:
        articles = []
        for a in range(2):
            paragraphs = []
            for p in range(2):
                sentences = [f"{lang} article {a} paragraph {p} sentence {k} says {a}{p}{k}." for k in range(3)]
                context = ("" if lang == "zh" else " ").join(sentences)
                breaks = [[context.index(s), context.index(s) + len(s)] for s in sentences]
                qas = [{"answers": [{"answer_start": context.index(f"{a}{p}1"), "text": f"{a}{p}1"}],
                        "id": f"q{a}{p}1", "question": f"{lang}: what does sentence 1 of {a}{p} say?"},
                       {"answers": [{"answer_start": breaks[2][0], "text": sentences[2][:len(lang)]}],  # at a break
                        "id": f"q{a}{p}2", "question": f"{lang}: how does sentence 2 of {a}{p} start?"}]
                paragraphs.append({"context": context, "qas": qas, "sentence_breaks": breaks, "sentences": sentences})
            articles.append({"paragraphs": paragraphs, "title": f"Article_{a}"})
        files[lang] = json.dumps({"data": articles, "version": "1.1"}, ensure_ascii=False)
    return files


def write_lareqa_release(mirrors: Path) -> None:
    """LAReQA's release files, where hub_server.py serves them under ``/releases``."""
    source = T.TASKS["lareqa"].hub["test"]
    for lang, text in lareqa_originals().items():
        path = mirrors / "releases" / source.repo / source.commit / f"xquad-r/{lang}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_tar_gz(path: Path, files: dict[str, str]) -> None:
    """A .tar.gz of {member name: text}, as ``tar czf`` writes one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _mewslix(mirrors: Path) -> None:
    """izhx/mewsli-x's raw.tar.gz (get-mewsli-x.sh's output, the five files its card lists). The repository's other
    files (per-language configs and the candidate tarball made by its process.py) are not replicated: the loader
    does not read them, and their fields could not be confirmed."""
    write_tar_gz(mirrors / "datasets" / T.TASKS["mewslix"].hub["test"].repo / T.TASKS["mewslix"].hub["test"].path,
                 mewslix_originals())


def _model_repo(mirrors: Path, repo: str, save) -> None:
    root = mirrors / "models" / repo
    root.mkdir(parents=True)
    save(root)


def _save_bert(out: Path) -> None:
    """A tiny random BERT with a small cased WordPiece vocabulary (token type ids on)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for lang in ("en", "de", "ar", "zh") for w in f"{lang} premise hypothesis".split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789.?",
             *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"], *words]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=False, model_max_length=512)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _save_xlmr(out: Path) -> None:
    """A tiny random XLM-R with the real XLM-R SentencePiece tokenizer."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from study.models.offline import xlmr_tokenizer

    tokenizer = xlmr_tokenizer()
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=LAYERS,
                              num_attention_heads=4, intermediate_size=64, max_position_embeddings=514,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    XLMRobertaModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _save_clip(out: Path) -> None:
    """A full tiny CLIP checkpoint (vision + text) as ``pytorch_model.bin``, as the hub's CLIP repository has."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(text_config={"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "intermediate_size": 37, "bos_token_id": 0,
                                     "pad_token_id": 1, "eos_token_id": 2},
                        vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                       "intermediate_size": 37, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    CLIPModel(config).save_pretrained(out, safe_serialization=False)


def build_mirrors(mirrors: Path) -> None:
    """Every repository the registry uses, plus the negative fixtures."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.disable_progress_bar()

    hub = {name: task.hub for name, task in T.TASKS.items() if task.suite in ("xtreme-r", "source")}
    xnli_langs = T.TASKS["xnli"].languages
    _dataset_repo(mirrors, hub["xnli"]["test"][0],
                  {lang: {"train": _nli(lang), "validation": _nli(lang), "test": _nli(lang)} for lang in xnli_langs})
    _dataset_repo(mirrors, hub["xcopa"]["train"][0], {"copa": {"train": _copa("en"), "validation": _copa("en")}})
    _dataset_repo(mirrors, hub["xcopa"]["test"][0], {lang: {"validation": _copa(lang), "test": _copa(lang)}
                                                     for lang in T.TASKS["xcopa"].languages})
    _dataset_repo(mirrors, hub["siqa"]["train"][0], {"default": {"train": _siqa(), "validation": _siqa()}})
    upos, ner = T.TASKS["udpos"].labels, T.TASKS["panx"].labels
    _dataset_repo(mirrors, "google/xtreme",
                  {"udpos.English": {"train": _tagging("en", upos, "pos_tags"),
                                     "validation": _tagging("en", upos, "pos_tags")}}
                  | {f"MLQA.{lang}.{lang}": {"validation": _squad(lang), "test": _squad(lang)}
                     for lang in T.TASKS["mlqa"].languages})
    # the card does not say whether its tags are class labels: strings here, the harder case for the loader
    _dataset_repo(mirrors, hub["udpos"]["test"][0],
                  {lang: {"test": _tagging(lang, upos, "pos_tags", as_strings=True)}
                   for lang in T.TASKS["udpos"].languages})
    _dataset_repo(mirrors, BAD_TAGS_REPO, {"en": {"test": _tagging("en", ("NOUN", "VERB", "NOT-A-TAG"), "pos_tags",
                                                                    as_strings=True)}})
    _dataset_repo(mirrors, hub["panx"]["test"][0],
                  {lang: {"train": _tagging(lang, ner, "ner_tags"), "validation": _tagging(lang, ner, "ner_tags"),
                          "test": _tagging(lang, ner, "ner_tags")} for lang in T.TASKS["panx"].languages})
    # SQuAD's dev set holds XQuAD's English questions (same ids), as the real one does
    _dataset_repo(mirrors, hub["xquad"]["train"][0],
                  {"plain_text": {"train": _squad("en", "train-"),
                                  "validation": datasets.concatenate_datasets([_squad("en"), _squad("en", "dev-")])}})
    _dataset_repo(mirrors, hub["xquad"]["test"][0], {f"xquad.{lang}": {"validation": _squad(lang)}
                                                     for lang in T.TASKS["xquad"].languages})
    names = {lang: get_language(lang).name.lower() for lang in T.TASKS["tydiqa"].languages}
    mixed = {split: datasets.concatenate_datasets([_squad(lang, f"{names[lang]}-")
                                                                 for lang in T.TASKS["tydiqa"].languages])
             for split in ("train", "validation")}
    _dataset_repo(mirrors, hub["tydiqa"]["train"][0], {"secondary_task": mixed})
    _dataset_repo(mirrors, hub["tatoeba"]["test"][0],
                  {f"{code}-eng": {"test": _bitext(code)}
                   for code in (TATOEBA_CODES.get(lang, get_language(lang).iso3)
                                for lang in T.TASKS["tatoeba"].languages)})
    _mewslix(mirrors)
    write_lareqa_release(mirrors)
    replica_captions.flickr(mirrors, 2 * ROWS)
    replica_captions.multi30k(mirrors, ROWS)
    script = mirrors / "datasets" / SCRIPT_REPO
    script.mkdir(parents=True)
    (script / "script-only.py").write_text("import datasets\n")
    (script / "README.md").write_text("---\nlicense: mit\n---\n# a loading-script repository\n")
    for key, save in (("mbert", _save_bert), ("xlmr", _save_xlmr), ("xlmr-large", _save_xlmr)):
        _model_repo(mirrors, REGISTRY[key].source, save)
    _model_repo(mirrors, CLIP_TOWER, _save_clip)


def start_replica(root: Path, port: int):
    """Build the repositories under ``root`` and serve them on 127.0.0.1:``port``; returns (process, endpoint) once
    it answers."""
    build_mirrors(root)
    return serve(root, port)


def serve(root: Path, port: int):
    """Serve the folder ``root`` (hub_server.py's layout) on 127.0.0.1:``port``; returns (process, endpoint) once it
    answers."""
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("hub_server.py")), str(root), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{endpoint}/api/models/{CLIP_TOWER}", timeout=1)
            return server, endpoint
        except urllib.error.HTTPError:  # it answers (a folder without that model)
            return server, endpoint
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"the hub replica did not start: {server.stderr.read().decode()[-2000:]}")


def hub_env(endpoint: str, hf_home: Path, **extra) -> dict:
    """The environment of a subprocess whose Hugging Face clients (and GitHub release downloads) talk to the replica
    with their own cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1",
            "STUDY_RELEASE_BASE_URL": f"{endpoint}/releases", **extra}
