"""The training loop over accelerate: one GPU, many GPUs, many machines, or the CPU.

    syncfoley train recipe.toml                                     # one process
    accelerate launch --multi_gpu --num_processes 8 -m syncfoley train recipe.toml
    accelerate launch --num_machines 2 --machine_rank R --main_process_ip HOST --main_process_port 29500 \\
        --multi_gpu --num_processes 16 -m syncfoley train recipe.toml

Every process reads its own share of each step's batches (`data.BatchStream`); accelerate wraps the
model for distributed data parallel, autocasts for `mixed_precision`, and accumulates gradients.
The schedule is a function of the step (warmup, then constant or cosine), so resuming needs no
scheduler state: a resumed run restores the trainable weights, optimizer, EMA, every process's
generator and accelerate's RNG states, and continues with the batch it would have read next, ending
with the same weights as a run that was never stopped.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..families import FlowModel
from . import checkpoints
from .config import TrainConfig
from .data import BatchStream, ClipDataset, collate, loader
from .lora import add_lora, freeze_dead, refuse_fp8
from .networks import starting_model, tuned_network, write_export
from .objective import FlowMatchingLoss, draw


@dataclass
class StepInfo:
    step: int
    max_steps: int
    loss: float
    flow: float
    repa: float
    learning_rate: float


@dataclass
class TrainResult:
    steps: int
    history: list[StepInfo] = field(default_factory=list)
    output: Path | None = None
    checkpoint: Path | None = None
    seconds: float = 0.0


class TrainingStopped(KeyboardInterrupt):
    """Training was asked to stop; a checkpoint of the last step was written."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"stopped after step {step}; resume from {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    kwargs = dict(mixed_precision=config.train.mixed_precision, cpu=config.train.cpu,
                  gradient_accumulation_steps=config.train.gradient_accumulation)
    try:
        return Accelerator(**kwargs)
    except ValueError as exc:
        # A second run in one process (the ComfyUI node) may ask for another precision: accelerate keeps
        # one global state, which can be reset when no distributed launch set it up.
        if "already" not in str(exc) or AcceleratorState().num_processes > 1:
            raise
        AcceleratorState._reset_state(True)
        return Accelerator(**kwargs)


class Trainer:
    """Fine-tune (LoRA or full) or train from scratch on a prepared feature cache, any family.

    `model`: a family's network, or its `FlowModel`, to start from (it is not modified: LoRA trains on
    a copy sharing its frozen weights, full training on a deep copy); default: `config.model.checkpoint`
    (loaded as the model loader does, family from the file), or a new FoleyDiT of `config.model.config`
    when that is empty (HunyuanVideo-Foley's layout only).
    """

    def __init__(self, config: TrainConfig, model: nn.Module | FlowModel | None = None,
                 dataset: ClipDataset | None = None, log: Callable[[str], None] | None = None):
        self.config = config
        self.log = log or (lambda message: None)
        self.accelerator = make_accelerator(config)
        self.dataset = dataset if dataset is not None else ClipDataset(config.cache_dir)
        repa_dim = self.dataset[0]["repa"].shape[-1] if self.dataset.has_repa else None
        with torch.random.fork_rng(devices=[]):  # seeded initial weights (scratch, adapters, projector)
            torch.manual_seed(config.train.seed)
            flow = starting_model(config, model, getattr(self.dataset, "index", {}).get("family"))
            network = flow.network
            self.adapted = add_lora(network, config.lora) if config.mode == "lora" else []
            if config.mode == "full":
                refuse_fp8(network, "full fine-tuning")
                network.requires_grad_(True)
                freeze_dead(network)
            if config.model.gradient_checkpointing:
                network.gradient_checkpointing = True
            module = FlowMatchingLoss(flow, config.objective, self.dataset.null_text, repa_dim).train()
        self.flow = module.flow
        self.trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
        network_params = {n.removeprefix("network."): p for n, p in self.trainable.items() if n.startswith("network.")}
        self.ema = checkpoints.EMA(network_params, config.train.ema_decay) if config.train.ema_decay > 0 else None
        optim = config.optim
        optimizer = torch.optim.AdamW(list(self.trainable.values()), lr=optim.learning_rate, betas=optim.betas,
                                      eps=optim.eps, weight_decay=optim.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(module, optimizer)
        self.module = module
        state = self.accelerator.state
        self.stream = BatchStream(len(self.dataset), config.data.batch_size, config.train.seed,
                                  state.process_index, state.num_processes)
        self.generator = torch.Generator().manual_seed(config.train.seed + 7919 * state.process_index)
        self.step = 0
        self.accelerator.register_save_state_pre_hook(self._save_hook)
        self.accelerator.register_load_state_pre_hook(self._load_hook)

    # ------------------------------------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The network being trained (adapters injected in LoRA mode)."""
        return self.module.network

    dit = network  # the name scripts (the demo build) knew it by

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output)

    def _save_hook(self, models, weights, output_dir) -> None:
        weights.clear()  # the frozen base is not saved: only what training changes
        state = {"step": self.step, "mode": self.config.mode, "name": self.config.name,
                 "processes": self.accelerator.num_processes}
        checkpoints.write_state_files(Path(output_dir), self.trainable, self.ema, state, self.generator,
                                      self.accelerator.process_index, self.accelerator.is_main_process)

    def _load_hook(self, models, input_dir) -> None:
        models.clear()
        state = checkpoints.read_state_files(Path(input_dir), self.module, self.ema, self.generator,
                                             self.accelerator.process_index)
        self.step = int(state["step"])

    def save_checkpoint(self) -> Path:
        return checkpoints.save_checkpoint(self.accelerator, self.output_dir, self.step,
                                           self.config.train.keep_checkpoints)

    def load_checkpoint(self, folder: str | Path) -> None:
        self.accelerator.load_state(str(folder))
        self.log(f"resumed from {folder} at step {self.step}")

    # ------------------------------------------------------------------------------------------
    def train(self, resume: str | Path | bool | None = None, stop_at: int | None = None,
              callback: Callable[[StepInfo], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> TrainResult:
        """Train to `config.train.max_steps` (or stop after `stop_at`, keeping a checkpoint to resume
        from). `callback(info)` runs after every step; if it raises, a checkpoint is written first.
        `should_stop()` is asked after every step (all processes agree on the answer): when any says
        yes, a checkpoint is written and `TrainingStopped` raised (the CLI's Ctrl-C)."""
        config, accelerator = self.config, self.accelerator
        folder = checkpoints.resolve_resume(self.output_dir, resume) if resume else None
        if folder is not None:
            self.load_checkpoint(folder)  # also restores accelerate's RNG states
        elif self.step == 0:
            earlier = checkpoints.latest_checkpoint(self.output_dir)
            if earlier is not None:
                raise ValueError(f"{self.output_dir} holds checkpoints of an earlier run (up to {earlier.name}): "
                                 "resume it (--resume) or choose another output folder")
            torch.manual_seed(config.train.seed + 1 + accelerator.process_index)  # LoRA dropout, if any
            if accelerator.is_main_process:
                (self.output_dir / "train_log.jsonl").unlink(missing_ok=True)
        started = time.perf_counter()
        max_steps = config.train.max_steps
        stop = min(stop_at or max_steps, max_steps)
        accumulation = config.train.gradient_accumulation
        batches = iter(loader(self.dataset, self.stream, self.step * accumulation, config.data.num_workers))
        result = TrainResult(self.step)
        last_saved = self.step
        while self.step < stop:
            info = self._one_step(batches, accumulation, max_steps)
            self.step += 1
            result.history.append(info)
            if accelerator.is_main_process and (self.step % config.train.log_every == 0 or self.step == stop):
                self._append_log(info)
            try:
                if callback is not None:
                    callback(info)
            except BaseException:
                if self.step > last_saved:
                    self.save_checkpoint()
                raise
            if should_stop is not None and self._anyone(should_stop()) and self.step < stop:
                raise TrainingStopped(self.step, self.save_checkpoint())
            every = config.train.checkpoint_every
            if every and self.step % every == 0 and self.step < stop:
                self.save_checkpoint()
                last_saved = self.step
        if self.step > last_saved:
            result.checkpoint = self.save_checkpoint()
        else:
            result.checkpoint = checkpoints.latest_checkpoint(self.output_dir)
        if self.step >= max_steps:
            result.output = self.export()
        result.steps, result.seconds = self.step, time.perf_counter() - started
        return result

    def _anyone(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        return bool(self.accelerator.reduce(torch.tensor([float(flag)], device=self.accelerator.device), "sum") > 0)

    def _one_step(self, batches, accumulation: int, max_steps: int) -> StepInfo:
        accelerator, config = self.accelerator, self.config
        learning_rate = config.optim.learning_rate * config.optim.lr_factor(self.step, max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        totals = torch.zeros(3, device=accelerator.device)
        for _ in range(accumulation):
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
            draws = draw(self.generator, tuple(batch["latent_mean"].shape), config.objective,
                         sample_posterior=config.data.latent == "sample").to(accelerator.device)
            with accelerator.accumulate(self.model):
                parts = self.model(batch, draws)
                accelerator.backward(parts["loss"])
                if accelerator.sync_gradients and config.optim.max_grad_norm:
                    accelerator.clip_grad_norm_(list(self.trainable.values()), config.optim.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            totals += torch.stack([parts["loss"].detach(), parts["flow"], parts["repa"]]) / accumulation
        if self.ema is not None and not accelerator.optimizer_step_was_skipped:
            self.ema.update()
        loss, flow, repa = accelerator.reduce(totals, reduction="mean").tolist()
        return StepInfo(self.step + 1, max_steps, loss, flow, repa, learning_rate)

    @torch.no_grad()
    def evaluate(self, repeats: int = 4, seed: int = 1234) -> float:
        """Mean flow-matching loss over every cached clip, `repeats` times each with fixed noise and
        times and no condition dropout: comparable between calls, unlike the training loss."""
        generator = torch.Generator().manual_seed(seed)
        settings = replace(self.config.objective, drop_visual=0.0, drop_text=0.0)
        was_training = self.module.training
        self.module.eval()
        total, count = 0.0, 0
        try:
            for _ in range(repeats):
                for start in range(0, len(self.dataset), self.config.data.batch_size):
                    indices = range(start, min(start + self.config.data.batch_size, len(self.dataset)))
                    batch = collate([self.dataset[i] for i in indices])
                    batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                    draws = draw(generator, tuple(batch["latent_mean"].shape), settings).to(self.accelerator.device)
                    with self.accelerator.autocast():
                        total += float(self.module(batch, draws)["flow"]) * len(indices)
                    count += len(indices)
        finally:
            self.module.train(was_training)
        return total / count

    def _append_log(self, info: StepInfo) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with (self.output_dir / "train_log.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps(info.__dict__) + "\n")
        self.log(f"step {info.step}/{info.max_steps} loss {info.loss:.4f} (flow {info.flow:.4f}, "
                 f"repa {info.repa:.4f}) lr {info.learning_rate:.2e}")

    # ------------------------------------------------------------------------------------------
    def export(self, path: str | Path | None = None) -> Path:
        """Write the tuned weights (EMA when kept) in the loaders' formats: a LoRA file in LoRA mode,
        the network under the release's key names in full mode. Returns the path (main process writes)."""
        path = Path(path) if path else self.output_dir / f"{self.config.name}.safetensors"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._ema_applied():
                write_export(self.flow, self.config, self.step, path)
        self.accelerator.wait_for_everyone()
        return path

    def tuned_model(self) -> nn.Module:
        """A plain inference network of the family with the tuned (EMA when kept, LoRA merged) weights,
        on the CPU."""
        with self._ema_applied():
            return tuned_network(self.network)

    def _ema_applied(self):
        if self.ema is None:
            from contextlib import nullcontext

            return nullcontext()
        return self.ema.applied()

