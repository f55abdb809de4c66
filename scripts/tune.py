#!/usr/bin/env python3
"""Hyperparameter search for `apex local` with Optuna.

Each trial is one `apex local` run on a short budget (--max-env-steps agent
steps per actor) with the learning rate, batch size, n-step, target period
and replay ratio (samples per insert) Optuna suggests; everything else comes
from a preset, whose own values are the first trial. A trial's score is the
evaluator's mean score in the last round of the run's eval.csv, under one
protocol. While a run goes, its rounds are reported to a median pruner,
which stops hopeless runs early (with SIGINT, so apex shuts down cleanly).

The study lives in SQLite: running the same command again (same --study and
--storage) resumes it, running only the trials still missing; a trial whose
process was killed is run again with its parameters. After every trial the
table of trials (markdown) and the best trial's settings, as a preset file
for `apex local --preset`, are written to --out.

    .venv/bin/python scripts/tune.py --game catch --trials 10 --out results/tune-catch
    .venv/bin/python scripts/tune.py --game breakout --trials 20   # hours

Build apex first (cargo build --release -p apex). Relative paths (runs/,
--out) are from the current folder.
"""

import argparse
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

try:
    import optuna
except ModuleNotFoundError:
    sys.exit("error: optuna is missing: run scripts/setup.sh and run this script with .venv/bin/python")

ROOT = Path(__file__).resolve().parent.parent

# What each game starts from, and how long a trial is: Catch learns in
# thousands of agent steps, Breakout in millions. Atari trials run one actor
# of 16 environments: with several actors, `apex local --max-env-steps` can
# end in an error when the first actor's budget stops the replay server
# while another actor is still inserting.
CATCH = {"preset": "catch", "max_env_steps": 10_000, "eval_every_secs": 1, "apex_args": []}
ATARI = {
    "preset": "apex-atari",
    "max_env_steps": 100_000,
    "eval_every_secs": 120,
    "apex_args": ["--actors", "1", "--envs", "16"],
}

# The search space. Categorical where presets keep round values; the
# target period is in learner updates.
LEARNING_RATE = (1e-5, 3e-3)
BATCH_SIZES = [16, 32, 64, 128]
N_STEPS = (1, 5)
TARGET_PERIOD = (50, 4_000)
SAMPLES_PER_INSERT = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
TUNED = ["learning_rate", "batch_size", "n_step", "target_update_every", "samples_per_insert"]
# Settings of a study that must not change when it is resumed.
FIXED = ["game", "preset", "max_env_steps", "protocol", "report_points"]
POLL_SECS = 1.0
STOP_GRACE_SECS = 60


class Usage(Exception):
    """Bad input: reported as one line, exit 2."""


