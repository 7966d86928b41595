"""A run's training throughput as its worker reports it: sequences/s and tokens/s from the real (unpadded) tokens of
each micro-batch, and MFU on a GPU the peak table knows (``study.core.devices``), from the analytic FLOPs of the model
shape (``study.core.flops``: 6 N per token plus attention's 12 L d T^2 per sequence). A CPU reports throughput only.

Counted on the host before the batch moves to the device (no synchronisation), on every stream the step runs through
the encoder (x, and x~ for the VME objective), times the world size: ranks see equally sized batches."""

from __future__ import annotations

from study.core.devices import match_gpu
from study.core.flops import ModelShape, mfu


def new_counts() -> dict:
    """Sequences, real tokens and the sum of squared sequence lengths since the last report."""
    return {"sequences": 0, "tokens": 0, "squares": 0}


def count_batch(counts: dict, batch: dict, vme: bool, world: int = 1) -> None:
    """Add a collated micro-batch (``{"x": ..., "xt": ...}`` of ``collate_pairs``) to ``counts``."""
    for stream in ("x", "xt") if vme else ("x",):
        mask = batch[stream]["attention_mask"]
        lengths = mask.reshape(-1, mask.shape[-1]).sum(dim=1)  # multiple choice: (B, C, L) runs as B*C rows
        counts["sequences"] += lengths.numel() * world
        counts["tokens"] += int(lengths.sum()) * world
        counts["squares"] += int((lengths * lengths).sum()) * world


def device_peak(device, bf16: bool) -> float | None:
    """Peak FLOP/s of the run's device at its training precision; None on a CPU or a card the table lacks."""
    if device.type != "cuda":
        return None
    import torch

    profile = match_gpu(torch.cuda.get_device_name(device))
    return profile.peak("bf16" if bf16 else "fp32") if profile else None


def throughput_metrics(counts: dict, seconds: float, shape: ModelShape, peak: float | None, world: int = 1) -> dict:
    """``train/sequences_per_s``, ``train/tokens_per_s`` and, with a peak, ``train/mfu`` over ``seconds`` of
    training steps (``world`` devices)."""
    if seconds <= 0 or not counts["sequences"]:
        return {}
    metrics = {"train/sequences_per_s": counts["sequences"] / seconds, "train/tokens_per_s": counts["tokens"] / seconds}
    utilisation = mfu(shape.train_flops(counts["tokens"], counts["squares"]), seconds, peak, world)
    if utilisation is not None:
        metrics["train/mfu"] = utilisation
    return metrics


def torch_settings() -> dict:
    """The worker's torch settings that change its speed or its numbers, as metrics of every evaluation: its CPU
    threads (intra-op), whether deterministic algorithms are enforced, and cuDNN's deterministic and benchmark flags
    (1 / 0). Two runs that differ here may differ in time, or in their last digits, for that reason alone."""
    import torch

    return {"torch/num_threads": torch.get_num_threads(),
            "torch/deterministic_algorithms": int(torch.are_deterministic_algorithms_enabled()),
            "torch/cudnn_deterministic": int(torch.backends.cudnn.deterministic),
            "torch/cudnn_benchmark": int(torch.backends.cudnn.benchmark)}
