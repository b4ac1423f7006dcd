"""Streams benchmark: does the deployed model stay right, and do its alarms mean something?

Streams of batches of clients whose probability of leaving is known run through the
real fullprocess.py, one cron tick per batch, in a throw-away workspace, once per drift
test. After every tick the deployed model is compared with the best model of the
current behaviour: the project's own model class (its median imputer and logistic
regression, as training fits it) fitted on 50,000 fresh rows of that behaviour. Both are
scored on the same 20,000 fresh rows of it; their F1 ratio says how right the deployed
model is (1.0: as right as a model of this kind can be).

The truth is not linear in the raw features: the log-odds of leaving are a behaviour's
mix of two rules built on the log of activity trend, client size and staff, with
interactions. A behaviour is (angle, rate, shift): the angle turns the rule from A
(0: clients whose activity falls away leave) towards B (pi/2: large clients leave) and
to its opposite (pi: the busy clients leave); the rate is the mean attrition of the
original population (the intercept is solved for it); the shift changes who the clients
are (bigger, less active) and leaves the probability of leaving of each client as it was.

Streams (each starts with a first model trained on two files of behaviour A):
  steady        no drift, batches of 300-2,000 rows
  steady-50     no drift, batches of 50 rows
  covariate     the population shifts from the 3rd batch; who leaves, given the features,
                does not change
  flip          3 quiet batches, then the rule turns the other way round
  rotation      2 quiet batches, then the rule turns by pi/8 a batch up to pi
  recurring     behaviours A, B, B, A, A, B (B: the flipped rule)
  rate-doubled  3 quiet batches, then twice as many clients leave
  late-labels   batches arrive without `exited`; their labels come in a file two ticks
                later; flip after 3 quiet batches (with newest_files: 2)
  course-12     the course's size: 12-row batches (first model on 2 x 12 rows); flip after 3

Per tick (with --verbose): deployed F1 / best F1, whether the run found drift (an
alarm), whether the alert command ran, whether a model was deployed, the exit status.
The summary, per stream and test: the lowest ratio from the change on (from the tick
the labels arrive, with late labels), ticks below 0.9x, alarms, alerts, deployments,
deployments that made the model worse, crashes (non-zero exits).

Usage:
  .venv/bin/python bench/bench_streams.py [--quick] [--tests expected,raw]
      [--streams flip,steady-50] [--project /path/to/checkout] [--jobs 2] [--verbose]
      [--draws 5] [--output FILE]

--project picks the checkout whose fullprocess.py runs (default: this one), so the
same streams measure an older checkout. --draws N runs each stream on N draws of its
clients (same behaviours, other rows): on batches of a dozen rows one draw is luck.
Everything happens in a temporary folder; no package index and no running API are asked
(their addresses are dead loopback ports).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import math
import os
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parent.parent
FEATURES = ("lastmonth_activity", "lastyear_activity", "number_of_employees")
TARGET = "exited"
DRIFT_TESTS = ("raw", "parametric", "nonparametric", "expected")
BEST_ROWS = 50_000
EVAL_ROWS = 20_000
TEST_ROWS = 2_000
GOOD_ENOUGH = 0.9  # the target: deployed F1 at least this share of the best
MISSING_RATE = 0.005
TICK_TIMEOUT_S = 600
# A deployment that lowers the ratio by more than this made the model worse.
WORSE_BY = 0.02


class Behaviour(NamedTuple):
    """Who leaves: the rule's angle (0 A, pi flipped), the base rate, the population shift."""

    angle: float = 0.0
    rate: float = 0.25
    shift: float = 0.0

    def describe(self) -> str:
        said = [f"angle {self.angle / math.pi:.3g}pi" if self.angle else "A"]
        if self.rate != A.rate:
            said.append(f"rate {self.rate:g}")
        if self.shift:
            said.append(f"shift {self.shift:g}")
        return ", ".join(said)


A = Behaviour()
FLIPPED = A._replace(angle=math.pi)


