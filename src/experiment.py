"""The command line: a sacred Experiment around ``qmixlab.run``.

    qmixlab with alg=qmix env=smacsim env_args.map_name=2s3z t_max=500000 seed=3
    qmixlab --config=qmix --env-config=smacsim with env_args.map_name=2s3z     (PyMARL's form)
    qmixlab print_config with alg=vdn
    qmixlab with checkpoint_path=results/models/<run> evaluate=True
    qmixlab with seeds=[0,1,2,3,4] env_args.map_name=3m            (five seeds in one process)

``alg`` and ``env`` choose ``config/algs/<alg>.yaml`` and ``config/envs/<env>.yaml``; they are
read from the command line before sacred parses it, because they decide which defaults exist.
Everything else is sacred's own syntax and options (``-F``, ``-m``, ``-l``, ``-u``, ...). The merged
configuration is validated once, in a config hook, so even ``print_config`` rejects a misspelled
key. By default a FileStorageObserver writes to ``<local_results_path>/sacred``.

With ``seeds=[...]`` the process trains one member per seed (``qmixlab.run.train_members``) and
each member is its own sacred run, created from the member's configuration exactly as its
separate command line would create it (``seed=<s> local_results_path=<its path>``), observed in
its own folder, and completed, failed or interrupted on its own. ``checkpoint_path=[<run>, ...]``
resumes such a group from its members' model folders.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

from qmixlab.errors import RunInterrupted, UserError
from qmixlab.settings import compose_config, load_yaml, validate_config

OBSERVER_FLAGS = ("-F", "--file_storage", "-u", "--unobserved")


def _split_pymarl_flags(argv: List[str]) -> Tuple[List[str], Optional[str], Optional[str]]:
    """Remove PyMARL's ``--config=X`` / ``--env-config=Y`` from argv and return them."""
    rest, alg, env = [], None, None
    for token in argv:
        if token.startswith("--config="):
            alg = token.split("=", 1)[1]
        elif token.startswith("--env-config="):
            env = token.split("=", 1)[1]
        else:
            rest.append(token)
    return rest, alg, env


def _with_value(argv: List[str], key: str) -> Optional[str]:
    """The value of ``key=value`` among the tokens after ``with`` (last one wins)."""
    if "with" not in argv:
        return None
    value = None
    for token in argv[argv.index("with") + 1:]:
        if token.startswith(key + "="):
            value = token.split("=", 1)[1].strip("'\"")
    return value


def _list_value(text: str) -> List[str]:
    """``[a, 'b', c]`` (a list on the command line) -> ``['a', 'b', 'c']``."""
    inner = text.strip()[1:-1] if text.strip().endswith("]") else text.strip()[1:]
    return [item.strip().strip("'\"") for item in inner.split(",") if item.strip()]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not when the handler was
    made), so that redirecting stderr after start-up, as tests and notebooks do, keeps working."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _console_logger() -> logging.Logger:
    logger = logging.getLogger("qmixlab")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s] %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def run_folder_name(settings, run_id) -> str:
    map_name = (settings.task or settings.env).replace(":", "-").replace("/", "-")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suffix = f"_{run_id}" if run_id is not None else ""
    return f"{settings.name}_{map_name}_seed{settings.seed}_{stamp}{suffix}"


def build_experiment(alg: str, env: str):
    # sacred 0.8.7 imports pkg_resources, whose deprecation notice would greet every run.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from sacred import Experiment
    from sacred.utils import apply_backspaces_and_linefeeds

    experiment = Experiment("qmixlab", save_git_info=False)
    experiment.logger = _console_logger()
    experiment.captured_out_filter = apply_backspaces_and_linefeeds
    experiment.add_config(compose_config(alg, env))

    @experiment.config_hook
    def validate(config, command_name, logger):
        validate_config(config)
        return {}

    # ``env_args`` is captured so that sacred accepts arguments of environments that take
    # ``**kwargs`` (their names are not in the composed config); ``validate`` checks them.
    @experiment.main
    def qmixlab_run(_run, _config, _log, env_args):
        from qmixlab import run as run_module
        from qmixlab.metrics import RunLogger

        settings = validate_config(_config)
        results = Path(settings.local_results_path)
        if settings.checkpoint_path and not settings.evaluate:
            models_dir = Path(settings.checkpoint_path)  # a resumed run keeps saving beside its past
            name = models_dir.name
        else:
            name = run_folder_name(settings, _run._id)
            models_dir = results / "models" / name
        tensorboard_dir = str(results / "tb_logs" / name) if settings.use_tensorboard else None
        logger = RunLogger(sacred_run=_run, console=_log, tensorboard_dir=tensorboard_dir)
        try:
            if settings.evaluate:
                return run_module.evaluate(settings, logger)
            _run.info["models_dir"] = str(models_dir)
            return run_module.train(settings, logger, models_dir=models_dir if settings.save_model else None)
        finally:
            logger.close()

    return experiment


