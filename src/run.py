"""One run, from validated settings to the last gradient step.

``train`` follows PyMARL's loop: roll out ``batch_size_run`` episodes, store them, take one
training step once the buffer holds ``batch_size`` episodes, run greedy tests every
``test_interval`` environment steps, log every ``log_interval``, checkpoint every
``save_model_interval``. A checkpoint holds everything needed to continue (networks, targets,
optimiser, replay buffer, counters, pending statistics, every point logged so far, the run's
settings and every random-number state), so a resumed run on CPU reproduces the uninterrupted one
exactly and its record holds every point the uninterrupted run's has. ``LoopCounters.t_env`` is
the one count of environment steps; the runner is told it, never keeps its own.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from qmixlab.checkpoints import (
    CheckpointError,
    cleanup_interrupted_saves,
    find_checkpoint,
    load_checkpoint,
    load_latest_readable,
    save_checkpoint,
)
from qmixlab.components.action_selectors import EpsilonGreedyActionSelector
from qmixlab.components.replay_buffer import ReplayBuffer, StorageOptions
from qmixlab.components.schedules import LinearSchedule
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.envs import make_batched_env
from qmixlab.learners.q_learner import QLearner
from qmixlab.metrics import RunLogger
from qmixlab.modules.agents import RNNAgent
from qmixlab.modules.entities import require_obs_layout
from qmixlab.modules.entity_agent import EntityAttentionAgent
from qmixlab.modules.mixers import build_mixer
from qmixlab.runners.batch_runner import BatchRunner, EpisodeStats
from qmixlab.errors import ConfigError, RunInterrupted, UserError
from qmixlab.settings import RunSettings

log = logging.getLogger("qmixlab")


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""

    exit_code = 1


@dataclass
class LoopCounters:
    t_env: int = 0
    episode: int = 0
    last_test_t: int = -1  # set in train(): the first iteration always tests
    last_log_t: int = 0
    last_save_t: int = 0
    saved_once: bool = False


@dataclass
class Components:
    env: object
    env_info: dict
    mac: AgentController
    learner: QLearner
    runner: BatchRunner
    buffer: ReplayBuffer


def _state_last_action_block(settings: RunSettings, spec):
    """Where the state holds SMAC's last-action block, when the buffer should rebuild it."""
    choice = settings.buffer.derive_state_last_action
    if choice is False or spec.state_last_action is None:
        if choice is True:
            raise ConfigError(
                f"buffer.derive_state_last_action=True but environment {settings.env!r} declares no "
                "last-action block in its state; use 'auto' or false"
            )
        return None
    return tuple(spec.state_last_action)


def free_cores() -> int:
    """Cores this process may use that are not already busy (by the 1-minute load average)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = int(round(os.getloadavg()[0]))
    except OSError:
        busy = 0
    return max(1, cores - busy)


def set_threads(settings: RunSettings) -> None:
    """Training steps run on ``torch_threads`` threads (rollouts always on one). More threads than
    free cores make every step wait for a busy core: warn."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    threads = torch.get_num_threads()
    available = free_cores()
    if threads > available:
        log.warning("torch_threads=%d (%d threads) but only %d core(s) look free: training steps will "
                    "wait for busy cores and can run several times slower; torch_threads=1 avoids it",
                    settings.torch_threads, threads, available)