class TrialFailed(Exception):
    """A run that gave no score: the trial fails, the study goes on."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to `apex local` unchanged (e.g. -- --actors 1).",
    )
    p.add_argument("--game", default="catch", help="catch, or a game of `apex env games` [catch]")
    p.add_argument("--trials", type=int, default=10, help="trials the study should hold, finished or pruned [10]")
    p.add_argument("--study", help="study name [tune-GAME]")
    p.add_argument("--storage", help="Optuna storage URL [sqlite:///RUNS/study.db]")
    p.add_argument("--runs", type=Path, help="folder of the trials' run folders [runs/STUDY]")
    p.add_argument("--out", type=Path, help="where trials.md and best.toml go [the --runs folder]")
    p.add_argument(
        "--preset",
        help="preset the trials start from: a name in presets/ or a file [catch: catch, else apex-atari]",
    )
    p.add_argument("--max-env-steps", type=int, help="agent steps per actor in a trial [catch: 10000, else 100000]")
    p.add_argument("--protocol", default="v4", choices=["v4", "v5"], help="evaluation protocol that scores [v4]")
    p.add_argument("--eval-every-secs", type=int, help="seconds between evaluation rounds [catch: 1, else 120]")
    p.add_argument("--report-points", type=int, default=10, help="points of the budget where the pruner may stop a trial [10]")
    p.add_argument("--startup-trials", type=int, default=3, help="finished trials before pruning and TPE begin [3]")
    p.add_argument("--trial-timeout", type=float, help="seconds after which a trial is stopped and pruned [none]")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed [0]")
    p.add_argument("--apex", type=Path, default=ROOT / "target/release/apex", help="the apex binary [target/release/apex]")
    args, extra = p.parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    elif extra:
        raise Usage(f"unknown arguments {' '.join(extra)}: put arguments for apex local after --")
    args.apex_args = extra
    return args


def resolve(args):
    """Fills the defaults that depend on the game, and checks what can be checked before a run."""
    if not args.apex.is_file() or not os.access(args.apex, os.X_OK):
        raise Usage(f"{args.apex} is missing: build it with `cargo build --release -p apex` (or pass --apex PATH)")
    if args.game != "catch":
        games = subprocess.run([args.apex, "env", "games"], capture_output=True, text=True, check=True)
        known = games.stdout.split()
        if args.game not in known:
            raise Usage(f"unknown game '{args.game}': use catch or one of `apex env games` ({', '.join(known[:5])}, ...)")
    defaults = CATCH if args.game == "catch" else ATARI
    args.preset = args.preset or defaults["preset"]
    args.max_env_steps = args.max_env_steps or defaults["max_env_steps"]
    args.eval_every_secs = args.eval_every_secs or defaults["eval_every_secs"]
    args.apex_args = defaults["apex_args"] + args.apex_args
    for name in ["trials", "max_env_steps", "report_points", "eval_every_secs"]:
        if getattr(args, name) < 1:
            raise Usage(f"--{name.replace('_', '-')} must be at least 1")
    args.study = args.study or f"tune-{args.game}"
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.study):
        raise Usage(f"study name '{args.study}' may hold only letters, digits, '.', '_' and '-'")
    args.runs = args.runs or Path("runs") / args.study
    args.out = args.out or args.runs
    args.storage = args.storage or f"sqlite:///{args.runs / 'study.db'}"
    args.preset_file = preset_file(args.preset)
    # Named by its place in the repository where it is one of its presets.
    if args.preset_file.is_relative_to(ROOT):
        args.preset = str(args.preset_file.relative_to(ROOT))
    args.base = load_preset(args.preset_file)
    return args


def preset_file(name):
    """A preset's file: a path, or a name in presets/ (what apex builds in, and more)."""
    path = Path(name) if "/" in name or name.endswith(".toml") else ROOT / "presets" / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (ROOT / "presets").glob("*.toml")))
        raise Usage(f"cannot read preset {name}: give a .toml file or one of {known}")
    return path.resolve()


def load_preset(path):
    """The preset's settings, by key (sections only group them)."""
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise Usage(f"preset {path} is not valid TOML: {e}") from None
    flat = {}
    for key, value in table.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


def suggest(trial):
    return {
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATE, log=True),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "n_step": trial.suggest_int("n_step", *N_STEPS),
        "target_update_every": trial.suggest_int("target_update_every", *TARGET_PERIOD, log=True),
        "samples_per_insert": trial.suggest_categorical("samples_per_insert", SAMPLES_PER_INSERT),
    }


def baseline(base):
    """The preset's own values as a first trial, when they lie in the search space."""
    params = {k: base.get(k) for k in TUNED}
    inside = (
        params["batch_size"] in BATCH_SIZES
        and params["samples_per_insert"] in SAMPLES_PER_INSERT
        and LEARNING_RATE[0] <= (params["learning_rate"] or 0) <= LEARNING_RATE[1]
        and N_STEPS[0] <= (params["n_step"] or 0) <= N_STEPS[1]
        and TARGET_PERIOD[0] <= (params["target_update_every"] or 0) <= TARGET_PERIOD[1]
    )
    return params if inside else None


@dataclass
class EvalRound:
    env_frames: int
    updates: int
    mean: float


def eval_rounds(run_dir, protocol):
    """The rounds of the run's eval.csv (evaluator/src/eval_csv.rs) under `protocol`, in order."""
    path = run_dir / "eval.csv"
    if not path.exists():
        return []
    rounds = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            # A row being appended right now may be cut short: skip it until it is whole.
            if row.get("protocol") != protocol or not row.get("max"):
                continue
            rounds.append(
                EvalRound(
                    env_frames=int(row["env_frames"] or 0),
                    updates=int(row["updates"]),
                    mean=float(row["mean"]),
                )
            )
    return rounds