def features(rows: int, rng: np.random.Generator, shift: float) -> np.ndarray:
    """Client features; shift makes the clients bigger and less active (covariate shift)."""
    scale = 1.0 + 0.6 * shift
    lastyear = rng.gamma(2.0, 1_200.0 * scale, rows).round()
    lastmonth = (lastyear / 12 * rng.lognormal(-0.3 * shift, 0.6, rows)).round()
    employees = rng.gamma(1.5, 250.0 * scale, rows).round()
    return np.column_stack([lastmonth, lastyear, employees])


def rules(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two rules' log-odds: A (activity falling away) and B (size and staff)."""
    trend = np.log((x[:, 0] * 12 + 100) / (x[:, 1] + 100)) / 0.6
    size = (np.log1p(x[:, 1]) - 7.4) / 0.8
    staff = (np.log1p(x[:, 2]) - 5.6) / 1.0
    rule_a = 2.0 * (-1.6 * trend - 0.6 * size + 0.4 * trend * staff)
    rule_b = 2.0 * (1.2 * staff + 0.6 * size - 0.4 * size * staff)
    return rule_a, rule_b


@cache
def intercept(angle: float, rate: float) -> float:
    """The intercept giving the original population a mean probability of leaving of rate."""
    rule_a, rule_b = rules(features(200_000, np.random.default_rng(12345), 0.0))
    mixed = math.cos(angle) * rule_a + math.sin(angle) * rule_b
    low, high = -20.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(1 / (1 + np.exp(-(middle + mixed)))) < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def probability(x: np.ndarray, behaviour: Behaviour) -> np.ndarray:
    """P(exit | features) under behaviour: known, and not linear in the raw features."""
    rule_a, rule_b = rules(x)
    angle = behaviour.angle
    logit = intercept(angle, behaviour.rate) + math.cos(angle) * rule_a
    logit = logit + math.sin(angle) * rule_b
    return 1 / (1 + np.exp(-logit))


def clients(rows: int, seed: int, behaviour: Behaviour, missing: float = 0.0) -> pd.DataFrame:
    """rows fabricated clients of behaviour; the same arguments give the same table."""
    rng = np.random.default_rng(seed)
    x = features(rows, rng, behaviour.shift)
    exited = (rng.random(rows) < probability(x, behaviour)).astype(int)
    letters = np.array(list(string.ascii_lowercase))
    ids = ["".join(chunk) for chunk in rng.choice(letters, size=(rows, 6))]
    frame = pd.DataFrame({"corporation": ids})
    for position, column in enumerate(FEATURES):
        values = pd.array(x[:, position].astype(np.int64), dtype="Int64")
        values[rng.random(rows) < missing] = pd.NA
        frame[column] = values
    frame[TARGET] = exited
    return frame


def seed_of(*parts: Any) -> int:
    """A seed that depends on its parts only (not on Python's per-process hash salt)."""
    return int.from_bytes(repr(parts).encode(), "little") % (2**32 - 1)


class Judge:
    """The best model of each behaviour and the fresh sample both are scored on (cached)."""

    def __init__(self, project: Path) -> None:
        self.build_model = project_model_class(project)
        self.samples: dict[Behaviour, tuple[pd.DataFrame, np.ndarray, float]] = {}

    def sample(self, behaviour: Behaviour) -> tuple[pd.DataFrame, np.ndarray, float]:
        """(features, truth, best F1) on EVAL_ROWS fresh rows of behaviour."""
        if behaviour not in self.samples:
            fitting = clients(BEST_ROWS, seed_of("best", behaviour), behaviour)
            best = self.build_model().fit(fitting[list(FEATURES)], fitting[TARGET])
            fresh = clients(EVAL_ROWS, seed_of("eval", behaviour), behaviour)
            x, truth = fresh[list(FEATURES)], fresh[TARGET].to_numpy()
            self.samples[behaviour] = (x, truth, f1(truth, best.predict(x)))
        return self.samples[behaviour]


def project_model_class(project: Path) -> Callable[[], Any]:
    """The checkout's own untrained model (build_model), wherever its layout keeps it."""
    import importlib

    sys.path.insert(0, str(project))
    try:
        module = importlib.import_module("drs.modelling")
    except ImportError:
        module = importlib.import_module("training")
    finally:
        sys.path.remove(str(project))
    build: Callable[[], Any] = module.build_model
    return build


def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth, predicted = np.asarray(truth) == 1, np.asarray(predicted) == 1
    found = truth.sum() + predicted.sum()
    return float(2 * (truth & predicted).sum() / found) if found else 0.0


class Batch(NamedTuple):
    """One input file: its name, rows, behaviour; labelled False: `exited` left empty."""

    name: str
    rows: int
    behaviour: Behaviour
    labelled: bool = True


class Tick(NamedTuple):
    """What arrives before one cron tick, and what the deployed model is judged against."""

    batches: list[Batch]
    labels_for: list[str]  # earlier unlabelled batches whose labels arrive now
    current: Behaviour  # the behaviour of the newest batch
    changed: bool  # the stream has left its first behaviour (or shifted)
    judged: bool  # the current behaviour's labels have arrived: the target applies


class Stream(NamedTuple):
    name: str
    first: list[Batch]  # the files of the first model (the set-up tick, not counted)
    ticks: list[Tick]
    config: dict[str, Any]


def plain(
    name: str,
    behaviours: list[Behaviour],
    sizes: list[int],
    first_rows: int = 1_000,
    **config: Any,
) -> Stream:
    """A stream with labels on time: one batch a tick, of these behaviours and sizes."""
    ticks = []
    for number, (behaviour, rows) in enumerate(zip(behaviours, sizes, strict=True), start=1):
        changed = any(b != A for b in behaviours[:number])
        ticks.append(
            Tick([Batch(f"b{number:03d}.csv", rows, behaviour)], [], behaviour, changed, True)
        )
    first = [Batch(f"a{n}.csv", first_rows, A) for n in (1, 2)]
    return Stream(name, first, ticks, config)


def late_labels(name: str, behaviours: list[Behaviour], rows: int, delay: int) -> Stream:
    """Batches without labels; each batch's labels arrive in a file delay ticks later."""
    ticks = []
    for number, behaviour in enumerate(behaviours, start=1):
        batch = Batch(f"b{number:03d}.csv", rows, behaviour, labelled=False)
        labels = [f"b{number - delay:03d}.csv"] if number > delay else []
        changed = any(b != A for b in behaviours[:number])
        judged = all(b == behaviour for b in behaviours[max(0, number - 1 - delay) : number])
        judged = judged and number > delay
        ticks.append(Tick([batch], labels, behaviour, changed, judged))
    first = [Batch(f"a{n}.csv", 1_000, A) for n in (1, 2)]
    return Stream(name, first, ticks, {"newest_files": 2})


def streams(quick: bool) -> dict[str, Stream]:
    """Every stream; quick: fewer ticks each (the slow tests and a first look)."""
    ticks = 6 if quick else 10
    sizes = np.random.default_rng(7).integers(300, 2_001, size=ticks).tolist()
    shifted = A._replace(shift=1.0)
    doubled = A._replace(rate=2 * A.rate)
    turning = [A, A] + [A._replace(angle=math.pi * k / 8) for k in range(1, 9)]
    quiet_then = [A, A, A]
    made = [
        plain("steady", [A] * ticks, sizes),
        plain("steady-50", [A] * (12 if quick else 20), [50] * (12 if quick else 20)),
        plain("covariate", [A, A] + [shifted] * (ticks - 2), [1_000] * ticks),
        plain("flip", quiet_then + [FLIPPED] * (ticks - 3), [1_000] * ticks),
        plain(
            "rotation",
            turning[: ticks + (2 if quick else 0)],
            [1_000] * len(turning[: ticks + (2 if quick else 0)]),
        ),
        plain("recurring", [A, FLIPPED, FLIPPED, A, A, FLIPPED], [1_000] * 6),
        plain("rate-doubled", quiet_then + [doubled] * (ticks - 3), [1_000] * ticks),
        late_labels(
            "late-labels", quiet_then + [FLIPPED] * (ticks - 3 + (1 if quick else 0)), 1_000, 2
        ),
        plain("course-12", quiet_then + [FLIPPED] * (ticks - 3), [12] * ticks, first_rows=12),
    ]
    return {stream.name: stream for stream in made}


class TickResult(NamedTuple):
    stream: str
    test: str
    tick: int
    behaviour: str
    rows: int
    best_f1: float
    deployed_f1: float
    ratio: float
    changed: bool
    judged: bool
    alarm: bool
    alert: bool
    deployed: bool
    exit: int
    seconds: float
    line: str


class Workspace:
    """A throw-away project layout with its config.json, fed batch by batch."""

    def __init__(self, root: Path, project: Path, stream: Stream, test: str, python: str) -> None:
        self.root, self.project, self.python = root, project, python
        self.incoming = root / "incoming"
        self.incoming.mkdir(parents=True)
        (root / "testdata").mkdir()
        test_data = clients(TEST_ROWS, seed_of("test data"), A)
        test_data.to_csv(root / "testdata" / "testdata.csv", index=False)
        self.alerts = root / "alerts.txt"
        self.alerts.touch()
        config = {
            "input_folder_path": "incoming",
            "output_folder_path": "ingesteddata",
            "test_data_path": "testdata",
            "output_model_path": "models",
            "prod_deployment_path": "production_deployment",
            "drift_test": test,
            "api_url": "http://127.0.0.1:9",
            # One line per alert: the outcome line (the command's stdin starts with it).
            "alert_command": f"head -n 1 | tr -d '\\n' >> {self.alerts}; echo >> {self.alerts}",
            **stream.config,
        }
        self.config = root / "config.json"
        self.config.write_text(json.dumps(config, indent=1))
        self.written: dict[str, pd.DataFrame] = {}
        self.clock = time.time() - 86_400
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DRS_CONFIG", "DRS_API_TOKEN", "PYTHONDONTWRITEBYTECODE")
        }
        self.env["DRS_PACKAGE_INDEX_URL"] = "http://127.0.0.1:9/pypi"
        self.env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")

    def write(self, batch: Batch, seed: int) -> None:
        frame = clients(batch.rows, seed, batch.behaviour, MISSING_RATE)
        self.written[batch.name] = frame
        shown = frame if batch.labelled else frame.assign(**{TARGET: pd.NA})
        self._save(batch.name, shown)

    def write_labels(self, name: str) -> None:
        """The labels of an earlier batch: its rows again, `exited` filled in."""
        self._save(f"labels-{name}", self.written[name])

    def _save(self, name: str, frame: pd.DataFrame) -> None:
        path = self.incoming / name
        frame.to_csv(path, index=False)
        self.clock += 60  # arrival order is modification time
        os.utime(path, (self.clock, self.clock))

    def tick(self) -> tuple[int, str, float]:
        """One fullprocess.py run, as cron makes it: exit status, last line, seconds."""
        started = time.perf_counter()
        try:
            done = subprocess.run(
                [self.python, str(self.project / "fullprocess.py"), "--config", str(self.config)],
                cwd=self.root,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=TICK_TIMEOUT_S,
                check=False,
            )
            code, said = done.returncode, (done.stdout.strip() or done.stderr.strip())
        except subprocess.TimeoutExpired:
            code, said = -1, f"timed out after {TICK_TIMEOUT_S} s"
        lines = said.splitlines() or [""]
        return code, lines[-1], time.perf_counter() - started

    def release(self) -> str | None:
        current = self.root / "production_deployment" / "current"
        return current.resolve().name if current.exists() else None

    def deployed_model(self) -> Any:
        import pickle

        path = self.root / "production_deployment" / "current" / "trainedmodel.pkl"
        return pickle.loads(path.read_bytes())

    def alert_count(self) -> int:
        return len(self.alerts.read_text().splitlines())

    def last_run(self) -> dict[str, Any]:
        """The newest run's record in the run history ({} when it cannot be read)."""
        try:
            with sqlite3.connect(f"file:{self.root / 'history.sqlite'}?mode=ro", uri=True) as db:
                row = db.execute(
                    "SELECT detail_json FROM pipeline_runs WHERE detail_json IS NOT NULL "
                    "ORDER BY id DESC LIMIT 1"
                ).fetchone()
            detail = json.loads(row[0]) if row else {}
            return detail if isinstance(detail, dict) else {}
        except (sqlite3.Error, json.JSONDecodeError, TypeError):
            return {}


