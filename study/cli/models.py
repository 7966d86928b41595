"""``study models [KEY]``: list the model registry, or load one model (building an offline stand-in into the cache
once) and describe it."""

from __future__ import annotations

from study.models.registry import HEADS, REGISTRY, get_spec, load_model, model_path
from study.vme.capture import encoder_layers


def main(argv: list[str] | None = None) -> int:
    """List the registry, or load one model (building offline ones into the cache) and describe it."""
    import argparse

    parser = argparse.ArgumentParser(prog="study models", description=main.__doc__)
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
    from study.core.errors import run_cli

    run_cli(main)
