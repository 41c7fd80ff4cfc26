"""``--amp auto``: which precision a run trains in, decided from the device, the model family and a timing.

bf16 autocast is not free on a CPU: without native bf16 instructions it is emulated and slower, and even
with them it pays only where the convolutions oneDNN runs in bf16 dominate the step.  The decision is
therefore data.  One row per family, from the training-speed table of benchmarks/train_speed.py in
docs/benchmarks.md (width 1.0 models at 32 and 224 px, a CPU with AVX512-BF16), says where bf16 can pay; for
those families the run then times a few training steps of its own model at its own batch shape in both
precisions (``time_steps``) and keeps bf16 only when it is faster: MobileNetV1 0.25x at 28 px trains *slower*
in bf16 (775 against 850 images/s, docs/benchmarks.md) although the family's width-1.0 rows gain 1.8-2.2x.  The
run records which precision it chose and why (config.json ``amp_resolved``, one log line).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# the timing: alternating fp32 / bf16 steps after one warm-up step each; cut short (the family row decides) when
# the first timed fp32 step takes longer than PROBE_MAX_STEP_S (the probe would cost a minute on a large input); bf16 is kept
# only when its median step is at least BF16_MIN_GAIN faster (a closer call is not worth changing numerics)
PROBE_STEPS, PROBE_MAX_STEP_S, BF16_MIN_GAIN = 3, 1.5, 1.05


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


StepTimer = Callable[[], "tuple[float, float] | None"]


def time_steps(model: nn.Module, shape: tuple[int, ...], classes: int, device: torch.device,
               channels_last: bool) -> tuple[float, float] | None:  # fmt: skip
    """Median seconds of one training step (forward, cross-entropy, backward) of a copy of ``model`` on random
    data of ``shape``, in fp32 and in bf16 autocast, steps alternating after a warm-up step of each; None when
    the first timed fp32 step is slower than PROBE_MAX_STEP_S.  The copy keeps the run's model (weights, BatchNorm statistics) untouched."""
    net = copy.deepcopy(model).train()
    x = torch.randn(shape, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = torch.randint(0, classes, (shape[0],), device=device)

    def step(dtype: torch.dtype | None) -> float:
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        net.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    if step(None) > 4 * PROBE_MAX_STEP_S:  # warm-up (the first step builds oneDNN's kernels): far too slow
        return None
    step(torch.bfloat16)
    times: dict[torch.dtype | None, list[float]] = {None: [], torch.bfloat16: []}
    for _ in range(PROBE_STEPS):
        for dtype in times:
            times[dtype].append(step(dtype))
            if times[None][0] > PROBE_MAX_STEP_S:
                return None
    return statistics.median(times[None]), statistics.median(times[torch.bfloat16])


def decide_amp(setting: str, device: torch.device, family: str, *, native_bf16: bool | None = None,
               timer: StepTimer | None = None) -> AmpDecision:  # fmt: skip
    """The autocast dtype (None: fp32) for ``setting`` (auto | off | bf16 | fp16) and why.  ``timer`` (auto on a
    CPU with native bf16, for a family whose row says bf16 can pay): measured (fp32, bf16) step seconds."""
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
    if not row.bf16_on_cpu:
        return AmpDecision(None, f"auto: {family} stays fp32 on CPU ({row.evidence})")
    timed = timer() if timer is not None else None
    if timed is None:
        return AmpDecision(torch.bfloat16, f"auto: CPU with native bf16, {family}: {row.evidence}")
    fp32_s, bf16_s = timed
    measured = f"this model's training step {fp32_s * 1e3:.0f} ms fp32, {bf16_s * 1e3:.0f} ms bf16"
    if fp32_s >= BF16_MIN_GAIN * bf16_s:
        return AmpDecision(torch.bfloat16, f"auto: CPU with native bf16, {measured}")
    return AmpDecision(None, f"auto: fp32, bf16 is not faster here ({measured})")


def rank0_decision(amp: AmpDecision) -> AmpDecision:
    """In a distributed CPU run every rank times its own steps (on shared cores, so they may disagree): all train
    in rank 0's precision, broadcast over the process group."""
    import torch.distributed as dist

    dtypes = (None, torch.bfloat16, torch.float16)
    code = torch.tensor([dtypes.index(amp.dtype)])
    dist.broadcast(code, 0)
    dtype = dtypes[int(code)]
    return amp if dtype == amp.dtype else AmpDecision(dtype, f"rank 0's decision (here: {amp.reason})")