class _NoCapturedOutput:
    """Members share the process's console: no per-run captured output (sacred reads this)."""

    closed = True


def _member_updates(config_updates: dict, settings, k: int) -> dict:
    """The command-line updates of member k's separate run."""
    from qmixlab.settings import deep_merge

    member = settings.member(k)
    return deep_merge(config_updates, {
        "seed": member.seed, "local_results_path": member.local_results_path,
        "checkpoint_path": member.checkpoint_path, "seeds": [], "member_results_paths": [],
        "member_checkpoint_paths": []})


def run_members(experiment, command, config_updates, named_configs, options, observed: bool):
    """Train every member of ``seeds=[...]`` in this process, each recorded as its own sacred
    run. Exits 0 when every member completed, 1 when any failed."""
    from sacred.observers import FileStorageObserver

    from qmixlab import run as run_module
    from qmixlab.metrics import RunLogger

    group = experiment._create_run(command, config_updates, named_configs, info={}, meta_info={}, options=options)
    settings = validate_config(group.config)
    log = _console_logger()
    runs, loggers, models_dirs = [], [], []
    for k, seed in enumerate(settings.seeds):
        member = settings.member(k)
        info = {"group": {"seeds": list(settings.seeds), "member": k}}
        run = experiment._create_run(command, _member_updates(config_updates, settings, k), named_configs,
                                     info=info, meta_info={}, options=options)
        observers = list(run.observers)  # sacred may hand every run the experiment's own list
        if observed:
            observers.append(FileStorageObserver(os.path.join(member.local_results_path, "sacred")))
        run.observers = [] if run.unobserved else sorted(observers, key=lambda observer: -observer.priority)
        run._output_file = _NoCapturedOutput()
        runs.append(run)
    done = [False] * len(runs)
    try:
        for k, run in enumerate(runs):
            run._emit_started()
            member = settings.member(k)
            results = Path(member.local_results_path)
            if member.checkpoint_path:
                models_dir = Path(member.checkpoint_path)
                name = models_dir.name
            else:
                name = run_folder_name(member, run._id)
                models_dir = results / "models" / name
            run.info["models_dir"] = str(models_dir)
            models_dirs.append(models_dir if settings.save_model else None)
            tensorboard_dir = str(results / "tb_logs" / name) if settings.use_tensorboard else None
            loggers.append(RunLogger(sacred_run=run, console=log, tensorboard_dir=tensorboard_dir,
                                     label=f"[seed {member.seed}] "))

        def member_done(member) -> None:
            run = runs[member.index]
            run._stop_time()
            if member.error is None:
                run.result = member.test_summary
                run._emit_completed(run.result)
            else:
                error = member.error
                run._emit_failed(type(error), error, error.__traceback__)
            run._wait_for_observers()
            done[member.index] = True

        members = run_module.train_members(settings, loggers, models_dirs, on_member_done=member_done)
    except (RunInterrupted, KeyboardInterrupt):
        for k, run in enumerate(runs):
            if not done[k] and run.start_time is not None:
                run._emit_interrupted("INTERRUPTED")
                run._wait_for_observers()
        raise
    except BaseException as error:
        for k, run in enumerate(runs):
            if not done[k] and run.start_time is not None:
                run._emit_failed(type(error), error, error.__traceback__)
                run._wait_for_observers()
        raise
    finally:
        for logger in loggers:
            logger.close()
    failed = [m for m in members if m.error is not None]
    for member in failed:
        print(f"qmixlab: seed {member.settings.seed}: {member.error}", file=sys.stderr)
    if failed:
        raise SystemExit(1)
    return [m.test_summary for m in members]


