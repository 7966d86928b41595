"""``study evaluate``: zero-shot evaluation of a model on a task, per language and per family."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from study.cli.common import add_data_dir_flag
from study.core.cache import write_json_atomic
from study.core.errors import StudyError, run_cli
from study.core.languages import get_language
from study.data.qa_features import qa_prediction_settings
from study.data.tasks import DEFAULT_MAX_LENGTH, QA, TASKS, get_task, retrieval_settings
from study.evaluation.scoring import evaluate
from study.models.registry import (
    checkpoint_spec,
    checkpoint_task,
    get_spec,
    load_model,
    load_tokenizer,
    model_config,
    model_positions,
)


def parse_args(argv):
    """The command line: --model or --checkpoint (one is required), --task, and optional languages and output."""
    parser = argparse.ArgumentParser(prog="study evaluate", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="registry key (bare encoder: retrieval tasks only) or local directory")
    source.add_argument("--checkpoint", help="a fine-tuned model directory written by study train")
    parser.add_argument("--task", required=True, help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--languages", help="comma-separated ISO 639-1 codes (default: all of the task's)")
    add_data_dir_flag(parser, "directory with the tasks' original files")
    parser.add_argument("--json", type=Path, help="write the result as JSON here")
    parser.add_argument("--layer", type=int, help="hidden state to pool for retrieval, 0 = embeddings (default: "
                        "Tatoeba on an xquad/mlqa checkpoint XTREME-R's 8 of 12; otherwise the last)")
    parser.add_argument("--max-length", type=int, help="max tokens per input (default: 128; QA XTREME-R's 384-token "
                        "windows, doc stride 128, questions of at most 64 tokens; Tatoeba on an xquad/mlqa checkpoint "
                        "XTREME-R's 512; a LAReQA / Mewsli-X dual encoder's candidates XTREME-R's 256 / 64)")
    return parser.parse_args(argv)


def print_table(result: dict) -> None:
    """Print per-language and per-family scores, best first, then the average."""
    metric = result["metric"]
    print(f"{result['task']} ({result['suite']}; protocol: {result['protocol']}), {result['model']}, metric {metric}")
    print(f"{'language':<10}{'family':<24}{metric:>10}")
    for lang, score in sorted(result["per_language"].items(), key=lambda kv: -kv[1]):
        print(f"{lang:<10}{get_language(lang).family:<24}{score:>10.4f}")
    print(f"\n{'family':<34}{metric:>10}")
    for family, score in sorted(result["per_family"].items(), key=lambda kv: -kv[1]):
        print(f"{family:<34}{score:>10.4f}")
    print(f"\n{'average':<34}{result['average']:>10.4f}")


def main(argv=None) -> int:
    """Evaluate, print the table and optionally write JSON; StudyError when a bare --model meets a task that needs
    a fine-tuned head."""
    args = parse_args(argv)
    task = get_task(args.task)
    languages = task.check_languages(args.languages.split(",") if args.languages else None)
    if args.json and Path(args.json).is_dir():
        raise StudyError(f"--json {args.json} is a directory: name the JSON file to write, e.g. "
                         f"{args.json}/scores.json")
    if args.json and not os.access(Path(args.json).resolve().parent, os.W_OK):
        raise StudyError(f"--json {args.json}: its directory does not exist or is not writable")
    trained_on = init_task = trained_lengths = None
    if args.checkpoint:
        spec = checkpoint_spec(args.checkpoint)
        trained_on, init_task = checkpoint_task(args.checkpoint), checkpoint_task(args.checkpoint, "init_task")
        dual = checkpoint_task(args.checkpoint, "dual_encoder")  # a study.train.dual_encoder run's settings
        trained_lengths = (dual["query_max_length"], dual["candidate_max_length"]) if dual else None
        task.check_checkpoint_head(trained_on, f"--checkpoint {args.checkpoint}")
    else:
        spec = get_spec(args.model)
        if task.needs_training:
            raise StudyError(f"task {task.name!r} needs a fine-tuned {task.head} head: pass --checkpoint DIR "
                             f"(from study train); a bare --model evaluates retrieval tasks only")
    config = model_config(spec, path=args.checkpoint)  # the flags are checked before any weights load
    depth, positions = config.num_hidden_layers, model_positions(config)
    tokenizer = load_tokenizer(spec) if not args.checkpoint else _checkpoint_tokenizer(args.checkpoint)
    if args.layer is not None and task.needs_training:
        raise StudyError(f"--layer applies to retrieval tasks; {task.name!r} is scored by its fine-tuned head")
    if args.layer is not None and not 0 <= args.layer <= depth:
        raise StudyError(f"--layer {args.layer} is out of range: {spec.key} has hidden states 0..{depth}")
    shortest = tokenizer.num_special_tokens_to_add() + 1  # shorter, the tokenizer cannot cut and returns it whole
    if args.max_length is not None and not shortest <= args.max_length <= positions:
        raise StudyError(f"--max-length {args.max_length} is out of range: {shortest}..{positions} for {spec.key}")
    model = load_model(spec, task.head or "base", path=args.checkpoint) if args.checkpoint else load_model(spec)
    query_max_length = None
    if task.kind == QA:  # XTREME's predict settings (384 / 128 / 64) unless --max-length says otherwise
        layer = None
        max_length, protocol = qa_prediction_settings(task, trained_on, init_task, args.max_length, positions,
                                                      tokenizer.num_special_tokens_to_add(pair=True))
    elif task.needs_training:
        layer, max_length = None, args.max_length or DEFAULT_MAX_LENGTH
        protocol = task.fine_tuned_protocol(trained_on, init_task)
    else:
        settings = retrieval_settings(task, depth, trained_on=trained_on, layer=args.layer, max_length=args.max_length,
                                      trained_lengths=trained_lengths)
        if settings.max_length > positions:  # the protocol's length does not fit this encoder: say so in the label
            settings = retrieval_settings(task, depth, trained_on=trained_on, layer=args.layer, max_length=positions,
                                          trained_lengths=trained_lengths)
        layer, max_length, protocol = settings.layer, settings.max_length, settings.protocol
        query_max_length = settings.query_max_length
    # a dual encoder was fine-tuned on unprefixed texts, as XTREME-R's are
    prefix = "" if query_max_length else spec.text_prefix
    result = evaluate(task, model, tokenizer, languages, model_name=spec.name, data_dir=args.data_dir,
                      layer=layer, prefix=prefix, max_length=max_length, protocol=protocol,
                      query_max_length=query_max_length)
    result["model_offline_stand_in"] = spec.offline_stand_in
    print_table(result)
    if args.json:
        write_json_atomic(args.json, result)
    return 0


def _checkpoint_tokenizer(path):
    from transformers import AutoTokenizer

    from study.models.registry import checkpoint_errors

    with checkpoint_errors(path):
        return AutoTokenizer.from_pretrained(path)


if __name__ == "__main__":
    run_cli(main)
