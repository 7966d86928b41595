"""``study <command>``: one console command for the whole tool; each command is one module of this package with a
``main(argv)`` and its own flags (``study <command> --help``)."""

from __future__ import annotations

import importlib
import sys

from study.core.errors import run_cli

# name -> (module, one line for the command list, an example)
COMMANDS = {
    "tune": ("study.cli.tune", "run a study: search the tuned arms, then confirm every arm on shared seeds",
             "study tune --model e5-small"),
    "train": ("study.cli.train", "one fine-tuning run on Ray Train (optionally after an intermediate stage)",
              "study train --model tiny --task pocket-topic"),
    "evaluate": ("study.cli.evaluate", "zero-shot evaluation of a model or checkpoint, per language and family",
                 "study evaluate --checkpoint runs/NAME/model --task xnli"),
    "aggregate": ("study.cli.aggregate", "XTREME-R's category means and named aggregates from evaluate results",
                  "study aggregate results/*.json"),
    "report": ("study.cli.report", "compare arms, models and modalities per family with paired intervals",
               "study report --experiment vme-pocket"),
    "hub": ("study.cli.hub", "check or prefetch every dataset and model a study reads from the Hugging Face hub",
            "study hub check --task xnli --model mbert"),
    "models": ("study.cli.models", "list the model registry, or load one model and describe it",
               "study models e5-small"),
    "serve-mlflow": ("study.cli.serve_mlflow", "an MLflow tracking server for a study, on 127.0.0.1 unless asked",
                     "study serve-mlflow --port 5000"),
    "dual-encoder": ("study.cli.dual_encoder", "fine-tune XTREME-R's dual encoder for LAReQA or Mewsli-X",
                     "study dual-encoder --model mbert --task lareqa"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: study <command> [options]   (study <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about, _) in COMMANDS.items()]
    lines += ["", "examples:"] + [f"  {example}" for _, _, example in COMMANDS.values()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name = argv[0].replace("_", "-")
    if name not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}: choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    run_cli(module.main, argv[1:])
    return 0


def entry_point() -> None:
    """The ``study`` console script."""
    sys.exit(main())
