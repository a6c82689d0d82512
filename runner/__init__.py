"""Headless runner for ComfyUI workflow files with this pack's nodes (and `--server` for a ComfyUI).

    from syncfoley.runner import Executor, load_workflow, apply_overrides, Override
    workflow = load_workflow("workflows/foley.json")           # UI or API format
    result = Executor().run(workflow)                           # validates first; caches outputs
    print(result.files)
"""
from .batch import BatchItem, BatchSummary, Ledger, batch_items, run_batch
from .errors import NodeExecutionError, RunInterrupted, WorkflowError
from .execute import Executor, Listener, RunResult
from .overrides import Override, apply_overrides, parse_set
from .remote import ComfyClient, RemoteError, RemoteRunner
from .spec import pack_nodes
from .validate import Plan, check_format, validate
from .workflow import Workflow, detect_format, load_workflow, strip_meta, ui_to_api

__all__ = [
    "BatchItem", "BatchSummary", "ComfyClient", "Executor", "Ledger", "Listener", "NodeExecutionError", "Override",
    "Plan", "RemoteError", "RemoteRunner", "RunInterrupted", "RunResult", "Workflow", "WorkflowError",
    "apply_overrides", "batch_items", "check_format", "detect_format", "load_workflow", "pack_nodes", "parse_set",
    "run_batch", "strip_meta", "ui_to_api", "validate",
]
