#!/usr/bin/env python
"""Soak test of the nightly compress job (issue 19): run by hand, not in CI.

Runs N incremental ``commer-pipeline compress --previous S --output S --doc-cache C`` runs
against one store, each as a real process, with random faults: SIGKILL or SIGINT at a named
pause point of the job (pipelines/faults.py) or at a random time, or two writers racing (disjoint
users, started together). After each step it checks:

* ``LATEST`` names a complete version (it opens; its manifest's user count is its rows);
* the store equals a clean recompute of what it should hold (every committed run's users,
  full run, no ``--previous``, no cache) within 1e-4;
* no run exited 0 without its users (with their documents) in the committed version;
* an interrupted run printed one true line, exited 130 and left no staged version.

It uses the tiny random checkpoint of the tests (``tests/conftest.py``), so it runs on CPU
in a few minutes (about 30 s per run on 2 cores)::

    python scripts/soak.py --runs 20 --seed 1

The table at the end counts runs, kills, interrupts, races and checks; exit status 1 when
any check failed (the failures are printed as they happen).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from pipelines.faults import MARKER_ENV, PAUSE_ENV, PAUSE_POINTS, RESUME_ENV, SYNC_POINTS  # noqa: E402
TOLERANCE = 1e-4
#: When a kill or an interrupt lands: at each named point of the job, or at a random time.
MOMENTS = (*PAUSE_POINTS, *SYNC_POINTS, "random")
MOMENT_TIMEOUT_S = 300.0
TOPICS = ["the harbour", "a ski tour", "bread baking", "tax forms", "chess openings", "river birds"]


@dataclass
class Tally:
    runs: int = 0
    clean: int = 0
    kills: int = 0
    interrupts: int = 0
    races: int = 0
    committed: int = 0
    checks_passed: int = 0
    checks_failed: int = 0
    failures: list[str] = field(default_factory=list)
    moments: Counter[str] = field(default_factory=Counter)  # where kills and interrupts landed

    def check(self, ok: bool, what: str) -> None:
        if ok:
            self.checks_passed += 1
        else:
            self.checks_failed += 1
            self.failures.append(what)
            print(f"  CHECK FAILED: {what}", flush=True)


def build_checkpoint(root: Path) -> Path:
    from commer_core.backbone import load_backbone
    from commer_core.checkpoint import save_checkpoint
    from tests.helpers import make_compressor

    path = root / "checkpoint"
    save_checkpoint(make_compressor(load_backbone("tiny-random")), path, trained=False)
    return path


def write_users(directory: Path, docs: dict[str, list[tuple[str, str]]]) -> str:
    from tests.helpers import write_corpus

    rows = [{"user_id": u, "doc_id": d, "text": t} for u in sorted(docs) for d, t in docs[u]]
    shutil.rmtree(directory, ignore_errors=True)
    return write_corpus(directory, rows, n_files=2)


def new_docs(rng: random.Random, user: str, n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"{user}-d{start + i}", f"{user} wrote note {start + i} about {rng.choice(TOPICS)}, take {rng.random():.6f}.")
            for i in range(n)]


def tonight(rng: random.Random, truth: dict[str, list[tuple[str, str]]], serial: int) -> dict[str, list]:
    """One new user, and one existing user with a document added (or edited): their full sets."""
    docs = {f"soak-{serial:03d}": new_docs(rng, f"soak-{serial:03d}", rng.randint(1, 3))}
    if truth:
        user = rng.choice(sorted(truth))
        current = list(truth[user])
        if rng.random() < 0.5 or len(current) == 1:
            current += new_docs(rng, user, 1, start=100 + serial)
        else:
            doc_id, _ = current[0]
            current[0] = (doc_id, f"{user} edited note about {rng.choice(TOPICS)} ({serial}).")
        docs[user] = current
    return docs


def start(args: list[str], pause: dict[str, str] | None = None) -> subprocess.Popen:
    """The job as a real process; ``pause`` sets its ``COMMER_PAUSE_*`` variables (pipelines/faults.py)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in (PAUSE_ENV, MARKER_ENV, RESUME_ENV):
        env.pop(name, None)
    env.update(pause or {})
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", "compress", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def signal_at(proc: subprocess.Popen, sig: int, moment: str, files: tuple[Path, Path], rng: random.Random) -> bool:
    """Send ``sig`` at ``moment``: a named pause point (once the job has reached it) or a random time.

    At a pause point the job is held until the signal is sent, then let go (the resume file),
    as the job would have gone on had nobody paused it. False when the job ended first.
    """
    marker, resume = files
    if moment == "random":
        try:
            proc.wait(timeout=rng.uniform(4.0, 22.0))
            return False
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            return True
    deadline = time.monotonic() + MOMENT_TIMEOUT_S
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    proc.send_signal(sig)
    resume.touch()
    return True


