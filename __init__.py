"""SyncFoley: synchronized Foley audio for silent video.

This file is both the ComfyUI entry point (ComfyUI imports the pack's folder under whatever name it has,
so everything below uses relative imports) and the `syncfoley` package when installed with pip.
"""
__version__ = "0.1.0"

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "__version__"]
