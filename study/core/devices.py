"""Peak FLOP/s of the GPUs a study may run on, from the vendors' datasheets: the denominator of MFU
(``study.core.flops.mfu``) and of the plan's analytic fallback. No Ray, no I/O.

Dense peaks (no 2:4 sparsity): NVIDIA's datasheets print the tensor-core figures *with* sparsity and say that dense is
half, so those are halved here. ``fp32`` is the plain FP32 (non-tensor) peak: torch leaves TF32 matmuls off by
default, and a run on a card without bf16 trains in fp32 (``FineTuneRun.bf16``). A CPU has no entry: it reports
throughput only, no MFU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from study.core.errors import StudyError

TERA = 1e12
ASSUMED_MFU = 0.30  # the plan's analytic fallback where nothing was measured on a GPU (an assumption, stated as such)


@dataclass(frozen=True)
class DeviceProfile:
    """A device kind: its key (``--device-profile``), name, peak dense FLOP/s per precision (None: not supported or a
    CPU) and where the figures come from; ``pattern`` matches ``torch.cuda.get_device_name()``."""

    key: str
    name: str
    kind: str  # cuda | cpu
    peak_bf16: float | None
    peak_fp32: float | None
    source: str
    pattern: str = ""

    def peak(self, dtype: str) -> float | None:
        """Peak FLOP/s at ``dtype`` (bf16 | fp32); None when the device has no such figure."""
        return self.peak_bf16 if dtype == "bf16" else self.peak_fp32

    @property
    def dtype(self) -> str:
        """The precision a run trains in here: bf16 on a card that has it (``FineTuneRun`` autocasts), else fp32."""
        return "bf16" if self.kind == "cuda" and self.peak_bf16 else "fp32"


def _gpu(key, name, bf16, fp32, source, pattern) -> DeviceProfile:
    return DeviceProfile(key, name, "cuda", bf16 and bf16 * TERA, fp32 * TERA, source, pattern)


# (key, name, dense bf16 TFLOP/s, fp32 TFLOP/s, source, torch device-name pattern); the most specific pattern first
GPUS = {p.key: p for p in (
    _gpu("h200", "NVIDIA H200 SXM", 989.5, 67, "NVIDIA H200 Tensor Core GPU datasheet (BF16 1,979 TFLOPS with "
         "sparsity; FP32 67 TFLOPS)", r"H200(?!.*NVL)"),
    _gpu("h200-nvl", "NVIDIA H200 NVL", 835.5, 60, "NVIDIA H200 datasheet, NVL column (BF16 1,671 with sparsity; "
         "FP32 60)", r"H200.*NVL"),
    _gpu("h100-pcie", "NVIDIA H100 PCIe", 756.5, 51, "NVIDIA H100 Tensor Core GPU datasheet, PCIe column (BF16 1,513 "
         "TFLOPS with sparsity; FP32 51 TFLOPS)", r"H100.*PCIe"),
    _gpu("h100-nvl", "NVIDIA H100 NVL", 835.5, 60, "NVIDIA H100 datasheet, NVL column (BF16 1,671 with sparsity; "
         "FP32 60)", r"H100.*NVL"),
    _gpu("h100", "NVIDIA H100 SXM", 989.5, 67, "NVIDIA H100 Tensor Core GPU datasheet, SXM column (BF16 1,979 TFLOPS "
         "with sparsity; FP32 67 TFLOPS)", r"H100"),
    _gpu("a100", "NVIDIA A100 (SXM4 or PCIe, 40/80 GB)", 312, 19.5, "NVIDIA A100 Tensor Core GPU datasheet (BF16 312 "
         "TFLOPS dense, 624 with sparsity; FP32 19.5 TFLOPS)", r"A100"),
    _gpu("a10g", "NVIDIA A10G (AWS g5)", 70, 31.2, "no NVIDIA datasheet for the AWS variant: BF16 70 TFLOPS dense as "
         "Baseten's A10 vs A10G comparison lists it (the A10's datasheet: 125); FP32 as the A10", r"A10G"),
    _gpu("a10", "NVIDIA A10", 125, 31.2, "NVIDIA A10 Tensor Core GPU datasheet (BF16 250 TFLOPS with sparsity; FP32 "
         "31.2 TFLOPS)", r"A10\b"),
    _gpu("l4", "NVIDIA L4", 121, 30.3, "NVIDIA L4 Tensor Core GPU datasheet (BF16 242 TFLOPS with sparsity; FP32 "
         "30.3 TFLOPS)", r"\bL4\b"),
    _gpu("v100", "NVIDIA V100 (SXM2)", None, 15.7, "NVIDIA V100 Tensor Core GPU datasheet, SXM2 column (FP32 15.7 "
         "TFLOPS; FP16 tensor 125; no bf16 units: a run there trains in fp32)", r"V100"),
)}
CPU = "cpu"


def cpu_profile(name: str = "this machine's CPU") -> DeviceProfile:
    """The CPU a run trains on: measured throughput only (no peak, no MFU)."""
    return DeviceProfile(CPU, name, "cpu", None, None, "no peak: a CPU reports throughput only")


def device_profile(key: str) -> DeviceProfile:
    """The profile of a ``--device-profile`` key (``cpu`` or one of ``GPUS``); StudyError for another."""
    if key == CPU:
        return cpu_profile()
    if key not in GPUS:
        raise StudyError(f"unknown device profile {key!r}: choose {CPU} or one of {', '.join(GPUS)}")
    return GPUS[key]


def match_gpu(device_name: str) -> DeviceProfile | None:
    """The profile of a CUDA device by ``torch.cuda.get_device_name()`` (e.g. "NVIDIA H100 80GB HBM3"); None for a
    card the table does not hold."""
    for profile in GPUS.values():
        if re.search(profile.pattern, device_name):
            return profile
    return None
