"""The epoch loop of a run: start fresh (recording the resolved settings) or restore the state of ``last.pt``,
fit the head first for a linear probe or LP-FT, then per epoch: train, evaluate, append to the history, write
``best.pt`` / ``metrics.csv`` / ``last.pt`` and the TensorBoard scalars.  ``last.pt`` is written last: it is
what ``--resume`` continues from, so a run killed between these writes repeats the epoch deterministically."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from pathlib import Path
from typing import Any

from ..data import FolderLoader
from ..util.atomic import atomic_write, write_json
from . import checkpoint as ckpt_io
from . import linear_probe
from .data_setup import RunData, eval_loader
from .distributed import all_reduce_sum, barrier
from .engine import cosine_lr, evaluate, progress_bar, train_one_epoch
from .model_setup import RunModel
from .optim_setup import Optimisation, make_ema
from .state import RunContext, RunState, rng_state, set_rng_state


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The one line a run prints per epoch."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}", f"acc {row['train_acc']:.4f}"]
    if "val_top1" in row:
        parts += [f"val_loss {row['val_loss']:.4f}", f"val_top1 {row['val_top1']:.4f}"]
    parts += [f"{row['images_per_s']:.0f} img/s", f"{row['epoch_seconds']:.1f} s"]
    return "  ".join(parts)


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """The history as CSV, one column per key any row has (the probe row of LP-FT has no test columns...)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write(path, buf.getvalue(), what="metrics file")


def _tensorboard(ctx: RunContext, start_epoch: int) -> Any:
    if not ctx.main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        ctx.say("tensorboard not installed: no event files (pip install 'lightnets[train]')")
        return None
    return SummaryWriter(str(ctx.run_dir / "tb"), purge_step=start_epoch + 1)