def _parse_sacred_command_line(experiment, argv: List[str]):
    """sacred's own parsing of ``argv`` (what ``Experiment.run_commandline`` does before running),
    so that qmixlab can adjust the updates for a resume and report user errors in one line."""
    from docopt import docopt
    from sacred.arg_parser import get_config_updates

    short_usage, usage, internal_usage = experiment.get_usage()
    args = docopt(internal_usage, [str(a) for a in argv[1:]], default_help=False)
    command = args.get("COMMAND") or experiment.default_command
    config_updates, named_configs = get_config_updates(args["UPDATE"])
    error = experiment._check_command(command)
    if not args["help"] and error:
        print(short_usage, file=sys.stderr)
        print(error, file=sys.stderr)
        raise SystemExit(2)
    if experiment._handle_help(args, usage):
        raise SystemExit(0)
    return command, config_updates, named_configs, args


def _user_error(error: BaseException) -> "SystemExit":
    print(f"qmixlab: {error}", file=sys.stderr)
    return SystemExit(2)


def main(argv: Optional[List[str]] = None):
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] in ("ablate", "report"):
        from qmixlab import ablations

        return ablations.main(argv[1:])
    if len(argv) > 1 and argv[1] == "check-env":
        from qmixlab.envs.conformance import main as check_env_main

        code = check_env_main(argv[2:])
        if code:
            raise SystemExit(code)
        return code
    argv, alg_flag, env_flag = _split_pymarl_flags(argv)
    from qmixlab.resume import ResumePlan, plan_group_resume, plan_resume

    try:
        checkpoint_paths = _with_value(argv, "checkpoint_path")
        if checkpoint_paths and checkpoint_paths.startswith("["):  # a group: one run folder per member
            resume = plan_group_resume(_list_value(checkpoint_paths), _with_value(argv, "load_step"))
        else:
            resume: Optional[ResumePlan] = plan_resume(checkpoint_paths, _with_value(argv, "load_step"))
        if resume is not None:  # PyMARL's flags cannot change what the checkpoint was trained as
            resume.check_flags(alg=alg_flag, env=env_flag)
        alg = _with_value(argv, "alg") or alg_flag or (resume.alg if resume else None) or "qmix"
        env = _with_value(argv, "env") or env_flag or (resume.env if resume else None) or \
            load_yaml(None, "default").get("env", "smacsim")
        experiment = build_experiment(alg, env)
        command, config_updates, named_configs, options = _parse_sacred_command_line(experiment, argv)
        if resume is not None:  # print_config shows what the resumed run will run
            config_updates = resume.apply(config_updates, log=_console_logger())
    except UserError as error:
        raise _user_error(error)
    observed = not any(flag in argv or any(a.startswith(flag + "=") for a in argv) for flag in OBSERVER_FLAGS)
    group = command == experiment.default_command and bool(config_updates.get("seeds") or [])
    if observed and not group:  # a group's members are observed each in its own folder
        from sacred.observers import FileStorageObserver

        results = (config_updates.get("local_results_path") or _with_value(argv, "local_results_path")
                   or load_yaml(None, "default")["local_results_path"])
        experiment.observers.append(FileStorageObserver(os.path.join(results, "sacred")))
    from sacred.utils import SacredError

    try:
        if group:
            return run_members(experiment, command, config_updates, named_configs, options, observed)
        return experiment.run(command, config_updates, named_configs, info={}, meta_info={}, options=options)
    except SacredError as error:
        raise _user_error(error)
    except UserError as error:
        print(f"qmixlab: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code)
    except RunInterrupted as stop:
        print(f"qmixlab: {stop}", file=sys.stderr)
        raise SystemExit(stop.exit_code)
    except KeyboardInterrupt:
        print("qmixlab: interrupted", file=sys.stderr)
        raise SystemExit(130)
