"""Training: fine-tune (LoRA or full) or train the Foley DiT on a folder of videos.

Data (`data`): videos + captions -> fixed-length clips -> cached features. Objective (`objective`):
flow matching in the reference convention, per-modality condition dropout, REPA. Loop (`trainer`):
accelerate (mixed precision, accumulation, multi-GPU), EMA, atomic resumable checkpoints. Recipes
(`config`): TOML. Entry points: `syncfoley train RECIPE` (`cli`) and the "Train Foley LoRA" node.
Heavy imports (accelerate, peft) happen inside the modules that need them.
"""