class EpochLoop:
    """The loop over epochs of one run; ``run()`` returns the run's final state."""

    def __init__(self, ctx: RunContext, data: RunData, rm: RunModel, opt: Optimisation) -> None:
        self.ctx, self.data, self.rm, self.opt = ctx, data, rm, opt
        self.cfg = ctx.cfg
        self.last_path, self.best_path = ctx.run_dir / "last.pt", ctx.run_dir / "best.pt"
        self.fields = dict(arch=self.cfg.model, kwargs=rm.kwargs, classes=data.classes, preprocessing=data.preprocessing)
        if self.cfg.qat:  # float weights trained under int8 fake quantization (qat.py)
            self.fields["qat"] = True
        self.eval_kw = dict(device=ctx.device, amp_dtype=rm.amp.dtype, channels_last=rm.channels_last)
        eval_batch = max(self.cfg.batch_size, 64)  # no gradients: a small training batch need not slow evaluation
        self.val_loader = self._loader(data.splits.val, eval_batch) if ctx.main else None
        track = ctx.main and self.cfg.track_test and data.splits.test is not None
        self.test_loader = self._loader(data.splits.test, self.cfg.batch_size) if track else None
        self.probed: Any = None

    def _loader(self, ds: Any, batch_size: int) -> Any:
        return eval_loader(ds, self.data.preprocessing, batch_size, self.cfg.workers, self.ctx.device)

    # ------------------------------------------------------------------ start
    def start(self) -> RunState:
        """The state of ``last.pt`` when resuming one; else a fresh state, the resolved settings recorded."""
        ctx, cfg, opt = self.ctx, self.cfg, self.opt
        if ctx.resuming and self.last_path.exists():
            return self._restore()
        if ctx.main:
            resolved = {"batch_size": cfg.batch_size, "lr": opt.lr, "weight_decay": opt.weight_decay,
                        "head_lr_mult": opt.head_lr_mult, "steps_per_epoch": opt.steps_per_epoch,
                        "total_steps": opt.total_steps, "warmup_steps": opt.warmup_steps,
                        "method": "QAT" if cfg.qat else "linear probe" if cfg.freeze else "LP-FT" if opt.lp_ft else "train",
                        "amp_resolved": self.rm.amp.name, "amp_reason": self.rm.amp.reason}  # fmt: skip
            if self.data.preprocessing.get("preset") == "imagenet" and isinstance(opt.train_loader, FolderLoader):
                resolved["crop_scale"] = list(opt.crop_scale)
            probe = self.data.splits.probe
            write_json(ctx.run_dir / "config.json", {"config": dataclasses.asdict(cfg), "lightnets_kwargs": self.rm.kwargs,
                                                     "preprocessing": self.data.preprocessing,
                                                     "world_size": ctx.dist_info.world_size,
                                                     "image_probe": probe.to_dict() if probe else None,
                                                     "resolved": resolved})  # fmt: skip
            write_json(ctx.run_dir / "classes.json", self.data.classes)
        return RunState()

    def _restore(self) -> RunState:
        ctx, opt = self.ctx, self.opt
        saved = ckpt_io.load_checkpoint(self.last_path)
        ts = saved["train_state"]
        self.rm.model.load_state_dict(ts.get("raw_model", saved["model"]))
        opt.optimizer.load_state_dict(ts["optimizer"])
        if opt.ema is not None and ts.get("ema") is not None:
            opt.ema.load_state_dict(ts["ema"])
        if self.rm.scaler is not None and ts.get("scaler"):
            self.rm.scaler.load_state_dict(ts["scaler"])
        state = RunState(saved["epoch"], ts["step"], ts["history"], ts["best"], ts["best_epoch"],
                         float(ts.get("elapsed", 0.0)))  # fmt: skip
        set_rng_state(ts["rng"])
        ctx.say(f"resumed {ctx.run_dir} at epoch {state.start_epoch}/{self.cfg.epochs}")
        if ctx.extended_from is not None:
            step, epochs = state.step, self.cfg.epochs
            before = cosine_lr(max(step - 1, 0), total_steps=opt.steps_per_epoch * ctx.extended_from,
                               warmup_steps=opt.warmup_steps, base_lr=opt.lr)  # fmt: skip
            ctx.say(f"extended from {ctx.extended_from} to {epochs} epochs: the cosine schedule is re-planned over "
                    f"{epochs} epochs from step {step} on (lr {before:.3g} -> {opt.lr_at(step):.3g}; recorded in config.json)")  # fmt: skip
        return state

    # ------------------------------------------------------------------ the head first
    def _probe_stage(self, probe_loader: Any, lp_ft: bool, save_best: Any = None) -> Any:
        return linear_probe.probe_stage(self.rm.model, probe_loader, self.val_loader, self.data.classes,
                                        self.ctx.device, self.rm.amp.dtype, self.rm.channels_last,
                                        self.ctx.dist_info, lp_ft, save_best)  # fmt: skip

    def _lp_ft_head(self, state: RunState, probe_loader: Any) -> None:
        """LP-FT's first stage: fit the head on features computed once (history row 0; best.pt holds the most
        accurate head, before the refit), so fine-tuning starts from a calibrated head."""
        def save_probe(probed: Any) -> None:
            row = linear_probe.probe_row(probed, 0, state.elapsed)
            ckpt_io.save_checkpoint(self.best_path, self.rm.model, epoch=0, metrics=row, **self.fields)

        probed = self._probe_stage(probe_loader, True, save_probe)
        if self.ctx.main:
            row = linear_probe.probe_row(probed, 0, state.elapsed)
            state.elapsed = row["elapsed_s"]
            state.history.append(row)
            state.best, state.best_epoch = row.get("val_top1", -row["train_loss"]), 0
            self.ctx.say(epoch_line(row, self.cfg.epochs) + f"  (linear probe, weight decay {probed.fit.weight_decay:g}; "
                         f"fine-tuning starts from {probed.start_fit.weight_decay:g}, the lowest val loss)")  # fmt: skip
        if self.opt.ema is not None:  # the average starts from the fitted head, not the random one
            self.opt.ema = make_ema(self.rm.model, self.cfg.ema_decay)

    # ------------------------------------------------------------------ one epoch
    def _fit_epoch(self, epoch: int, state: RunState, probe_loader: Any) -> dict[str, Any]:
        """Train one epoch (or, with --freeze, fit the probe) and return its row of summed statistics."""
        ctx, cfg, opt, rm = self.ctx, self.cfg, self.opt, self.rm
        opt.train_loader.set_epoch(epoch)
        if cfg.freeze:
            self.probed = self._probe_stage(probe_loader, False)
            stats = linear_probe.probe_stats(self.probed, ctx.main)
        else:
            bar = progress_bar(opt.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}") if ctx.main and cfg.progress else None
            stats = train_one_epoch(rm.net, opt.train_loader, opt.optimizer, step=state.step, lr_at=opt.lr_at,
                                    label_smoothing=cfg.label_smoothing, ema=opt.ema, scaler=rm.scaler,
                                    progress=bar, after_train_mode=opt.after_train_mode, extra_loss=rm.extra_loss,
                                    **self.eval_kw)  # fmt: skip
            if bar is not None:
                bar.close()
        state.step = stats["step"]
        world = ctx.dist_info.world_size
        loss_sum, correct, seen, seconds = all_reduce_sum([stats["loss_sum"], stats["correct"], stats["seen"], stats["seconds"]])
        return {"epoch": epoch + 1, "lr": opt.lr_at(state.step - 1), "train_loss": loss_sum / seen,
                "train_acc": correct / seen, "images_per_s": seen / (seconds / world), "epoch_seconds": seconds / world}  # fmt: skip

    def _score(self, row: dict[str, Any], epoch_start: float, state: RunState) -> Any:
        """Add val (and test) scores and the elapsed time to ``row``; returns the model that was scored."""
        eval_model = self.opt.ema.module if self.opt.ema is not None else self.rm.model
        if self.val_loader is not None:
            val = (self.probed.val if self.cfg.freeze  # the probe scored val on its cached features
                   else evaluate(eval_model, self.val_loader, self.data.classes, **self.eval_kw))  # fmt: skip
            row.update({"val_loss": val.loss, "val_top1": val.top1, "val_top5": val.top5})
        state.elapsed += time.perf_counter() - epoch_start
        row["elapsed_s"] = state.elapsed
        if self.test_loader is not None:
            test = evaluate(eval_model, self.test_loader, self.data.classes, **self.eval_kw)
            row.update({"test_loss": test.loss, "test_top1": test.top1})
        return eval_model

    def _record(self, row: dict[str, Any], eval_model: Any, state: RunState, writer: Any) -> None:
        """Append ``row`` to the history and write best.pt (when it improved), metrics.csv, last.pt, TensorBoard."""
        epoch = row["epoch"]
        state.history.append(row)
        score = row.get("val_top1", -row["train_loss"])
        improved = score > state.best
        if improved:
            state.best, state.best_epoch = score, epoch
        opt = self.opt
        train_state = {
            "optimizer": opt.optimizer.state_dict(), "step": state.step, "history": state.history, "best": state.best,
            "elapsed": state.elapsed, "best_epoch": state.best_epoch, "rng": rng_state(),
            "ema": opt.ema.state_dict() if opt.ema is not None else None,
            "scaler": self.rm.scaler.state_dict() if self.rm.scaler is not None else None,
        }  # fmt: skip
        if opt.ema is not None:
            train_state["raw_model"] = {k: v.detach().cpu() for k, v in self.rm.model.state_dict().items()}
        elif self.cfg.qat:  # resuming restores the observers and fake-quantize scales too
            train_state["raw_model"] = self.rm.model.graph_state_dict()
        metrics = {k: v for k, v in row.items() if k != "epoch"}
        if improved:
            ckpt_io.save_checkpoint(self.best_path, eval_model, epoch=epoch, metrics=metrics, **self.fields)
        write_metrics_csv(self.ctx.run_dir / "metrics.csv", state.history)
        ckpt_io.save_checkpoint(self.last_path, eval_model, epoch=epoch, metrics=metrics, train_state=train_state,
                                **self.fields)  # fmt: skip
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(key, value, epoch)
            writer.flush()
        probe_note = f"  (linear probe, weight decay {self.probed.fit.weight_decay:g})" if self.cfg.freeze else ""
        self.ctx.say(epoch_line(row, self.cfg.epochs) + probe_note)

    # ------------------------------------------------------------------ the loop
    def run(self) -> RunState:
        cfg, ctx = self.cfg, self.ctx
        state = self.start()
        writer = _tensorboard(ctx, state.start_epoch)
        # the head is fitted on features computed once: all of a --freeze run (its one "epoch"), or the first
        # stage of LP-FT (history row 0, best.pt if nothing later beats it); see linear_probe.py
        fresh = state.start_epoch == 0
        probe_loader = self._loader(self.data.train_ds, max(cfg.batch_size, 64)) if (cfg.freeze or self.opt.lp_ft) and fresh else None
        if self.opt.lp_ft and fresh:
            self._lp_ft_head(state, probe_loader)
        for epoch in range(state.start_epoch, 1 if cfg.freeze else cfg.epochs):
            epoch_start = time.perf_counter()
            row = self._fit_epoch(epoch, state, probe_loader)
            if ctx.main:
                self._record(row, self._score(row, epoch_start, state), state, writer)
            barrier()
        if writer is not None:
            writer.close()
        return state
