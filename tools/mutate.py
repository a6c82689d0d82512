"""Mutation check: do the tests catch one-line regressions in the critical modules?

Each mutation in `tools/mutations.toml` (beside this file) swaps one snippet of a module for a
plausible mistake, runs the tests named for it, and counts as *caught* when a test that passes on
the unmutated code fails. Survivors are gaps in the suite. It is slow (one pytest run per
mutation), so it is not part of the default suite; run it after changing a critical module:

    python tools/mutate.py                      # every mutation
    python tools/mutate.py --only synccfg-sync-sign ema-decay-swapped
    python tools/mutate.py --list               # ids, files and tests
    python tools/mutate.py --json report.json   # the report as JSON as well

It never touches the working tree. The tracked and untracked-but-not-ignored files are copied to a
temporary folder `<tmp>/syncfoley/` (the repository root is the package), pytest runs in that copy
with `<tmp>` first on PYTHONPATH, so `import syncfoley` finds the copy before the editable install,
and with PYTHONDONTWRITEBYTECODE, so a mutated module is always compiled from its source. A pytest
plugin (`-p _mutation_guard`) fails the run if any `syncfoley` module was imported from anywhere
else, and notes whether the mutated module was imported at all. Mutations are restored in `finally`
blocks and the copy is deleted at the end, Ctrl-C and `kill` (SIGTERM) included.

Before mutating, the selected tests run once on the unmutated copy; tests failing there are reported
and deselected (a mutation is only caught by a test that passed without it).

Adding a mutation: a `[[mutation]]` table with
    id = "short-name"              # unique
    file = "sampling/guidance.py"  # relative to the repository root
    original = "exact text"        # must occur exactly once in the file (multi-line allowed)
    replacement = "mutated text"
    tests = ["tests/test_x.py", "tests/test_y.py::test_z"]   # what should catch it
    why = "what the mistake would mean"                         # optional
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MUTATIONS = HERE / "mutations.toml"
GUARD = "_mutation_guard"
GUARD_SOURCE = '''
import os, sys

def pytest_sessionfinish(session, exitstatus):
    root = os.path.realpath(os.environ["MUTATION_COPY"]) + os.sep
    loaded = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())
              if n == "syncfoley" or n.startswith("syncfoley.")}
    stray = sorted(n for n, f in loaded.items() if f and not os.path.realpath(f).startswith(root))
    if stray:
        print(f"\\nMUTATION-GUARD-STRAY {stray[0]} from {loaded[stray[0]]}")
        session.exitstatus = 3
    mutated = os.environ.get("MUTATION_MODULE")
    print(f"\\nMUTATION-GUARD-RAN imported-mutated-module={bool(mutated) and mutated in loaded}")
'''


@dataclass
class Mutation:
    id: str
    file: str
    original: str
    replacement: str
    tests: list[str]
    why: str = ""

    @property
    def module(self) -> str:
        return "syncfoley." + self.file.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


@dataclass
class Outcome:
    id: str
    file: str
    status: str  # caught | survived | timeout | stale | error
    caught_by: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""


def load_mutations(path: Path = MUTATIONS) -> list[Mutation]:
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("mutation", [])
    mutations = [Mutation(**entry) for entry in entries]
    ids = [m.id for m in mutations]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SystemExit(f"{path}: mutation ids must be unique; repeated: {', '.join(duplicates)}")
    return mutations


def copy_tree(repo: Path, destination: Path) -> None:
    """The files git would see (tracked, and untracked but not ignored), as they are on disk now."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = repo / name
        if source.is_file():  # tracked files deleted in the working tree are skipped
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def environment(temp: Path, copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(temp), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["MUTATION_COPY"] = str(copy)
    reference = REPO.parent / "shared" / "reference"  # the tests look beside the repository, i.e. the copy
    if "SYNCFOLEY_REFERENCE" not in env and (reference / "README.md").exists():
        env["SYNCFOLEY_REFERENCE"] = str(reference)
    return env


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def run_tests(copy: Path, env: dict, tests: list[str], deselect: list[str], baseline: bool,
              timeout: float) -> tuple[int | None, str]:
    mode = ["--continue-on-collection-errors"] if baseline else ["-x"]  # survey all, or stop at the first catch
    # In the order given (cheap tests first, and the same "caught by" every run), even where the
    # project's options shuffle the tests.
    in_order = ["--random-order-bucket=none"] if importlib.util.find_spec("random_order") else []
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-p", GUARD, *mode, *in_order,
               *[f"--deselect={t}" for t in deselect], *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout or b""
        return None, out.decode(errors="replace") if isinstance(out, bytes) else out
    output = done.stdout + done.stderr
    stray = re.search(r"MUTATION-GUARD-STRAY (.*)", output)
    if stray:
        raise SystemExit(f"pytest imported {stray.group(1)}, not the copy in {copy}: results would be meaningless. "
                         "Is PYTHONPATH overridden, or a syncfoley installed non-editable?")
    if "MUTATION-GUARD" not in output and done.returncode in (0, 1):
        raise SystemExit(f"the import guard did not run:\n{output[-2000:]}")
    return done.returncode, output


def failures(output: str) -> list[str]:
    return sorted(set(_FAILED.findall(output)))


def apply(copy: Path, mutation: Mutation) -> tuple[Path, str] | str:
    """Mutate the copy's file; returns (path, original text) to restore, or why it cannot be applied."""
    path = (copy / mutation.file).resolve()
    if copy.resolve() not in path.parents:
        return f"{mutation.file} is outside the copy"
    if not path.is_file():
        return f"{mutation.file} does not exist"
    text = path.read_text(encoding="utf-8")
    count = text.count(mutation.original)
    if count != 1:
        return (f"the original snippet occurs {count} times in {mutation.file}; "
                + ("it changed: update the mutation" if count == 0 else "give more context to make it unique"))
    path.write_text(text.replace(mutation.original, mutation.replacement), encoding="utf-8")
    return path, text


def try_mutation(copy: Path, env: dict, mutation: Mutation, known_failures: list[str], timeout: float) -> Outcome:
    started = time.perf_counter()
    tests = [t for t in mutation.tests if t.split("::")[0] not in known_failures]  # whole files that do not import
    if not tests:
        return Outcome(mutation.id, mutation.file, "error", note="its tests fail to import without the mutation")
    applied = apply(copy, mutation)
    if isinstance(applied, str):
        return Outcome(mutation.id, mutation.file, "stale", note=applied)
    path, original = applied
    try:
        code, output = run_tests(copy, {**env, "MUTATION_MODULE": mutation.module}, tests,
                                 known_failures, baseline=False, timeout=timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    seconds = time.perf_counter() - started
    if code is None:
        return Outcome(mutation.id, mutation.file, "timeout", seconds=seconds, note=f"tests ran past {timeout:.0f} s")
    imported = "imported-mutated-module=True" in output
    note = "" if imported else "the mutated module was not imported in the test process"
    if code == 0:
        return Outcome(mutation.id, mutation.file, "survived", seconds=seconds, note=note)
    caught = failures(output)
    if code in (1, 2) and caught:  # 2: a test module no longer imports
        return Outcome(mutation.id, mutation.file, "caught", caught, seconds, note)
    return Outcome(mutation.id, mutation.file, "error", caught, seconds,
                   f"pytest exit {code}: {output.strip().splitlines()[-1] if output.strip() else ''}")


def report(outcomes: list[Outcome], baseline_failures: list[str], seconds: float) -> str:
    width = max([len(o.id) for o in outcomes] + [8])
    lines = [f"{'mutation':<{width}}  {'result':<8}  {'s':>5}  caught by / note"]
    for o in outcomes:
        detail = ", ".join(o.caught_by[:2]) or o.note
        if o.caught_by and o.note:
            detail += f" ({o.note})"
        lines.append(f"{o.id:<{width}}  {o.status:<8}  {o.seconds:5.1f}  {detail}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("caught", "survived", "timeout", "stale", "error")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"\n{len(outcomes)} mutations: {summary}; {seconds:.0f} s")
    if baseline_failures:
        lines.append("failing without any mutation (deselected): " + ", ".join(baseline_failures))
    survivors = [o.id for o in outcomes if o.status != "caught"]
    if survivors:
        lines.append("not caught: " + ", ".join(survivors))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutations only")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    parser.add_argument("--mutations", type=Path, default=MUTATIONS, help="the mutation list (TOML)")
    args = parser.parse_args(argv)
    mutations = load_mutations(args.mutations)
    if args.only:
        unknown = sorted(set(args.only) - {m.id for m in mutations})
        if unknown:
            raise SystemExit(f"unknown mutation ids: {', '.join(unknown)}; see --list")
        mutations = [m for m in mutations if m.id in args.only]
    if args.list:
        for m in mutations:
            print(f"{m.id}: {m.file}: {' '.join(m.tests)}" + (f"  # {m.why}" if m.why else ""))
        return 0

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="syncfoley-mutate-") as temp_name:
        temp = Path(temp_name)
        copy = temp / "syncfoley"
        copy_tree(REPO, copy)
        (temp / f"{GUARD}.py").write_text(GUARD_SOURCE, encoding="utf-8")
        env = environment(temp, copy)
        tests = sorted({t for m in mutations for t in m.tests})
        print(f"baseline: {len(tests)} test targets on the unmutated copy in {copy}", flush=True)
        code, output = run_tests(copy, env, tests, [], baseline=True, timeout=args.timeout * 3)
        baseline_failures = failures(output)
        if code not in (0, 1) or (code == 1 and not baseline_failures):
            print(output[-3000:])
            raise SystemExit(f"the unmutated copy's tests did not run cleanly (pytest exit {code})")
        if baseline_failures:
            print("failing without any mutation, deselected: " + ", ".join(baseline_failures), flush=True)
        outcomes = []
        for mutation in mutations:
            outcome = try_mutation(copy, env, mutation, baseline_failures, args.timeout)
            outcomes.append(outcome)
            print(f"  {outcome.id}: {outcome.status} {' '.join(outcome.caught_by[:1])} {outcome.note}".rstrip(),
                  flush=True)
    seconds = time.perf_counter() - started
    print()
    print(report(outcomes, baseline_failures, seconds))
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": seconds, "baseline_failures": baseline_failures,
                                               "mutations": [vars(o) for o in outcomes]}, indent=1))
    return 0 if all(o.status == "caught" for o in outcomes) else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C does
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the mutated file was restored and the copy deleted on the way out
        sys.exit("interrupted; the working tree was never touched and the temporary copy is deleted")
