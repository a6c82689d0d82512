"""`syncfoley run WORKFLOW.json`: run a ComfyUI workflow file here, or on a ComfyUI server.

Exit codes: 0 done; 1 a node (or a batch item) failed or the server failed; 2 the workflow is
invalid (nothing ran); 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

SHORTCUTS = ("video", "prompt", "seed")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "run", description="Run a workflow file saved from ComfyUI (UI or API format) with this pack's nodes, "
                    "over one input or a batch, or submit it to a running ComfyUI with --server.")
    p.add_argument("workflow", help="workflow JSON file")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="[NODE_ID.]INPUT=VALUE",
                   help="override a node input (repeatable); without NODE_ID the one node having INPUT")
    p.add_argument("--video", help="shortcut for --set video=PATH")
    p.add_argument("--prompt", help="shortcut for --set prompt=TEXT")
    p.add_argument("--seed", help="shortcut for --set seed=N")
    p.add_argument("--output", metavar="DIR", help="output folder (default: ./output)")
    p.add_argument("--input", metavar="DIR", help="input folder for file names that are not paths (default: ./input)")
    p.add_argument("--models", metavar="DIR", help="models folder; checkpoints in DIR/foley (default: ./models)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--batch", metavar="FOLDER_OR_CSV",
                   help="run once per video of a folder, or per row of a CSV (columns: video, prompt, other inputs); "
                        "resumable: items an earlier run did with the same settings, models and videos are skipped")
    p.add_argument("--force", action="store_true", help="--batch: run every item again, even those done before")
    p.add_argument("--server", metavar="URL", help="run on this ComfyUI server instead (inputs uploaded, outputs downloaded)")
    p.add_argument("--timeout", type=float, default=3600.0, help="--server: seconds to wait per run (default 3600)")
    p.add_argument("--check", action="store_true", help="validate the workflow (with the overrides) and exit")
    p.add_argument("--json", metavar="FILE", help="write a machine-readable summary to FILE ('-' for stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> None:
    from .errors import NodeExecutionError, RunInterrupted, WorkflowError
    from .remote import RemoteError

    if args.json and args.json != "-" and Path(args.json).exists() and not args.overwrite:
        print(f"error: --json '{args.json}' already exists; pass --overwrite to replace it, or choose another name",
              file=sys.stderr)
        raise SystemExit(2)
    summary: dict = {"workflow": args.workflow, "server": args.server}
    code = 0
    try:
        summary.update(_run(args))
        code = 1 if summary.get("failed") else 0
        summary["status"] = "failed" if code else "ok"
    except WorkflowError as e:
        print(f"error: {e}", file=sys.stderr)
        summary.update(status="invalid", errors=e.errors)
        code = 2
    except (NodeExecutionError, RemoteError) as e:
        print(f"error: {e}", file=sys.stderr)
        summary.update(status="failed", errors=[{"node_id": getattr(e, "node_id", None), "message": str(e)}])
        code = 1
    except (RunInterrupted, KeyboardInterrupt) as e:
        print(str(e) or "interrupted", file=sys.stderr)
        summary.update(status="interrupted")
        code = 130
    if args.json:
        text = json.dumps(summary, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            from ..media.files import write_report

            write_report(args.json, text + "\n", overwrite=args.overwrite)
    if code:
        raise SystemExit(code)


def _run(args: argparse.Namespace) -> dict:
    from .batch import batch_items, run_batch
    from .errors import LOCAL_HINT
    from .overrides import Override, apply_overrides, parse_set
    from .workflow import Workflow, load_workflow

    overrides = [parse_set(text) for text in args.sets]
    overrides += [Override(name, getattr(args, name)) for name in SHORTCUTS if getattr(args, name) is not None]
    runner, registry, hint, interrupt, progress = _make_runner(args)
    workflow = load_workflow(args.workflow, registry, hint or LOCAL_HINT)
    items = batch_items(args.batch) if args.batch else None
    workflow = Workflow(apply_overrides(workflow.prompt, overrides, registry), workflow.ui, workflow.source, workflow.format)
    if args.check:
        for item in items or [None]:
            checked = apply_overrides(workflow.prompt, item.overrides, registry) if item else workflow.prompt
            _check(runner, Workflow(checked, workflow.ui, workflow.source, workflow.format))
        print(f"{args.workflow}: valid" + (f" for all {len(items)} batch items" if items else ""))
        return {"valid": True}
    from .progress import stop_on_ctrl_c

    with stop_on_ctrl_c(interrupt):
        if items is not None:
            summary = run_batch(workflow, items, runner, _output_dir(args), registry,
                                log=lambda line: print(line, file=sys.stderr), force=args.force)
            print(f"batch: {len(summary.done)} done, {len(summary.skipped)} done before, {len(summary.failed)} failed",
                  file=sys.stderr)
            for item_id, error in summary.failed.items():
                print(f"  FAILED {item_id}: {error}", file=sys.stderr)
            return summary.as_dict()
        result = runner.run(workflow)
    if args.json != "-":  # stdout holds the JSON summary instead
        for path in result.files:
            print(path)
    if not args.no_progress:
        print(f"{len(result.executed)} nodes run, {len(result.cached)} cached, {result.seconds:.1f} s", file=sys.stderr)
    return result.summary()


def _output_dir(args) -> Path:
    return Path(args.output or os.environ.get("SYNCFOLEY_OUTPUT", "output"))


def _make_runner(args):
    """(runner, registry, unknown-node hint, interrupt event, progress) for local or --server runs."""
    from .spec import classes_from_object_info, pack_nodes

    if args.server:
        from .remote import ComfyClient, RemoteError, RemoteRunner

        client = ComfyClient(args.server)
        registry = pack_nodes()
        try:  # the server's declarations convert UI files of nodes this pack does not have
            registry = {**registry, **classes_from_object_info(client.object_info())}
        except (RemoteError, ValueError) as e:
            print(f"warning: no node list from the server ({e}); converting with this pack's nodes only", file=sys.stderr)
        interrupt = threading.Event()
        runner = RemoteRunner(args.server, _output_dir(args), args.timeout, interrupt, client)
        return runner, registry, f"neither this pack nor the server at {args.server} has it", interrupt, None
    from ..nodes.host import configure, host
    from .execute import Executor
    from .progress import TqdmProgress

    from ..cli.progress import wanted

    progress = TqdmProgress(enabled=wanted(not args.no_progress))
    settings = {"output_dir": args.output, "input_dir": args.input, "models_dir": args.models, "device": args.device}
    configure(progress_factory=progress.step_bar, **{k: v for k, v in settings.items() if v is not None})
    executor = Executor(listener=progress)
    return executor, executor.registry, None, host().interrupt_event, progress


def _check(runner, workflow) -> None:
    from .validate import check_format

    if hasattr(runner, "validate"):
        runner.validate(workflow)
    else:
        check_format(workflow.prompt, workflow.source)
