"""One run, from validated settings to the last gradient step.

``train`` follows PyMARL's loop: roll out ``batch_size_run`` episodes, store them, take one
training step once the buffer holds ``batch_size`` episodes, run greedy tests every
``test_interval`` environment steps, log every ``log_interval``, checkpoint every
``save_model_interval``. A checkpoint holds everything needed to continue (networks, targets,
optimiser, replay buffer, counters, pending statistics and every random-number state), so a
resumed run on CPU reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from qmixlab.checkpoints import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
from qmixlab.components.action_selectors import EpsilonGreedyActionSelector
from qmixlab.components.replay_buffer import ReplayBuffer, StorageOptions
from qmixlab.components.schedules import LinearSchedule
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.envs import make_batched_env
from qmixlab.learners.q_learner import QLearner
from qmixlab.metrics import RunLogger
from qmixlab.modules.agents import RNNAgent
from qmixlab.modules.mixers import build_mixer
from qmixlab.runners.batch_runner import BatchRunner, EpisodeStats
from qmixlab.settings import RunSettings

log = logging.getLogger("qmixlab")

SMAC_BACKENDS = ("smacsim", "sc2")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


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


def _derive_state_last_action(settings: RunSettings) -> bool:
    choice = settings.buffer.derive_state_last_action
    if choice != "auto":
        return bool(choice)
    args = settings.env_args
    return (
        settings.env in SMAC_BACKENDS
        and args.get("state_last_action", True)
        and not args.get("obs_instead_of_state", False)
        and not args.get("state_timestep_number", False)
    )


def build_components(settings: RunSettings) -> Components:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed % (2**32))
    env = make_batched_env(settings.env, settings.batch_size_run, seed=settings.seed, **settings.env_args)
    env_info = env.get_env_info()
    n_agents, n_actions = env_info["n_agents"], env_info["n_actions"]
    agent = RNNAgent(env_info["obs_shape"], n_actions, n_agents, hidden_dim=settings.agent.hidden_dim,
                     use_last_action=settings.agent.use_last_action, use_agent_id=settings.agent.use_agent_id)
    epsilon = settings.epsilon
    selector = EpsilonGreedyActionSelector(LinearSchedule(epsilon.start, epsilon.finish, epsilon.anneal_time))
    mac = AgentController(agent, selector)
    mixer_settings = settings.mixer
    mixer = build_mixer(mixer_settings.name, n_agents, env_info["state_shape"],
                        mixing_embed_dim=mixer_settings.mixing_embed_dim,
                        hypernet_layers=mixer_settings.hypernet_layers,
                        hypernet_embed=mixer_settings.hypernet_embed)
    learner = QLearner(mac, mixer, n_agents, settings.learner_options(), device=settings.device)
    runner = BatchRunner(env, learner.mac, invalid_flag=bool(env_info.get("flags_invalid_steps", False)))
    storage = StorageOptions(
        obs_dtype=getattr(torch, settings.buffer.obs_dtype),
        state_dtype=getattr(torch, settings.buffer.state_dtype),
        derive_state_last_action=_derive_state_last_action(settings),
    )
    buffer = ReplayBuffer(runner.scheme, runner.groups, settings.buffer_size, runner.max_seq_length,
                          preprocess=runner.preprocess, storage=storage, device="cpu", seed=settings.seed)
    return Components(env, env_info, learner.mac, learner, runner, buffer)


def compatibility(settings: RunSettings, env_info: dict) -> dict:
    """What a checkpoint must share with the run that loads it."""
    return {
        "env": settings.env,
        "map_name": str(settings.env_args.get("map_name", "")),
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
        "learner": parts.learner.state_dict(),
        "buffer": parts.buffer.state_dict() if include_buffer else None,
        "counters": asdict(counters),
        "logger": logger.state_dict(),
        "rng": _rng_state(parts),
    }


def restore(settings, parts, logger, counters: LoopCounters, weights_only_for_eval=False) -> Path:
    path = find_checkpoint(settings.checkpoint_path, settings.load_step)
    payload = load_checkpoint(path, expected=compatibility(settings, parts.env_info))
    try:
        parts.learner.load_state_dict(payload["learner"])
        if weights_only_for_eval:
            return path
        if payload["buffer"] is not None:
            parts.buffer.load_state_dict(payload["buffer"])
        for key, value in payload["counters"].items():
            setattr(counters, key, value)
        logger.load_state_dict(payload["logger"])
        _set_rng_state(parts, payload["rng"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this run: {error}") from error
    parts.runner.t_env = counters.t_env
    return path


# --------------------------------------------------------------------------- evaluation
def run_tests(settings, parts) -> EpisodeStats:
    rounds = max(1, math.ceil(settings.test_nepisode / settings.batch_size_run))
    with single_threaded():
        return EpisodeStats.concatenate([parts.runner.run(test_mode=True)[1] for _ in range(rounds)])


def evaluate(settings: RunSettings, logger: RunLogger) -> dict:
    parts = build_components(settings)
    if not settings.checkpoint_path:
        log.warning("evaluate=True without checkpoint_path: evaluating an untrained network")
    else:
        path = restore(settings, parts, logger, LoopCounters(), weights_only_for_eval=True)
        log.info("evaluating %s", path)
    results = {"test_" + k: v for k, v in run_tests(settings, parts).summary().items()}
    for key, value in results.items():
        logger.log(key, value, 0)
    log.info("evaluation over %d episodes: %s", settings.test_nepisode,
             ", ".join(f"{k}={v:.4g}" for k, v in results.items()))
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
    """Ctrl-C asks the loop to save and stop at the end of the current iteration; a second
    Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread: no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: saving a checkpoint at the end of this iteration (again to abort now)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
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
    if settings.checkpoint_path:
        path = restore(settings, parts, logger, counters)
        log.info("resumed from %s at t_env=%d", path, counters.t_env)
    runner, learner, buffer = parts.runner, parts.learner, parts.buffer
    bar = _progress_bar(settings, counters.t_env)
    started = time.time()

    def save(reason: str):
        if models_dir is None:
            return
        payload = checkpoint_payload(settings, parts, counters, logger, settings.buffer.save_in_checkpoint)
        folder = save_checkpoint(models_dir, counters.t_env, payload)
        counters.last_save_t, counters.saved_once = counters.t_env, True
        log.info("saved checkpoint %s (%s)", folder, reason)

    test_summary = {}
    with _StopRequest() as stop:
        while counters.t_env <= settings.t_max:
            with single_threaded():
                batch, stats = runner.run(test_mode=False)
            buffer.insert_episode_batch(batch)
            logger.accumulate(stats.summary(), weight=len(stats.returns))
            logger.accumulate({"epsilon": learner.mac.action_selector.epsilon})
            if buffer.can_sample(settings.batch_size):
                train_stats = learner.train(buffer.sample(settings.batch_size), runner.t_env, counters.episode)
                if not math.isfinite(train_stats["loss"]):
                    message = (f"non-finite loss {train_stats['loss']} at t_env={runner.t_env}: training "
                               f"stopped; the last good checkpoint is kept")
                    log.error(message)
                    raise NonFiniteLossError(message)
                logger.accumulate(train_stats)
            counters.t_env = runner.t_env
            counters.episode += runner.n_envs

            if (counters.t_env - counters.last_test_t) / settings.test_interval >= 1.0:
                test_stats = run_tests(settings, parts)
                test_summary = {"test_" + k: v for k, v in test_stats.summary().items()}
                for key, value in test_summary.items():
                    logger.log(key, value, counters.t_env)
                counters.last_test_t = counters.t_env
            if counters.t_env - counters.last_log_t >= settings.log_interval:
                values = logger.flush(counters.t_env)
                values.update(test_summary)
                logger.print_summary(counters.t_env, counters.episode, values)
                counters.last_log_t = counters.t_env
            if bar is not None:
                bar.update(counters.t_env - bar.n)
                bar.set_postfix(test_win=f"{logger.latest('test_battle_won_mean'):.2f}", refresh=False)
            if settings.save_model and (
                not counters.saved_once or counters.t_env - counters.last_save_t >= settings.save_model_interval
            ):
                save("periodic")
            if stop.requested:
                save("interrupted")
                raise KeyboardInterrupt
    if settings.save_model:
        save("final")
    if bar is not None:
        bar.close()
    parts.env.close()
    log.info("finished %d environment steps in %.1f s", counters.t_env, time.time() - started)
    return test_summary