def alarm_of(detail: dict[str, Any], line: str) -> bool:
    """Whether the run found drift worth an alarm: the model-drift test or the exits test."""
    if not detail:
        return "drift found" in line and "no model drift" not in line
    found = [detail.get("model_drift"), detail.get("exits_drift")]
    return any(isinstance(part, dict) and part.get("drifted") for part in found)


def run_stream(
    stream: Stream, test: str, project: Path, python: str, judge: Judge, draw: int = 0
) -> list[TickResult]:
    """Every tick of stream with drift test test, in a workspace of its own.

    draw: which draw of the stream's clients (0: the stream's own; others give the same
    behaviours with other clients, to see how much one draw's figures owe to luck).
    """
    results = []

    def seed(*parts: Any) -> int:
        return seed_of(stream.name, *parts) if draw == 0 else seed_of(draw, stream.name, *parts)

    with tempfile.TemporaryDirectory(prefix=f"streams-{stream.name}-{test}-") as tmp:
        space = Workspace(Path(tmp) / "workspace", project, stream, test, python)
        for number, batch in enumerate(stream.first):
            space.write(batch, seed("first", number))
        code, line, _ = space.tick()
        if code != 0 or space.release() is None:
            raise RuntimeError(f"{stream.name}/{test}: the first run failed: {line}")
        for number, tick in enumerate(stream.ticks, start=1):
            for name in tick.labels_for:
                space.write_labels(name)
            for batch in tick.batches:
                space.write(batch, seed(number, batch.name))
            release, alerts = space.release(), space.alert_count()
            code, line, seconds = space.tick()
            x, truth, best = judge.sample(tick.current)
            deployed_f1 = f1(truth, space.deployed_model().predict(x))
            ratio = deployed_f1 / best if best else math.nan
            results.append(
                TickResult(
                    stream.name if draw == 0 else f"{stream.name}#{draw}",
                    test,
                    number,
                    tick.current.describe(),
                    sum(batch.rows for batch in tick.batches),
                    best,
                    deployed_f1,
                    ratio,
                    tick.changed,
                    tick.judged,
                    alarm_of(space.last_run(), line),
                    space.alert_count() > alerts,
                    space.release() != release,
                    code,
                    seconds,
                    line,
                )
            )
    return results


