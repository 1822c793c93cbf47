"""One training loop for the kit: AdamW + warmup/cosine, DistributedSampler batches, a progress bar with loss and
ETA, checkpoints every N steps (resume continues exactly where a killed run stopped), eval at the end of every
epoch with the best weights kept, and a wall-clock cap.

The loop knows nothing about models or losses: it trains the parameters of ``modules`` by calling
``loss_fn(local_row_indices) -> (loss, {part: value})`` and evaluates with ``eval_fn() -> {metric: value}``.
Under torchrun every rank runs it: the global batch is split over ranks by ``DistributedSampler`` (so the
union of the ranks' local batches is exactly the single-process batch), gradients are averaged across
ranks, and rank 0 evaluates, checkpoints and draws the progress bar.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..errors import CheckpointError, UserInputError
from . import checkpoint as ckpt
from .dist import average_gradients, barrier, broadcast_object, current

LossFn = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[], dict[str, float]]


@dataclass(frozen=True)
class LoopSettings:
    steps: int
    batch: int                      # global batch (split over ranks)
    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: Optional[float] = 1.0
    seed: int = 0
    checkpoint_every: int = 0       # 0: only at the end
    max_minutes: Optional[float] = None
    best_metric: Optional[str] = None   # eval figure to maximise (default: the first one eval_fn returns)
    group_lr: tuple[tuple[str, float], ...] = ()   # (prefix of "<module>.<parameter name>", lr): other lrs


@dataclass
class LoopResult:
    steps_done: int
    steps_per_epoch: int
    epochs: float
    history: list[dict[str, Any]] = field(default_factory=list)   # one entry per eval: step, epoch, figures
    best: Optional[dict[str, Any]] = None                        # the eval entry whose weights were kept
    final_loss: Optional[float] = None
    final_parts: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    stopped_by_time: bool = False
    resumed_from: Optional[int] = None
    world: int = 1
    batch: int = 0


def _param_groups(named: list[tuple[str, torch.nn.Parameter]], settings: LoopSettings) -> list[dict[str, Any]]:
    """Optimizer groups: parameters whose name starts with a ``group_lr`` prefix train at that lr."""
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in named:
        lr = next((v for prefix, v in settings.group_lr if name.startswith(prefix)), settings.lr)
        groups.setdefault(float(lr), []).append(p)
    return [{"params": ps, "lr": lr} for lr, ps in groups.items()]


class TrainLoop:
    def __init__(self, modules: dict[str, torch.nn.Module], n_rows: int, settings: LoopSettings, loss_fn: LossFn,
                 eval_fn: Optional[EvalFn] = None, checkpoint_dir: Optional[Path] = None, config_digest: str = "",
                 desc: str = "mmdk train", quiet: bool = False,
                 on_checkpoint: Optional[Callable[[int], None]] = None,
                 after_step: Optional[Callable[[], None]] = None):
        self.modules, self.settings, self.loss_fn, self.eval_fn = modules, settings, loss_fn, eval_fn
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.digest, self.desc, self.quiet, self.on_checkpoint = config_digest, desc, quiet, on_checkpoint
        self.after_step = after_step   # e.g. clamp a learned temperature after each optimizer step
        self.dist = current()
        world = self.dist.world
        batch = min(int(settings.batch), n_rows)
        batch -= batch % world
        if batch < world or settings.steps < 1:
            raise UserInputError(f"cannot train: {n_rows} rows, batch {settings.batch}, {world} process(es), "
                                 f"{settings.steps} steps", hint="use more data, a larger batch or fewer processes")
        self.batch, self.local_batch, self.n_rows = batch, batch // world, n_rows
        named = [(f"{k}.{n}", p) for k, m in modules.items() for n, p in m.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        if not self.params:
            raise UserInputError("nothing to train: every parameter is frozen")
        from torch.utils.data import DistributedSampler

        self.sampler = DistributedSampler(range(n_rows), num_replicas=world, rank=self.dist.rank, shuffle=True,
                                          seed=settings.seed, drop_last=True)
        self.steps_per_epoch = max(1, len(self.sampler) // self.local_batch)
        self.opt = torch.optim.AdamW(_param_groups(named, settings), lr=settings.lr, betas=(0.9, 0.98), eps=1e-6,
                                     weight_decay=settings.weight_decay)
        steps, warm = settings.steps, min(settings.warmup_steps, max(settings.steps // 5, 0))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: (s + 1) / warm if s < warm else
                                                       0.5 * (1 + math.cos(math.pi * (s - warm) / max(steps - warm, 1))))

    # ---- state ---------------------------------------------------------------------------------------
    def _progress_state(self, step: int, history: list, best: Optional[dict]) -> dict[str, Any]:
        return {"config_digest": self.digest, "history": history, "best": best, "world": self.dist.world,
                "batch": self.batch, "step": step}

    def _resume(self) -> tuple[int, list, Optional[dict]]:
        found = ckpt.load_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        if found is None:
            return 0, [], None
        weights, optim, state = found
        if state.get("config_digest") != self.digest:
            raise CheckpointError(f"the checkpoint in {self.checkpoint_dir} was written by a run with other options",
                                  hint="resume with the same options, or delete the directory to start over")
        ckpt.load_flat_state(self.modules, weights, str(self.checkpoint_dir))
        try:
            self.opt.load_state_dict(optim["optimizer"])
            self.sched.load_state_dict(optim["scheduler"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"resume checkpoint in {self.checkpoint_dir} has unusable optimizer state ({exc})",
                                  hint="delete the checkpoint directory to start over") from None
        return int(state["step"]), list(state.get("history") or []), state.get("best")

    def _save(self, step: int, history: list, best: Optional[dict]) -> None:
        if self.checkpoint_dir is not None and self.dist.main:
            ckpt.save_checkpoint(self.checkpoint_dir, step, self.modules,
                                 {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()},
                                 self._progress_state(step, history, best))
        barrier()
        if self.on_checkpoint is not None:
            self.on_checkpoint(step)

    # ---- eval ----------------------------------------------------------------------------------------
    def _evaluate(self, step: int, history: list, best: Optional[dict],
                  best_state: dict) -> Optional[dict]:
        figures = None
        if self.dist.main:
            for m in self.modules.values():
                m.eval()
            try:
                figures = self.eval_fn()
            finally:
                for m in self.modules.values():
                    m.train()
        figures = broadcast_object(figures)
        entry = {"step": step, "epoch": round(step / self.steps_per_epoch, 3), **figures}
        history.append(entry)
        key = self.settings.best_metric or next(iter(figures), None)
        if key is None or key not in figures:
            return best
        if best is None or figures[key] > best.get(key, -math.inf):
            best = dict(entry, metric=key)
            best_state.clear()
            best_state.update(ckpt.flat_state(self.modules))
            if self.checkpoint_dir is not None and self.dist.main:
                ckpt.save_best(self.checkpoint_dir, self.modules, best)
        return best

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> LoopResult:
        from .._progress import progress_bar

        s = self.settings
        t0 = time.perf_counter()
        step, history, best = self._resume() if resume else (0, [], None)
        resumed_from = step if resume and step else None
        best_state: dict[str, torch.Tensor] = {}
        if best is not None and self.checkpoint_dir is not None:
            found = ckpt.load_best(self.checkpoint_dir)
            if found is not None:
                best_state.update(found[0])
        for m in self.modules.values():
            m.train()
        bar = progress_bar(total=s.steps, initial=step, desc=self.desc, disable=self.quiet or not self.dist.main)
        loss_value, parts, stopped, last_eval = None, {}, False, -1
        while step < s.steps and not stopped:
            epoch, offset = divmod(step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            local = torch.tensor(list(self.sampler), dtype=torch.long)
            for b in range(offset, self.steps_per_epoch):
                if step >= s.steps:
                    break
                if s.max_minutes is not None:
                    stopped = bool(broadcast_object((time.perf_counter() - t0) / 60.0 >= s.max_minutes))
                    if stopped:
                        break
                idx = local[b * self.local_batch:(b + 1) * self.local_batch]
                torch.manual_seed(s.seed * 1_000_003 + step * self.dist.world + self.dist.rank)  # dropout etc.
                loss, parts = self.loss_fn(idx)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                average_gradients(self.params)
                if s.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, s.grad_clip)
                self.opt.step()
                self.sched.step()
                if self.after_step is not None:
                    self.after_step()
                step += 1
                loss_value = float(loss.detach())
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                if self.eval_fn is not None and b == self.steps_per_epoch - 1:
                    best, last_eval = self._evaluate(step, history, best, best_state), step
                if s.checkpoint_every and step % s.checkpoint_every == 0 and step < s.steps:
                    self._save(step, history, best)
        bar.close()
        if self.eval_fn is not None and last_eval != step and (not history or history[-1]["step"] != step):
            best = self._evaluate(step, history, best, best_state)
        self._save(step, history, best)
        if best is not None and best["step"] != step and best_state:
            ckpt.load_flat_state(self.modules, best_state, "the best checkpoint")
        for m in self.modules.values():
            m.eval()
        return LoopResult(steps_done=step, steps_per_epoch=self.steps_per_epoch,
                          epochs=round(step / self.steps_per_epoch, 3), history=history, best=best,
                          final_loss=loss_value, final_parts=dict(parts), wall_seconds=time.perf_counter() - t0,
                          stopped_by_time=stopped, resumed_from=resumed_from, world=self.dist.world, batch=self.batch)