def build_components(settings: RunSettings) -> Components:
    set_threads(settings)
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed % (2**32))
    env = make_batched_env(settings.env, settings.batch_size_run, seed=settings.seed, **settings.env_args)
    spec = env.get_spec()
    if settings.masks.dead_agents != "none" and not spec.can_tell_dead_agents:
        env.close()
        raise ConfigError(
            f"masks.dead_agents={settings.masks.dead_agents!r} needs to know which agents are dead, but "
            f"environment {settings.env!r} declares neither an alive mask nor a no-op action "
            "(docs/environments.md, 'Alive agents'); use masks.dead_agents=none"
        )
    if settings.mixer.name == "attention" and spec.state_layout is None:
        env.close()
        raise ConfigError(
            f"mixer.name='attention' splits the state into ally and enemy entities, but environment "
            f"{settings.env!r} declares no state layout (docs/environments.md); use mixer.name=qmix or qplex"
        )
    env_info = env.get_env_info()
    n_agents, n_actions = spec.n_agents, spec.n_actions
    agent_settings = settings.agent
    if agent_settings.name == "entity_attention":
        try:
            obs_layout = require_obs_layout(spec, settings.env)
        except ConfigError:
            env.close()
            raise
        agent = EntityAttentionAgent(obs_layout, n_actions, n_agents, hidden_dim=agent_settings.hidden_dim,
                                     embed_dim=agent_settings.embed_dim,
                                     attention_heads=agent_settings.attention_heads,
                                     use_last_action=agent_settings.use_last_action,
                                     use_agent_id=agent_settings.use_agent_id, masks=settings.masks)
    else:
        agent = RNNAgent(spec.obs_shape, n_actions, n_agents, hidden_dim=agent_settings.hidden_dim,
                         use_last_action=agent_settings.use_last_action, use_agent_id=agent_settings.use_agent_id)
    epsilon = settings.epsilon
    selector = EpsilonGreedyActionSelector(LinearSchedule(epsilon.start, epsilon.finish, epsilon.anneal_time))
    mac = AgentController(agent, selector)
    mixer_settings = settings.mixer
    mixer = build_mixer(mixer_settings.name, n_agents, spec.state_shape,
                        mixing_embed_dim=mixer_settings.mixing_embed_dim,
                        hypernet_layers=mixer_settings.hypernet_layers,
                        hypernet_embed=mixer_settings.hypernet_embed, n_actions=n_actions,
                        state_layout=spec.state_layout,
                        attention_embed_dim=mixer_settings.attention_embed_dim,
                        attention_heads=mixer_settings.attention_heads,
                        attention_layers=mixer_settings.attention_layers,
                        qplex_attention_heads=mixer_settings.qplex_attention_heads,
                        qplex_adv_hypernet_embed=mixer_settings.qplex_adv_hypernet_embed)
    learner = QLearner(mac, mixer, n_agents, settings.learner, settings.masks, device=settings.device)
    runner = BatchRunner(env, learner.mac)
    storage = StorageOptions(
        obs_dtype=getattr(torch, settings.buffer.obs_dtype),
        state_dtype=getattr(torch, settings.buffer.state_dtype),
        state_last_action=_state_last_action_block(settings, spec),
    )
    buffer = ReplayBuffer(runner.scheme, runner.groups, settings.buffer_size, runner.max_seq_length,
                          storage=storage, device="cpu", seed=settings.seed)
    return Components(env, env_info, learner.mac, learner, runner, buffer)


def compatibility(settings: RunSettings, env_info: dict) -> dict:
    """What a checkpoint must share with the run that loads it."""
    return {
        "env": settings.env,
        "map_name": settings.task,  # the task, under SMAC's name for it
        "n_agents": int(env_info["n_agents"]),
        "n_actions": int(env_info["n_actions"]),
        "obs_shape": int(env_info["obs_shape"]),
        "state_shape": int(env_info["state_shape"]),
        "mixer": str(settings.mixer.name),
        "hidden_dim": settings.agent.hidden_dim,
        "use_last_action": settings.agent.use_last_action,
        "use_agent_id": settings.agent.use_agent_id,
    }