class Summary(NamedTuple):
    stream: str
    test: str
    ticks: int
    min_ratio: float  # over judged ticks from the change on (all judged ticks without one)
    mean_ratio: float  # over the same ticks
    below: int  # judged ticks under GOOD_ENOUGH
    judged: int
    alarms: int
    alerts: int
    deployments: int
    worse: int  # deployments that lowered the ratio by more than WORSE_BY
    crashes: int
    seconds: float


def summarise(results: list[TickResult]) -> Summary:
    changed = any(r.changed for r in results)
    counted = [r for r in results if r.judged and (r.changed or not changed)]
    judged = [r for r in results if r.judged]
    worse = sum(
        1
        for before, after in itertools.pairwise(results)
        if after.deployed
        and after.behaviour == before.behaviour
        and after.ratio < before.ratio - WORSE_BY
    )
    first = results[0]
    return Summary(
        first.stream,
        first.test,
        len(results),
        min((r.ratio for r in counted), default=math.nan),
        sum(r.ratio for r in counted) / len(counted) if counted else math.nan,
        sum(r.ratio < GOOD_ENOUGH for r in judged),
        len(judged),
        sum(r.alarm for r in results),
        sum(r.alert for r in results),
        sum(r.deployed for r in results),
        worse,
        sum(r.exit != 0 for r in results),
        sum(r.seconds for r in results),
    )


