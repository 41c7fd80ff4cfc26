"""``--amp auto``: which precision a run trains in, decided from the device and the model family.

bf16 autocast is not free on a CPU: without native bf16 instructions it is emulated and slower, and even
with them it pays only where the convolutions oneDNN runs in bf16 dominate the step.  The decision is
therefore data -- one row per family, from the training-speed table of benchmarks/train_speed.py in
docs/benchmarks.md, measured on a CPU with AVX512-BF16 and AMX -- and the run records which precision it
chose and why (config.json ``amp_resolved``, one log line).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch


class FamilyPrecision(NamedTuple):
    """Whether bf16 autocast trains this family faster on a CPU with native bf16, and the measurement."""

    bf16_on_cpu: bool
    evidence: str


# benchmarks/train_speed.py, docs/benchmarks.md "Training speed" (bf16 autocast vs fp32, channels_last, CPU
# with avx512_bf16 + amx_bf16).  Families without a measurement stay in fp32: a guess must not change numerics.
CPU_BF16_BY_FAMILY: dict[str, FamilyPrecision] = {
    "mobilenet_v1": FamilyPrecision(True, "1.8-2.2x faster training steps in bf16"),
    "mobilenet_v2": FamilyPrecision(True, "1.8-2.2x faster training steps in bf16"),
    "shufflenet_v2": FamilyPrecision(False, "slower in bf16 at 32 px (channel shuffle and split stay fp32)"),
    "mobilenet_v3": FamilyPrecision(False, "not measured"),
    "shufflenet_v1": FamilyPrecision(False, "not measured"),
}


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU executes bf16 natively (AVX512-BF16 or AMX-BF16).  ``cpuinfo`` is the text of
    /proc/cpuinfo (read when None; absent on non-Linux systems, where the answer is False)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


class AmpDecision(NamedTuple):
    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def decide_amp(setting: str, device: torch.device, family: str, *, native_bf16: bool | None = None) -> AmpDecision:
    """The autocast dtype (None: fp32) for ``setting`` (auto | off | bf16 | fp16) and why."""
    if setting != "auto":
        dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[setting]
        return AmpDecision(dtype, f"--amp {setting}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return AmpDecision(torch.bfloat16, "auto: GPU with bf16")
        return AmpDecision(None, "auto: GPU without bf16")
    if device.type != "cpu":
        return AmpDecision(None, f"auto: no measurement for device {device.type}")
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    if not native:
        return AmpDecision(None, "auto: this CPU has no native bf16 (avx512_bf16 / amx_bf16)")
    row = CPU_BF16_BY_FAMILY.get(family, FamilyPrecision(False, "not measured"))
    if row.bf16_on_cpu:
        return AmpDecision(torch.bfloat16, f"auto: CPU with native bf16, {family}: {row.evidence}")
    return AmpDecision(None, f"auto: {family} stays fp32 on CPU ({row.evidence})")