# --------------------------------------------------------------------------- random states
def _rng_state(parts: Components) -> dict:
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "env": parts.env.get_rng_state() if hasattr(parts.env, "get_rng_state") else None,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(parts: Components, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if state.get("env") is not None and hasattr(parts.env, "set_rng_state"):
        parts.env.set_rng_state(state["env"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_payload(settings, parts, counters, logger, include_buffer: bool) -> dict:
    return {
        "compatibility": compatibility(settings, parts.env_info),
        "settings": asdict(settings),
        "learner": parts.learner.state_dict(),
        "buffer": parts.buffer.state_dict() if include_buffer else None,
        "counters": asdict(counters),
        "logger": logger.state_dict(),
        "rng": _rng_state(parts),
    }


def restore(settings, parts, logger, counters: LoopCounters, weights_only_for_eval=False) -> Path:
    """Load ``settings.checkpoint_path`` (the latest readable checkpoint, or ``load_step``'s)."""
    expected = compatibility(settings, parts.env_info)
    if weights_only_for_eval:
        path = find_checkpoint(settings.checkpoint_path, settings.load_step)
        payload = load_checkpoint(path, expected=expected)
    else:
        path, payload = load_latest_readable(settings.checkpoint_path, settings.load_step, expected=expected)
    try:
        parts.learner.load_state_dict(payload["learner"])
        if weights_only_for_eval:
            return path
        if payload["buffer"] is not None:
            parts.buffer.load_state_dict(payload["buffer"])
        for key, value in payload["counters"].items():
            setattr(counters, key, value)
        logger.load_state_dict(payload["logger"], replay_history=True)
        _set_rng_state(parts, payload["rng"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this run: {error}") from error
    return path


# --------------------------------------------------------------------------- evaluation
def run_tests(settings, parts, t_env: int) -> Optional[EpisodeStats]:
    """``test_nepisode`` greedy episodes (rounded up to whole rollouts); None when it is 0."""
    if settings.test_nepisode == 0:
        return None
    rounds = math.ceil(settings.test_nepisode / settings.batch_size_run)
    with single_threaded():
        return EpisodeStats.concatenate(
            [parts.runner.run(test_mode=True, t_env=t_env)[1] for _ in range(rounds)])


def evaluate(settings: RunSettings, logger: RunLogger) -> dict:
    parts = build_components(settings)
    if not settings.checkpoint_path:
        log.warning("evaluate=True without checkpoint_path: evaluating an untrained network")
    else:
        path = restore(settings, parts, logger, LoopCounters(), weights_only_for_eval=True)
        log.info("evaluating %s", path)
    stats = run_tests(settings, parts, t_env=0)
    results = {} if stats is None else {"test_" + k: v for k, v in stats.summary().items()}
    for key, value in results.items():
        logger.log(key, value, 0)
    logger.persist()
    log.info("evaluation over %d episodes: %s", settings.test_nepisode,
             ", ".join(f"{k}={v:.4g}" for k, v in results.items()) or "nothing to evaluate")
    parts.env.close()
    return results


# --------------------------------------------------------------------------- training
@contextmanager
def single_threaded():
    """Rollouts run many tiny ops, which extra intra-op threads only slow down (measured: 46 ms
    against 69 ms for an 8-environment 3m rollout on 2 cores); training keeps its threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _StopRequest:
    """Ctrl-C or SIGTERM asks the loop to save and stop at the end of the current iteration; a
    second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, saving: bool):
        self.signal: Optional[int] = None
        self.saving = saving
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not in the main thread: no handler
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise RunInterrupted(f"{signal.Signals(signum).name} again: stopped at once, without saving",
                                 128 + signum)
        self.signal = signum
        what = "saving a checkpoint and stopping" if self.saving else "stopping (save_model=False: no checkpoint)"
        log.warning("%s: %s at the end of this iteration (again to stop at once)",
                    signal.Signals(signum).name, what)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False


def _progress_bar(settings, start):
    if not settings.progress_bar:
        return None
    from tqdm import tqdm

    return tqdm(total=settings.t_max, initial=start, unit="step", dynamic_ncols=True, mininterval=2.0,
                desc="env steps")


def train(settings: RunSettings, logger: RunLogger, models_dir: Optional[Path] = None) -> dict:
    """Train until ``t_max`` environment steps; returns the last logged test statistics."""
    parts = build_components(settings)
    counters = LoopCounters(last_test_t=-settings.test_interval - 1)
    if models_dir is not None and Path(models_dir).is_dir():
        for leftover in cleanup_interrupted_saves(models_dir):
            log.warning("removed %s, left by a save that was killed", leftover)
    if settings.checkpoint_path:
        path = restore(settings, parts, logger, counters)
        log.info("resumed from %s at t_env=%d", path, counters.t_env)
    runner, learner, buffer = parts.runner, parts.learner, parts.buffer
    bar = _progress_bar(settings, counters.t_env)
    started = time.time()

    def save(reason: str) -> Optional[Path]:
        if models_dir is None:
            return None
        # Set before the payload is built, so that a resumed run keeps the uninterrupted run's
        # schedule; only periodic saves move it (an interrupted save falls between them).
        if reason == "periodic":
            counters.last_save_t = counters.t_env
        counters.saved_once = True
        payload = checkpoint_payload(settings, parts, counters, logger, settings.buffer.save_in_checkpoint)
        folder = save_checkpoint(models_dir, counters.t_env, payload)
        log.info("saved checkpoint %s (%s)", folder, reason)
        return folder

    test_summary = {}
    with _StopRequest(saving=models_dir is not None) as stop:
        while counters.t_env <= settings.t_max:
            with single_threaded():
                batch, stats = runner.run(test_mode=False, t_env=counters.t_env)
            buffer.insert_episode_batch(batch)
            logger.accumulate(stats.summary(), weight=len(stats.returns))
            logger.accumulate({"epsilon": learner.mac.action_selector.epsilon})
            counters.t_env += int(stats.lengths.sum())
            if buffer.can_sample(settings.batch_size):
                train_stats = learner.train(buffer.sample(settings.batch_size), counters.t_env, counters.episode)
                if not math.isfinite(train_stats["loss"]):
                    raise NonFiniteLossError(
                        f"non-finite loss {train_stats['loss']} at t_env={counters.t_env}: training stopped; "
                        "the last good checkpoint is kept")
                logger.accumulate(train_stats)
            counters.episode += runner.n_envs

            logged = False
            if (counters.t_env - counters.last_test_t) / settings.test_interval >= 1.0:
                test_stats = run_tests(settings, parts, counters.t_env)
                if test_stats is not None:
                    test_summary = {"test_" + k: v for k, v in test_stats.summary().items()}
                    for key, value in test_summary.items():
                        logger.log(key, value, counters.t_env)
                    logged = True
                counters.last_test_t = counters.t_env
            if counters.t_env - counters.last_log_t >= settings.log_interval:
                values = logger.flush(counters.t_env)
                values.update(test_summary)
                logger.print_summary(counters.t_env, counters.episode, values)
                counters.last_log_t = counters.t_env
                logged = True
            if logged:
                logger.persist()  # a kill now loses no logged point
            if bar is not None:
                bar.update(counters.t_env - bar.n)
                bar.set_postfix(test_win=f"{logger.latest('test_battle_won_mean'):.2f}", refresh=False)
            if settings.save_model and (
                not counters.saved_once or counters.t_env - counters.last_save_t >= settings.save_model_interval
            ):
                save("periodic")
            if stop.requested:
                folder = save("interrupted") if settings.save_model else None
                name = signal.Signals(stop.signal).name
                if folder is None:
                    message = f"{name}: stopped at t_env={counters.t_env} (save_model=False: nothing saved)"
                else:
                    message = (f"{name}: stopped at t_env={counters.t_env}; checkpoint {folder}; resume with: "
                               f"qmixlab with checkpoint_path={folder.parent}")
                if bar is not None:
                    bar.close()
                parts.env.close()
                raise RunInterrupted(message, 128 + stop.signal)
    if settings.save_model:
        save("final")
    if bar is not None:
        bar.close()
    parts.env.close()
    log.info("finished %d environment steps in %.1f s", counters.t_env, time.time() - started)
    return test_summary
