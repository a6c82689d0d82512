"""ComfyUI node: train a Foley LoRA on a folder of videos, save it, and return the tuned model.

Either family: HunyuanVideo-Foley (its DAC-VAE, Synchformer, CLAP and SigLIP2) or MMAudio (its mel
VAE with the vocoder, Synchformer and CLIP: the optional `clip` and `vocoder` inputs; CLAP and SigLIP2
are then unused, "none" will do). The node runs the same preparation and training as `syncfoley
train`: the feature cache and the checkpoints live in `<output>/foley_training/<output_name>/`, the
adapter is written to `<models>/foley/loras/<output_name>.safetensors`, and the returned model is the
input model with the adapter merged into a copy (the input model is never changed).
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

from .host import host

CATEGORY = "SyncFoley/training"
FROM_INPUT = "(use the model input)"
NOT_USED = "none"
LORA_FOLDER = "loras"


def _with_autograd(method):
    """ComfyUI runs every node under `torch.inference_mode()`: training needs autograd back."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        import torch

        with torch.inference_mode(False), torch.enable_grad():
            return method(*args, **kwargs)
    return wrapper


def _without_inference_tensors(module) -> None:
    """Tensors made under inference mode (ComfyUI's loader nodes run there) cannot be saved for
    backward: swap each for a normal copy, one at a time, so the values stay and memory does not double."""
    import torch

    copies: dict[int, torch.Tensor] = {}  # tensors shared between modules stay shared
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, tensor in store.items():
                if tensor is None or not tensor.is_inference():
                    continue
                if id(tensor) not in copies:
                    clone = tensor.detach().clone()
                    if isinstance(tensor, torch.nn.Parameter):
                        clone = torch.nn.Parameter(clone, requires_grad=tensor.requires_grad)
                    copies[id(tensor)] = clone
                store[name] = copies[id(tensor)]


