"""The demo: a synthetic audio-visual world whose sound-event times are known exactly."""
from .materials import MATERIALS, Material
from .world import Clip, Event, clip_seed, generate_clip, read_sidecar, write_clip, write_dataset

__all__ = ["MATERIALS", "Clip", "Event", "Material", "clip_seed", "generate_clip", "read_sidecar", "write_clip",
           "write_dataset"]