def latest(store: Path) -> str | None:
    path = store / "LATEST"
    return path.read_text().strip() if path.exists() else None


def uncommitted(store: Path) -> set[str]:
    return {p.name for p in store.iterdir() if p.name.startswith("v-") and not (p / "_MANIFEST.json").exists()}


class Soak:
    def __init__(self, root: Path, seed: int):
        self.root, self.rng, self.tally = root, random.Random(seed), Tally()
        self.store, self.cache = root / "store", root / "cache"
        self.checkpoint = build_checkpoint(root)
        self.truth: dict[str, list[tuple[str, str]]] = {}
        self.recomputed: tuple[tuple, dict] | None = None  # (truth key, rows of a clean recompute)

    def args(self, corpus: str, *extra: str) -> list[str]:
        from tests.helpers import job_args

        return job_args(corpus, self.store, self.checkpoint, *extra)

    def incremental(self, corpus: str) -> list[str]:
        return self.args(corpus, "--previous", str(self.store), "--doc-cache", str(self.cache))

    def first_run(self) -> None:
        docs = {f"base-{i}": new_docs(self.rng, f"base-{i}", 2) for i in range(3)}
        proc = start(self.args(write_users(self.root / "corpus-base", docs), "--doc-cache", str(self.cache)))
        _, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"the first run failed:\n{err}")
        self.truth.update(docs)

    # -- one step --------------------------------------------------------------------------
    def step(self, serial: int) -> None:
        action = self.rng.choice(["clean", "sigkill", "sigint", "race"])
        before, staged_before = latest(self.store), uncommitted(self.store)
        t0 = time.monotonic()
        if action == "race":
            self.tally.races += 1
            docs = [tonight(self.rng, {}, serial), tonight(self.rng, {}, serial + 500)]
            procs = [start(self.incremental(write_users(self.root / f"corpus-{serial}-{i}", d)))
                     for i, d in enumerate(docs)]
            results = [(p.wait(), p.stderr.read()) for p in procs]
            outcome = "rc " + ", ".join(str(rc) for rc, _ in results)
            for (rc, err), d in zip(results, docs):
                self.tally.check(rc in (0, 1), f"run {serial} (race): exit {rc}: {err[-500:]}")
                if rc == 0:
                    self.truth.update(d)
                    self.tally.committed += 1
                elif rc == 1:
                    self.tally.check("LATEST moved" in err, f"run {serial} (race): failed for another reason: "
                                     f"{err.strip().splitlines()[-1:]}")
            self.check_users(serial, [d for (rc, _), d in zip(results, docs) if rc == 0])
        else:
            docs = tonight(self.rng, self.truth, serial)
            sig = {"sigkill": signal.SIGKILL, "sigint": signal.SIGINT}.get(action)
            moment = self.rng.choice(MOMENTS) if sig is not None else ""
            files = (self.root / f"paused-{serial}", self.root / f"resume-{serial}")
            pause = {PAUSE_ENV: moment, MARKER_ENV: str(files[0]), RESUME_ENV: str(files[1])} if moment else None
            proc = start(self.incremental(write_users(self.root / f"corpus-{serial}", docs)), pause)
            landed = signal_at(proc, sig, moment, files, self.rng) if sig is not None else False
            self.tally.moments[moment if landed else "not reached"] += sig is not None
            rc, err = proc.wait(), proc.stderr.read()
            moved = latest(self.store) != before
            outcome = f"rc {rc}" + (f" at {moment}" if landed else "") + (", committed" if moved else "")
            if action == "clean":
                self.tally.clean += 1
                self.tally.check(rc == 0, f"run {serial} (clean): exit {rc}: {err[-800:]}")
            elif action == "sigkill":
                self.tally.kills += 1
                self.tally.check(rc in (0, -signal.SIGKILL), f"run {serial} (sigkill): exit {rc}")
            else:
                self.tally.interrupts += 1
                last = err.strip().splitlines()[-1] if err.strip() else ""
                if rc == 130:
                    expected = "interrupted after the commit" if moved else "interrupted; nothing committed, LATEST unchanged"
                    self.tally.check(expected in last and "Traceback" not in err,
                                     f"run {serial} (sigint): last line {last!r} (committed: {moved})")
                    self.tally.check(uncommitted(self.store) <= staged_before,
                                     f"run {serial} (sigint): left staging {uncommitted(self.store) - staged_before}")
                else:
                    self.tally.check(rc == 0, f"run {serial} (sigint): exit {rc}: {err[-800:]}")
            self.tally.check(rc != 0 or moved, f"run {serial} ({action}): exit 0 but LATEST did not move")
            if moved:  # committed (exit 0, or killed / interrupted after the swap)
                self.truth.update(docs)
                self.tally.committed += 1
            self.check_users(serial, [docs] if rc == 0 else [])
        self.tally.runs += 1 if action != "race" else 2
        self.check_store(serial)
        print(f"run {serial:>3}  {action:<8} {outcome:<36} {time.monotonic() - t0:6.1f} s  "
              f"LATEST {latest(self.store)}  users {len(self.truth)}", flush=True)

    # -- checks ----------------------------------------------------------------------------
    def check_users(self, serial: int, committed_docs: list[dict[str, list]]) -> None:
        """Every run that exited 0: its users are in the committed version with their documents."""
        from commer_core.store import open_store

        if not committed_docs:
            return
        store = open_store(self.store)
        rows = store.get(sorted(u for d in committed_docs for u in d))
        for docs in committed_docs:
            for user, user_docs in docs.items():
                self.tally.check(user in rows and int(rows[user][1]) == len(user_docs),
                                 f"run {serial}: exited 0 but {user} is not in LATEST with {len(user_docs)} documents")

    def check_store(self, serial: int) -> None:
        import numpy as np

        from commer_core.store import open_store

        try:
            store = open_store(self.store)
            rows = store.get(store.users())
            complete = store.manifest.counts.get("users") == len(rows) and store.version == latest(self.store)
        except Exception as exc:
            self.tally.check(False, f"after run {serial}: LATEST does not open: {exc}")
            return
        self.tally.check(complete, f"after run {serial}: LATEST {store.version} is not a complete version")
        expected = self.recompute()
        same = set(rows) == set(expected) and all(
            np.allclose(rows[u][0], expected[u][0], atol=TOLERANCE, rtol=0) and int(rows[u][1]) == int(expected[u][1])
            for u in expected)
        worst = max((float(np.abs(rows[u][0] - expected[u][0]).max()) for u in expected if u in rows), default=0.0)
        self.tally.check(same, f"after run {serial}: the store differs from a clean recompute (users "
                         f"{sorted(set(rows) ^ set(expected))[:5]} differ; max |diff| {worst:.2e})")

    def recompute(self) -> dict:
        """The truth's users computed from scratch (full run, no --previous, no cache), in process."""
        from apache_beam.testing.test_pipeline import TestPipeline

        from commer_core.store import open_store
        from pipelines.options import parse_args
        from pipelines.run import run_job
        from tests.helpers import job_args

        key = tuple(sorted((u, tuple(d)) for u, d in self.truth.items()))
        if self.recomputed is None or self.recomputed[0] != key:
            corpus = write_users(self.root / "corpus-truth", self.truth)
            out = self.root / "recompute"
            shutil.rmtree(out, ignore_errors=True)
            params, beam_args = parse_args(job_args(corpus, out, self.checkpoint))
            run_job(params, beam_args, test_pipeline=TestPipeline(), echo=lambda message: None)
            store = open_store(out)
            self.recomputed = (key, store.get(store.users()))
        return self.recomputed[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="soak steps (a race counts as two runs) [20]")
    parser.add_argument("--seed", type=int, default=0, help="random seed (actions, corpora, kill times) [0]")
    parser.add_argument("--workdir", type=Path, help="where the store lives [a temp folder, removed unless --keep]")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    options = parser.parse_args()
    import logging
    import warnings

    logging.disable(logging.WARNING)  # Beam's and transformers' chatter from the in-process recomputes
    warnings.simplefilter("ignore")
    root = options.workdir or Path(tempfile.mkdtemp(prefix="commer-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"soak: {options.runs} steps, seed {options.seed}, in {root}", flush=True)
    t0 = time.monotonic()
    soak = Soak(root, options.seed)
    soak.first_run()
    for serial in range(1, options.runs + 1):
        soak.step(serial)
    t = soak.tally
    print(f"\n{'runs':<16}{t.runs}\n{'  clean':<16}{t.clean}\n{'  killed':<16}{t.kills}\n{'  interrupted':<16}"
          f"{t.interrupts}\n{'  racing (x2)':<16}{t.races}\n{'committed':<16}{t.committed}\n"
          f"{'checks passed':<16}{t.checks_passed}\n{'checks failed':<16}{t.checks_failed}\n"
          f"{'seconds':<16}{time.monotonic() - t0:.0f}")
    print("signals landed: " + ", ".join(f"{m} {n}" for m, n in sorted(t.moments.items())))
    if not options.keep and options.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if t.checks_failed else 0


if __name__ == "__main__":
    sys.exit(main())