class TrainFoleyLoRA:
    CATEGORY = CATEGORY
    FUNCTION = "train"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FOLEY_MODEL", "STRING")
    RETURN_NAMES = ("model", "loss")
    OUTPUT_TOOLTIPS = ("the input model with the trained LoRA merged", "the loss at the start and at the end")
    DESCRIPTION = ("Fine-tunes the Foley model (HunyuanVideo-Foley or MMAudio) on a folder of videos (their own sound "
                   "is the target) with a LoRA: flow matching, condition dropout and REPA, as in the paper (MMAudio: "
                   "give its clip and vocoder files too). Captions come from captions.csv / "
                   "captions.jsonl in the folder or a <video>.txt beside each video. Saves "
                   "models/foley/loras/<output_name>.safetensors.")

    @classmethod
    def INPUT_TYPES(cls):
        files, folders = host().model_files(), host().model_folders()
        return {
            "required": {
                "dataset": ("STRING", {"default": "foley_dataset", "tooltip": "folder of training videos: a path, "
                                       "or a folder name inside ComfyUI's input folder"}),
                "steps": ("INT", {"default": 500, "min": 1, "max": 1_000_000, "tooltip": "optimizer steps"}),
                "learning_rate": ("FLOAT", {"default": 1e-4, "min": 1e-7, "max": 1.0, "step": 1e-5,
                                            "tooltip": "AdamW learning rate (constant)"}),
                "lora_rank": ("INT", {"default": 16, "min": 1, "max": 512, "tooltip": "LoRA rank (alpha = rank)"}),
                "output_name": ("STRING", {"default": "foley_lora", "tooltip": "file name of the saved LoRA"}),
                "vae": (files, {"tooltip": "encodes the videos' audio to latents: the DAC-VAE file "
                                "(HunyuanVideo-Foley) or MMAudio's mel VAE (v1-16.pth / v1-44.pth)"}),
                "synchformer": (files, {"tooltip": "Synchformer file: sync features of the frames"}),
                # "none" last: the first folder stays the default, and an MMAudio-only install can leave them.
                "clap": ([*folders, NOT_USED], {"tooltip": "CLAP folder: caption features (HunyuanVideo-Foley; "
                                                "unused for MMAudio)"}),
                "siglip": ([*folders, NOT_USED], {"tooltip": "SigLIP2 folder: frame features (HunyuanVideo-Foley; "
                                                  "unused for MMAudio)"}),
            },
            "optional": {
                "model": ("FOLEY_MODEL", {"tooltip": "the model to fine-tune (from a Foley model loader)"}),
                "model_name": ([FROM_INPUT, *files], {"tooltip": "or a DiT file to load when no model is linked"}),
                "clip_seconds": ("FLOAT", {"default": 8.0, "min": 0.64, "max": 30.0, "step": 0.02,
                                           "tooltip": "videos are cut into clips of this length"}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "clips per optimizer step"}),
                "repa_weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 10.0, "step": 0.05,
                                          "tooltip": "weight of the REPA alignment loss (0 = off; MMAudio's "
                                          "release trained without it)"}),
                "repa_depth": ("INT", {"default": 8, "min": 1, "max": 64, "tooltip": "REPA aligns the hidden states "
                                       "after this many single-stream blocks (MMAudio: fused blocks; capped at the "
                                       "model's count)"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "seed of the adapters' "
                                 "initial weights, the clip order, the noise and the dropout"}),
                "resume": ("BOOLEAN", {"default": False, "tooltip": "continue this output name's last checkpoint "
                                       "instead of starting over"}),
                "clip": ([NOT_USED, *files], {"tooltip": "MMAudio only: its CLIP file (open_clip_pytorch_model.bin "
                                              "of DFN5B-CLIP-ViT-H-14-384), for captions and frames"}),
                "vocoder": ([NOT_USED, *files, *folders], {"tooltip": "MMAudio only: the mel VAE's vocoder "
                                                           "(best_netG.pt, or the BigVGAN-v2 44 kHz folder)"}),
            },
        }

    @_with_autograd
    def train(self, dataset, steps, learning_rate, lora_rank, output_name, vae, synchformer, clap, siglip,
              model=None, model_name=FROM_INPUT, clip_seconds=8.0, batch_size=1, repa_weight=0.5, repa_depth=8,
              seed=0, resume=False, clip=NOT_USED, vocoder=NOT_USED):
        import torch

        from ..families import as_flow
        from ..models.lora import apply_lora
        from ..pipeline import loaders
        from ..training.config import TrainConfig
        from ..training.layouts import layout_of, repa_blocks
        from ..training.run import ensure_cache, load_encoders
        from ..training.trainer import Trainer

        if not output_name or output_name in (".", "..") or any(c in output_name for c in "/\\:"):
            raise ValueError(f"output_name: {output_name!r} must be a plain file name (no folders)")
        h = host()
        device = h.compute_device()
        checkpoint = ""
        if model is None:
            if not model_name or model_name == FROM_INPUT:
                raise ValueError("link a FOLEY_MODEL to 'model' or pick a model file in 'model_name'")
            checkpoint = str(h.resolve_model(model_name, "Foley model file"))
            model = loaders.load_foley_model(checkpoint, "auto", device)
        model = as_flow(model)  # a loader's model, or a network handed over by a script
        network = model.network
        layout = layout_of(network)
        paths = self._encoder_paths(layout.family, vae=vae, synchformer=synchformer, clap=clap, siglip=siglip,
                                    clip=clip, vocoder=vocoder)
        _without_inference_tensors(network)
        run_dir = h.get_output_dir() / "foley_training" / output_name
        if not resume:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        on_gpu = device.type == "cuda"
        config = TrainConfig(name=output_name, output=str(run_dir), mode="lora")
        config.data.videos = str(self._dataset_folder(dataset))
        config.data.clip_seconds, config.data.batch_size = clip_seconds, batch_size
        config.model.family, config.model.checkpoint = layout.family, checkpoint
        for name, path in paths.items():
            setattr(config.model, name, path)
        config.lora.rank = lora_rank
        config.optim.learning_rate = learning_rate
        config.objective.repa_weight = repa_weight
        config.objective.repa_depth = max(1, min(repa_depth, len(repa_blocks(network))))
        config.train.max_steps, config.train.seed = steps, seed
        config.train.checkpoint_every = max(100, steps // 5)
        config.train.log_every = max(1, steps // 100)
        config.train.cpu = not on_gpu
        config.train.mixed_precision = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "no"
        config.validate()

        h.free_memory()
        caching: list = []

        def on_video(done: int, total: int, name: str) -> None:
            if not caching:
                caching.append(h.progress(total, "caching features"))
            caching[0].update(done, total)
            h.check_interrupt()  # an unfinished cache has no index: the next run rebuilds it

        try:
            ensure_cache(config, progress=on_video, encoders=lambda: load_encoders(config, device))
        finally:
            for bar in caching:
                bar.close()
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the encoders are done with
        progress = h.progress(steps, "training")
        first: list[float] = []

        def on_step(info) -> None:
            if not first:
                first.append(info.loss)
            progress.update(info.step, steps)
            h.check_interrupt()

        trainer = Trainer(config, model=model)
        lora_path = h.model_dirs()[0] / LORA_FOLDER / f"{output_name}.safetensors"
        try:
            result = trainer.train(resume=resume or None, callback=on_step)
            trainer.export(lora_path)
        finally:
            progress.close()
            # The adapters' copy shares the input model's tensors: park them (and it) off the GPU again.
            trainer.module.to(h.offload_device())
            trainer.accelerator.free_memory()
        tuned = model.with_network(apply_lora(network, lora_path))
        last = result.history[-1].loss if result.history else float("nan")
        start = first[0] if first else last
        text = f"{result.steps} steps: loss {start:.4f} -> {last:.4f}; LoRA saved to {lora_path}"
        return {"ui": {"text": [text]}, "result": (tuned, text)}

    @staticmethod
    def _encoder_paths(family: str, **names: str) -> dict[str, str]:
        """The files (and folders) of the encoders the family reads, resolved in the model folders."""
        wanted = {"hunyuanvideo-foley": {"vae": "DAC-VAE file", "synchformer": "Synchformer file",
                                         "clap": "CLAP folder", "siglip": "SigLIP2 folder"},
                  "mmaudio": {"vae": "MMAudio mel VAE file", "synchformer": "Synchformer file",
                              "clip": "MMAudio CLIP file", "vocoder": "MMAudio vocoder"}}[family]
        unset = [name for name in wanted if names[name] in ("", NOT_USED)]
        if unset:
            title = {"hunyuanvideo-foley": "HunyuanVideo-Foley", "mmaudio": "MMAudio"}[family]
            raise ValueError(f"{', '.join(unset)}: training {title} needs its "
                             + " and ".join(wanted[name] for name in unset) + "; pick "
                             + ("it" if len(unset) == 1 else "them") + " in the node's optional inputs")
        return {name: str(host().resolve_model(names[name], what)) for name, what in wanted.items()}

    @staticmethod
    def _dataset_folder(dataset: str) -> Path:
        candidate = Path(dataset).expanduser()
        if candidate.is_absolute():
            return candidate
        inside = host().get_input_dir() / candidate
        if not inside.is_dir():
            raise FileNotFoundError(f"dataset folder '{dataset}' not found in the input folder '{host().get_input_dir().resolve()}'; "
                                    "give a folder name there or an absolute path")
        return inside


NODE_CLASS_MAPPINGS = {"SyncFoleyTrainLoRA": TrainFoleyLoRA}
NODE_DISPLAY_NAME_MAPPINGS = {"SyncFoleyTrainLoRA": "Train Foley LoRA"}
