"""``python -m study.train`` takes its training flags from ``TrainConfig``: one per field, with its help and default."""

from dataclasses import fields

from study.config import TrainConfig
from study.train import build_parser


def _config(argv: list[str]) -> TrainConfig:
    args = build_parser().parse_args(argv)
    return TrainConfig.from_dict({k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})


def test_every_config_field_is_a_flag_with_the_fields_help_and_default():
    helps = {action.dest: action.help for action in build_parser()._actions}
    for option in fields(TrainConfig):
        assert option.metadata["help"] in helps[option.name], option.name
    assert _config([]) == TrainConfig()


def test_flags_parse_to_typed_config_values():
    cfg = _config(["--lr", "1e-4", "--max-steps", "5", "--languages", "de,ja", "--head-lr", "0.001"])
    assert (cfg.lr, cfg.max_steps, cfg.languages, cfg.head_lr) == (1e-4, 5, ("de", "ja"), 0.001)
