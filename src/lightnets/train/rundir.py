"""The run directory: one run per directory, locked while it runs (``RunLock``), opened fresh or continued
(``open_run_dir``), and the rules for what ``--resume`` may change (``resume_overrides``)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from ..util.atomic import write_json
from .config import TrainConfig


class RunDirError(ValueError):
    """The run directory cannot be used: it holds another run, or another process is writing to it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock file in the run directory: a second run started into the same directory refuses
    instead of interleaving files.  A lock left by a dead process (killed run) is taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.held = False

    def _create(self, content: str) -> None:
        # The lock appears with its content in one step (a hard link to a finished temporary file), so a
        # process killed while taking it cannot leave an empty lock that no one can judge stale.
        fd, tmp = tempfile.mkstemp(prefix=".lock.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(content)
            try:
                os.link(tmp, self.path)
            except OSError as e:
                if isinstance(e, FileExistsError):
                    raise
                # no hard links on this file system: create exclusively, then write
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as f:
                    f.write(content)
        finally:
            os.unlink(tmp)

    def acquire(self) -> None:
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                self._create(me)
            except FileExistsError:
                try:
                    pid_text, _, host = self.path.read_text().partition(" ")
                    pid = int(pid_text)
                except (OSError, ValueError):
                    pid, host = -1, ""
                if pid > 0 and host.strip() == socket.gethostname() and not _pid_alive(pid):
                    self.path.unlink(missing_ok=True)  # stale lock of a killed run
                    continue
                raise RunDirError(
                    f"run directory {self.path.parent} is in use by process {pid_text if pid > 0 else '?'} "
                    f"on {host.strip() or '?'}; wait for it or choose another --out"
                ) from None
            self.held = True
            return
        raise RunDirError(f"could not lock {self.path}")  # pragma: no cover

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def default_out(cfg: TrainConfig) -> str:
    return str(Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")


def _remove_stale_temporaries(run_dir: Path) -> None:
    # writes cut short by a kill leave their temporary files (see atomic.atomic_write); called
    # with the lock held, when no one else can be writing them
    for tmp in run_dir.glob(".*.*.tmp"):
        tmp.unlink(missing_ok=True)


# settings a continued run may change: they do not change its results
RESUME_FREE = ("workers", "device", "progress", "cache_dir", "no_cache")  # where data is read from, not what is learnt


def resume_overrides(cfg: TrainConfig, overrides: dict[str, Any], run_dir: Path) -> tuple[TrainConfig, int | None]:
    """``cfg`` (a run's saved config) with the settings given again on ``--resume`` applied, and the epoch count
    it had when ``epochs`` grows (None otherwise).

    A larger ``epochs`` extends the run: its cosine schedule is re-planned over the new total from the current
    step on (the epochs already trained keep their rates).  Fewer epochs, or any other setting that differs
    from the run's own, are refused naming both values: the continued run would no longer be the run its files
    describe.  A value equal to the run's own is accepted, so repeating the original command with
    ``--resume`` works."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    extended_from = None
    cfg = dataclasses.replace(cfg)
    for name, value in overrides.items():
        if name not in fields:
            raise ValueError(f"cannot resume {run_dir} with {name}={value!r}: not a training setting")
        old = getattr(cfg, name)
        if name == "out":
            if Path(value).resolve() != run_dir.resolve():
                raise ValueError(f"cannot resume {run_dir} into --out {value}: a resumed run stays in its directory")
        elif name in RESUME_FREE:
            setattr(cfg, name, value)
        elif name == "epochs" and isinstance(value, int) and value > old:
            extended_from, cfg.epochs = old, value
        elif name == "epochs" and value != old:
            raise ValueError(f"cannot resume {run_dir} with epochs={value}: the run is planned for {old} epochs "
                             "(config.json); epochs can only grow (to extend the run)")  # fmt: skip
        elif value != old:
            raise ValueError(f"cannot resume {run_dir} with {name}={value!r}: the run was started with {name}={old!r} "
                             "(config.json); start a new run (another --out) to change it")  # fmt: skip
    return cfg, extended_from


def resolve_run(
    config: TrainConfig | None, resume: str | os.PathLike | None, overrides: dict[str, Any] | None
) -> tuple[TrainConfig, Path, int | None]:
    """(settings, run directory, epoch count before an extension) of a new run or of the run in ``resume``."""
    if resume is None:
        if config is None:
            raise ValueError("train() needs a config or resume=RUN_DIR")
        cfg = dataclasses.replace(config)
        cfg.out = cfg.out or default_out(cfg)
        return cfg, Path(cfg.out), None
    run_dir = Path(resume)
    if not (run_dir / "config.json").is_file():
        raise RunDirError(f"cannot resume {run_dir}: no config.json there (is it a lightnets run directory?)")
    saved = json.loads((run_dir / "config.json").read_text())
    cfg = TrainConfig(**saved["config"])
    cfg.out = str(run_dir)
    cfg, extended_from = resume_overrides(cfg, overrides or {}, run_dir)
    return cfg, run_dir, extended_from


def open_run_dir(cfg: TrainConfig, run_dir: Path, resuming: bool, extended_from: int | None, lock: RunLock) -> None:
    """Make (or reopen) the run directory and take its lock; called on the main process only."""
    if not resuming and (run_dir / "config.json").exists():
        raise RunDirError(
            f"run directory {run_dir} already holds a run; continue it with --resume {run_dir} "
            "or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    _remove_stale_temporaries(run_dir)
    if extended_from is not None:  # the new plan goes down first, so a kill from here on resumes it
        saved = json.loads((run_dir / "config.json").read_text())
        saved["config"]["epochs"] = cfg.epochs
        saved.setdefault("extensions", []).append({"from_epochs": extended_from, "to_epochs": cfg.epochs})
        write_json(run_dir / "config.json", saved)
    if not resuming:
        # the config goes down at once, so a run killed at any later moment can be continued with --resume
        # (without a last.pt that starts it afresh); the loop adds the resolved kwargs once the data is loaded
        write_json(run_dir / "config.json", {"config": dataclasses.asdict(cfg)})


def forget_failed_start(run_dir: Path) -> None:
    """A new run that fails before its first checkpoint holds nothing to continue: leave the directory
    startable again with the same command (a SIGKILL skips this and leaves it resumable instead)."""
    if not (run_dir / "last.pt").exists():
        for name in ("config.json", "split.json"):
            (run_dir / name).unlink(missing_ok=True)
