"""The ComfyUI nodes: thin adapters from ComfyUI's node contract to `pipeline`, `sampling` and `media`.

Legacy contract (INPUT_TYPES / RETURN_TYPES / FUNCTION), which every ComfyUI version loads and which
needs no ComfyUI import, so the headless runner executes the same classes. All nodes sit under the
"SyncFoley" category; their type names start with "SyncFoley".
"""
from . import audio, conditioning, edit, loaders, sampling, train, video, visualize

_NODES = {**loaders.NODES, **video.NODES, **conditioning.NODES, **sampling.NODES, **edit.NODES, **audio.NODES, **visualize.NODES}

NODE_CLASS_MAPPINGS = {name: cls for name, (cls, _) in _NODES.items()} | train.NODE_CLASS_MAPPINGS
NODE_DISPLAY_NAME_MAPPINGS = {name: title for name, (_, title) in _NODES.items()} | train.NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
