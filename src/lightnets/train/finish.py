"""The end of a run: the best checkpoint scored on the test split (or val), its evaluation files, curves and
``report.html``, and the ``RunResult`` that ``train()`` returns."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import is_in_memory
from ..data.wordnet import display_names
from ..evaluation.metrics import EvalResult
from . import checkpoint as ckpt_io
from .data_setup import RunData, eval_loader, run_paths
from .engine import evaluate
from .model_setup import RunModel
from .state import RunContext, RunState


@dataclass
class RunResult:
    run_dir: Path
    best_epoch: int
    best_val_top1: float | None
    final: EvalResult | None  # best checkpoint on the test split if there is one, else on val
    final_split: str
    history: list[dict[str, Any]]
    seconds: float
    report: Path | None
    skipped: list[tuple[str, str]]

    def summary(self) -> dict[str, Any]:
        out = {"run_dir": str(self.run_dir), "best_epoch": self.best_epoch, "best_val_top1": self.best_val_top1,
               "final_split": self.final_split, "seconds": round(self.seconds, 1),
               "report": str(self.report) if self.report else None, "skipped_files": len(self.skipped)}  # fmt: skip
        if self.final is not None:
            out.update({f"{self.final_split}_{k}": v for k, v in self.final.summary().items()})
        return out


def run_result(ctx: RunContext, state: RunState, data: RunData, final: EvalResult | None = None,
               final_split: str = "", report: Path | None = None) -> RunResult:  # fmt: skip
    """The result of a run; processes other than the main one return it without evaluation or report."""
    best_val = max((r["val_top1"] for r in state.history if "val_top1" in r), default=None) if ctx.main else None
    return RunResult(run_dir=ctx.run_dir, best_epoch=state.best_epoch, best_val_top1=best_val, final=final,
                     final_split=final_split if final is not None else "", history=state.history,
                     seconds=time.perf_counter() - ctx.started, report=report, skipped=data.skipped)  # fmt: skip


def _thumbnails(ds: Any, result: EvalResult, classes: list[str], limit: int = 12) -> list[tuple[Any, str]]:
    from PIL import Image

    thumbs = []
    for item in result.worst[:limit]:
        caption = item.describe(classes)
        if getattr(item, "path", None):
            thumbs.append((item.path, caption))
        elif is_in_memory(ds):
            arr = ds.images[item.index].permute(1, 2, 0).numpy()
            img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
            thumbs.append((img, caption))
    return thumbs


def finish(ctx: RunContext, data: RunData, rm: RunModel, state: RunState) -> RunResult:
    """Evaluate the best checkpoint on test (or val), write eval files, curves and report.html."""
    from ..evaluation.report import plot_curves, save_eval_artifacts, write_report

    cfg, device, classes = ctx.cfg, ctx.device, data.classes
    model, _ = ckpt_io.model_from_checkpoint(ctx.run_dir / "best.pt")
    model.to(device)
    split_name, ds = ("test", data.splits.test) if data.splits.test is not None else ("val", data.splits.val)
    if ds is None:
        plot_curves(state.history, ctx.run_dir / "curves.png")
        return run_result(ctx, state, data)
    loader = eval_loader(ds, data.preprocessing, cfg.batch_size, cfg.workers, device)
    final = evaluate(model, loader, classes, device=device, paths_by_id=run_paths(ds))
    save_eval_artifacts(ctx.run_dir, final)
    card = {**rm.card, "best_epoch": state.best_epoch, "evaluated_on": f"{split_name} ({len(ds)} images)"}
    report = write_report(ctx.run_dir, model_card=card, history=state.history, eval_result=final,
                          thumbnails=_thumbnails(ds, final, display_names(classes)),
                          title=f"lightnets: {cfg.model} on {cfg.data}")  # fmt: skip
    return run_result(ctx, state, data, final, split_name, report)
