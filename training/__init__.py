"""Training: fine-tune (LoRA or full) a family's network (HunyuanVideo-Foley's DiT, MMAudio's network),
or train a DiT from scratch, on a folder of videos.

Data (`data`): videos + captions -> fixed-length clips -> features cached with the family's encoders.
Objective (`objective`): flow matching in the sampler's convention through the family's adapter
(`families`), per-modality condition dropout, REPA. Loop (`trainer`): accelerate (mixed precision,
accumulation, multi-GPU), EMA, atomic resumable checkpoints. What differs per family (`layouts`):
LoRA targets, REPA's blocks, frozen parameters. Recipes (`config`): TOML. Entry points: `syncfoley
train RECIPE` (`cli`) and the "Train Foley LoRA" node. Heavy imports (accelerate, peft) happen inside the modules that need them.
"""