def stop(proc):
    """Stops apex as Ctrl-C does (it writes its checkpoint), killing it only if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_GRACE_SECS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def why_it_failed(log):
    """apex's own error lines from a run's log, else its last line."""
    try:
        lines = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace")).strip().splitlines()
    except FileNotFoundError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["nothing logged"])[-1]


class Objective:
    def __init__(self, args):
        self.args = args
        actors = int(args.base.get("actors", 1))
        for i, a in enumerate(args.apex_args):
            if a == "--actors" and i + 1 < len(args.apex_args):
                actors = int(args.apex_args[i + 1])
        # eval.csv counts emulator frames: 4 per agent step on Atari (apex_evaluator::frame_skip).
        frame_skip = 1 if args.game == "catch" else 4
        self.budget_frames = args.max_env_steps * actors * frame_skip

    def command(self, params, run_dir):
        a = self.args
        cmd = [str(a.apex), "local", "--preset", str(a.preset_file), "--game", a.game, "--run-dir", str(run_dir)]
        cmd += ["--max-env-steps", str(a.max_env_steps), "--metrics-addr", "127.0.0.1:0", "--log-every", "5"]
        cmd += ["--eval-protocols", a.protocol, "--eval-every-secs", str(a.eval_every_secs)]
        for key, value in params.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd + a.apex_args

    def __call__(self, trial):
        params = suggest(trial)
        run_dir = self.args.runs / f"trial-{trial.number}"
        # An old folder of the same name would be resumed by apex: start afresh.
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        trial.set_user_attr("run_dir", str(run_dir))
        log = run_dir / "apex.log"
        started = time.monotonic()
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items())
        print(f"trial {trial.number}: {shown}", flush=True)
        with open(log, "w") as out:
            proc = subprocess.Popen(self.command(params, run_dir), stdout=out, stderr=subprocess.STDOUT)
        try:
            reported = 0
            while proc.poll() is None:
                time.sleep(POLL_SECS)
                rounds = eval_rounds(run_dir, self.args.protocol)
                # Report at fixed fractions of the budget, so that every
                # trial is compared with the others at the same point.
                while rounds and reported < self.args.report_points:
                    point = (reported + 1) * self.budget_frames / self.args.report_points
                    if rounds[-1].env_frames < point:
                        break
                    reported += 1
                    trial.report(rounds[-1].mean, reported)
                    if trial.should_prune():
                        stop(proc)
                        trial.set_user_attr("stopped", f"pruned at {reported}/{self.args.report_points} of the budget")
                        self.record(trial, run_dir, started)
                        raise optuna.TrialPruned()
                timeout = self.args.trial_timeout
                if timeout and time.monotonic() - started > timeout:
                    stop(proc)
                    trial.set_user_attr("stopped", f"pruned: over --trial-timeout {timeout:g} s")
                    self.record(trial, run_dir, started)
                    raise optuna.TrialPruned()
        except KeyboardInterrupt:
            trial.set_user_attr("stopped", "interrupted")
            raise
        finally:
            # Ctrl-C reaches apex too; this covers every other way out.
            stop(proc)
        self.record(trial, run_dir, started)
        if proc.returncode != 0:
            self.fail(trial, f"apex local exited with {proc.returncode}: {why_it_failed(log)} (see {log})")
        rounds = eval_rounds(run_dir, self.args.protocol)
        if not rounds:
            self.fail(
                trial,
                f"no {self.args.protocol} evaluation round in {run_dir}: raise --max-env-steps or lower --eval-every-secs",
            )
        return rounds[-1].mean

    @staticmethod
    def fail(trial, reason):
        trial.set_user_attr("error", reason)
        raise TrialFailed(reason)

    def record(self, trial, run_dir, started):
        """What the table shows and the best preset is made of, kept in the study itself."""
        trial.set_user_attr("wall_seconds", round(time.monotonic() - started, 1))
        rounds = eval_rounds(run_dir, self.args.protocol)
        if rounds:
            trial.set_user_attr("updates", rounds[-1].updates)
            trial.set_user_attr("env_frames", rounds[-1].env_frames)
            trial.set_user_attr("eval_rounds", len(rounds))
        config = run_dir / "config.toml"
        if config.exists():
            trial.set_user_attr("config", config.read_text())
        # The replay checkpoint is the bulk of a run folder and no use to a finished trial.
        shutil.rmtree(run_dir / "replay", ignore_errors=True)


def open_study(args):
    if args.storage.startswith("sqlite:///"):
        Path(args.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(
        args.storage,
        # A trial whose process was killed stops beating; the next run of
        # this command marks it failed and runs its parameters again.
        heartbeat_interval=10,
        grace_period=30,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
    )
    study = optuna.create_study(
        study_name=args.study,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(n_startup_trials=args.startup_trials, seed=args.seed),
        # Early rounds score every trial near random: prune from a third of the budget on.
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=args.startup_trials, n_warmup_steps=args.report_points // 3
        ),
    )
    fixed = {k: getattr(args, k) for k in FIXED}
    if not study.user_attrs:
        for k, v in fixed.items():
            study.set_user_attr(k, v)
        start = baseline(args.base)
        if start:
            study.enqueue_trial(start)
    else:
        for k, v in fixed.items():
            if study.user_attrs.get(k) != v:
                raise Usage(
                    f"study {args.study} in {args.storage} was run with {k} {study.user_attrs.get(k)}, not {v}: "
                    "pass the same, or name a new --study"
                )
    return study


def counted(study):
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in done for t in study.trials)


def fmt(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def table(study, args):
    best = best_trial(study)
    head = ["trial", *TUNED, "score", "state", "updates", "wall s"]
    lines = [
        f"Study `{args.study}`: {args.game} from {args.preset}, {args.max_env_steps} agent steps per actor "
        f"a trial. Score: the mean {args.protocol} score of the last evaluation round in eval.csv "
        f"(of a pruned trial: the last round it reported); updates: the learner's count at that round. "
        f"Best in bold.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            score, state = t.value, "complete"
        elif t.state == optuna.trial.TrialState.PRUNED:
            score = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
            state = t.user_attrs.get("stopped", "pruned")
        else:
            score, state = None, t.user_attrs.get("stopped", t.state.name.lower())
        cells = [str(t.number), *(fmt(t.params.get(k, "")) for k in TUNED)]
        cells += [
            "" if score is None else f"{score:.3f}",
            state,
            str(t.user_attrs.get("updates", "")),
            fmt(t.user_attrs.get("wall_seconds", "")),
        ]
        if best and t.number == best.number:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_trial(study):
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(complete, key=lambda t: t.value) if complete else None


def best_preset(study, args):
    """The best trial's resolved config.toml, less the trial's budget, as a preset."""
    best = best_trial(study)
    if best is None or "config" not in best.user_attrs:
        return None
    body = [
        line
        for line in best.user_attrs["config"].splitlines()
        if not line.startswith("#") and not re.match(r"\s*(max_env_steps|max_updates)\s*=", line)
    ]
    tuned = ", ".join(f"{k} = {fmt(best.params[k])}" for k in TUNED)
    head = [
        f"# Tuned by scripts/tune.py: study {args.study}, best of {counted(study)} trials (trial {best.number}),",
        f"# mean {args.protocol} score {best.value:.3f} in the last evaluation round of "
        f"{args.max_env_steps} agent steps per actor.",
        f"# Tuned: {tuned};",
        f"# the rest as in {args.preset}. Repeat the trial with --max-env-steps {args.max_env_steps}.",
    ]
    return "\n".join(head + body).rstrip() + "\n"


def write_results(study, args):
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trials.md").write_text(table(study, args))
    preset = best_preset(study, args)
    if preset:
        (args.out / "best.toml").write_text(preset)


def main(argv):
    args = resolve(parse_args(argv))
    # Failed trials are reported below, in one line each.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Heartbeats (which let a killed study resume) are marked experimental.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(args)
    missing = args.trials - counted(study)
    print(f"study {args.study} ({args.storage}): {counted(study)} trials done, {max(missing, 0)} to run", flush=True)
    objective = Objective(args)

    def after_trial(study, trial):
        write_results(study, args)
        score = "" if trial.value is None else f", score {trial.value:.3f}"
        why = trial.user_attrs.get("error") or trial.user_attrs.get("stopped")
        why = f" ({why})" if why else ""
        print(f"trial {trial.number}: {trial.state.name.lower()}{score}{why}", flush=True)

    try:
        if missing > 0:
            study.optimize(objective, n_trials=missing, catch=(TrialFailed,), callbacks=[after_trial])
    except KeyboardInterrupt:
        # The trial cut short runs again, first, when the study resumes.
        cut = [t for t in study.trials if t.user_attrs.get("stopped") == "interrupted"]
        if cut and cut[-1].state == optuna.trial.TrialState.FAIL:
            study.enqueue_trial(cut[-1].params)
        write_results(study, args)
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    write_results(study, args)
    best = best_trial(study)
    if best is None:
        print("error: no trial finished with a score: see the run folders' apex.log", file=sys.stderr)
        return 1
    print(f"best: trial {best.number}, score {best.value:.3f}; {args.out / 'trials.md'}, preset {args.out / 'best.toml'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Usage as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