def tick_table(results: list[TickResult]) -> str:
    rows = [
        f"{'stream':<13} {'test':<13} {'tick':>4} {'behaviour':<22} {'rows':>5} {'best':>6} "
        f"{'deployed':>8} {'ratio':>6} {'alarm':>5} {'alert':>5} {'deploy':>6} {'exit':>4} "
        f"{'s':>5}  (the run's outcome line below)"
    ]
    for r in results:
        mark = "" if r.judged else "labels not in yet"
        rows.append(
            f"{r.stream:<13} {r.test:<13} {r.tick:>4} {r.behaviour:<22} {r.rows:>5} "
            f"{r.best_f1:>6.3f} {r.deployed_f1:>8.3f} {r.ratio:>6.2f} {yes(r.alarm):>5} "
            f"{yes(r.alert):>5} {yes(r.deployed):>6} {r.exit:>4} {r.seconds:>5.1f}  "
            f"{mark}"
        )
        rows.append(f"    {r.line}")
    return "\n".join(rows)


def summary_table(summaries: list[Summary]) -> str:
    rows = [
        f"{'stream':<13} {'test':<13} {'min ratio':>9} {'mean':>5} {'<0.9x':>7} {'alarms':>7} "
        f"{'alerts':>7} {'deploys':>7} {'worse':>5} {'crashes':>7} {'s':>6}",
    ]
    for s in summaries:
        rows.append(
            f"{s.stream:<13} {s.test:<13} {s.min_ratio:>9.2f} {s.mean_ratio:>5.2f} "
            f"{s.below:>3}/{s.judged:<3} "
            f"{s.alarms:>3}/{s.ticks:<3} {s.alerts:>3}/{s.ticks:<3} {s.deployments:>7} "
            f"{s.worse:>5} {s.crashes:>7} {s.seconds:>6.0f}"
        )
    return "\n".join(rows)


