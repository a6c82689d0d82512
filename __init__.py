"""SyncFoley: synchronized Foley audio for silent video.

This file is both the ComfyUI entry point (ComfyUI imports the pack's folder under whatever name it has,
so everything below uses relative imports) and the `syncfoley` package when installed with pip.

The node mappings are built on first access: ComfyUI reads them right after import, while library
users (`import syncfoley.sampling...`) and the command line never pay for the nodes, media and
pipeline imports.
"""
__version__ = "0.1.0"

_NODE_MAPPINGS = ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS")


def __getattr__(name: str):
    if name in _NODE_MAPPINGS:
        from . import nodes

        return getattr(nodes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_NODE_MAPPINGS, "__version__"]