def yes(flag: bool) -> str:
    return "yes" if flag else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=PROJECT, help="checkout to run")
    parser.add_argument(
        "--tests", default=",".join(DRIFT_TESTS), help="drift tests, comma-separated"
    )
    parser.add_argument("--streams", default=None, help="streams, comma-separated (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer ticks per stream")
    parser.add_argument("--jobs", type=int, default=1, help="streams run at once")
    parser.add_argument("--verbose", action="store_true", help="print the per-tick table")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    parser.add_argument("--python", default=sys.executable, help="interpreter for fullprocess.py")
    parser.add_argument(
        "--draws",
        type=int,
        default=1,
        help="draws of each stream's clients (the first is the stream's own; name#N the others)",
    )
    args = parser.parse_args(argv)

    project = args.project.resolve()
    made = streams(args.quick)
    chosen = args.streams.split(",") if args.streams else list(made)
    tests = args.tests.split(",")
    unknown = sorted(set(chosen) - set(made)) + sorted(set(tests) - set(DRIFT_TESTS))
    if unknown:
        parser.error(f"unknown stream or test: {', '.join(unknown)}")
    judge = Judge(project)
    for stream in chosen:  # the best models, once, before the threads share them
        for tick in made[stream].ticks:
            judge.sample(tick.current)
    started = time.perf_counter()
    combos = [
        (made[stream], test, draw)
        for stream in chosen
        for draw in range(max(1, args.draws))
        for test in tests
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(run_stream, stream, test, project, args.python, judge, draw)
            for stream, test, draw in combos
        ]
        results = [future.result() for future in futures]
    header = (
        f"streams benchmark: {project} (fullprocess.py run tick by tick), "
        f"{'quick' if args.quick else 'full'} streams, best model on {BEST_ROWS:,} rows, "
        f"F1 on {EVAL_ROWS:,} fresh rows; {time.perf_counter() - started:.0f} s"
    )
    text = [header, ""]
    if args.verbose:
        text += [tick_table([r for one in results for r in one]), ""]
    text.append(summary_table([summarise(one) for one in results]))
    said = "\n".join(text)
    print(said)
    if args.output:
        args.output.write_text(said + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
