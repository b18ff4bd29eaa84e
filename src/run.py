"""One run, from validated settings to the last gradient step.

``train`` follows PyMARL's loop: roll out ``batch_size_run`` episodes, store them, take one
training step once the buffer holds ``batch_size`` episodes, run greedy tests every
``test_interval`` environment steps, log every ``log_interval``, checkpoint every
``save_model_interval``. A checkpoint holds everything needed to continue (networks, targets,
optimiser, replay buffer, counters, pending statistics, every point logged so far, the run's
settings and every random-number state), so a resumed run on CPU reproduces the uninterrupted one
exactly and its record holds every point the uninterrupted run's has. ``LoopCounters.t_env`` is
the one count of environment steps; the runner is told it, never keeps its own.

Several seeds in one process (``seeds=[...]``, issue 16): each seed is a ``Member`` with
everything a separate run owns (its environments, replay buffer, exploration stream, counters,
logger, checkpoints), while the networks are stacked over the members
(``qmixlab.modules.stacked``) so that one call computes all of them. The loop is the same for one
member and for many: every member rolls out, trains, tests, logs and saves on its own schedule,
exactly as its separate run would; a member that finishes or fails stops alone.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from qmixlab.checkpoints import (
    CheckpointError,
    cleanup_interrupted_saves,
    find_checkpoint,
    load_checkpoint,
    load_latest_readable,
    prune_buffers,
    save_checkpoint,
)
from qmixlab.components.action_selectors import EpsilonGreedyActionSelector
from qmixlab.components.replay_buffer import ReplayBuffer, StorageOptions
from qmixlab.components.schedules import LinearSchedule
from qmixlab.controllers.agent_controller import AgentController
from qmixlab.envs import make_batched_env
from qmixlab.envs.members import MemberEnvs
from qmixlab.components.episode_batch import EpisodeBatch
from qmixlab.learners.q_learner import QLearner
from qmixlab.metrics import RunLogger
from qmixlab.modules.agents import RNNAgent
from qmixlab.modules.entities import require_obs_layout
from qmixlab.modules.entity_agent import EntityAttentionAgent
from qmixlab.modules.mixers import build_mixer
from qmixlab.runners.batch_runner import BatchRunner, EpisodeStats, episode_scheme
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


RUNNING, FINISHED, FAILED = "running", "finished", "failed"


@dataclass
class Member:
    """One seed's run inside the process: everything but the (stacked) networks."""

    index: int
    settings: RunSettings
    env: object  # this member's own batched environment
    buffer: ReplayBuffer
    generator: torch.Generator  # the exploration stream
    counters: LoopCounters = field(default_factory=LoopCounters)
    logger: Optional[RunLogger] = None
    models_dir: Optional[Path] = None
    state: str = RUNNING
    error: Optional[BaseException] = None
    test_summary: dict = field(default_factory=dict)


@dataclass
class Components:
    env: object  # the members' environments as one batched environment (member-major)
    env_info: dict
    mac: AgentController
    learner: QLearner
    runner: BatchRunner
    members: List[Member]

    @property
    def buffer(self) -> ReplayBuffer:
        """The replay buffer of a one-member run."""
        return self.members[0].buffer


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


def exploration_generator(seed: int, device) -> torch.Generator:
    """The exploration stream of the run with ``seed`` (its own, so that runs sharing a process
    draw exactly what they would draw alone)."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0]))
    return generator


def _check_env_supports(settings: RunSettings, env, spec) -> None:
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


def _build_networks(settings: RunSettings, env, spec):
    """The agent and mixer of one run (initialised from torch's global generator)."""
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
    return agent, mixer


def build_components(settings: RunSettings) -> Components:
    """Everything a run needs; with ``seeds``, one ``Member`` per seed around stacked networks.
    Each member's environment, networks and buffer are built exactly as its separate run builds
    them (same seeds, same order of random draws)."""
    set_threads(settings)
    envs, agents, mixers, members = [], [], [], []
    try:
        for k in range(settings.members):
            member = settings.member(k)
            torch.manual_seed(member.seed)
            np.random.seed(member.seed % (2**32))
            env = make_batched_env(member.env, member.batch_size_run, seed=member.seed, **member.env_args)
            envs.append(env)
            spec = env.get_spec()
            _check_env_supports(member, env, spec)
            agent, mixer = _build_networks(member, env, spec)
            agents.append(agent)
            mixers.append(mixer)
            storage = StorageOptions(
                obs_dtype=getattr(torch, member.buffer.obs_dtype),
                state_dtype=getattr(torch, member.buffer.state_dtype),
                state_last_action=_state_last_action_block(member, spec),
            )
            scheme, groups, _ = episode_scheme(spec)
            buffer = ReplayBuffer(scheme, groups, member.buffer_size, spec.episode_limit + 1,
                                  storage=storage, device="cpu", seed=member.seed)
            members.append(Member(k, member, env, buffer, exploration_generator(member.seed, member.device)))
    except BaseException:
        for env in envs:
            env.close()
        raise
    spec = envs[0].get_spec()
    epsilon = settings.epsilon
    selector = EpsilonGreedyActionSelector(LinearSchedule(epsilon.start, epsilon.finish, epsilon.anneal_time))
    if len(members) == 1:
        env, agent, mixer, generator = envs[0], agents[0], mixers[0], members[0].generator
    else:
        from qmixlab.modules.stacked import stack_members

        env = MemberEnvs(envs)
        agent = stack_members(agents)
        mixer = stack_members(mixers) if mixers[0] is not None else None
        generator = [m.generator for m in members]
    mac = AgentController(agent, selector)
    learner = QLearner(mac, mixer, spec.n_agents, settings.learner, settings.masks, device=settings.device)
    runner = BatchRunner(env, learner.mac, generator=generator)
    return Components(env, env.get_env_info(), learner.mac, learner, runner, members)


def compatibility(settings: RunSettings, env_info: dict, spec=None) -> dict:
    """What a checkpoint must share with the run that resumes it (``spec``: the environment's
    ``EnvSpec``, which records the entity agent's feature widths for evaluating elsewhere)."""
    record = {
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
    if settings.agent.name == "entity_attention" and spec is not None and spec.obs_layout is not None:
        record["entity_features"] = _entity_features(spec.obs_layout)
    return record


def _entity_features(layout) -> dict:
    """The widths the entity agent's weights depend on (not the numbers of allies or enemies)."""
    return {"move": int(layout.move), "enemy": int(layout.enemies[1]), "ally": int(layout.allies[1]),
            "own": int(layout.own)}


def evaluation_compatibility(settings: RunSettings, env_info: dict, spec) -> dict:
    """What evaluating a checkpoint's agent on this environment needs: only the agent network's
    shapes (the mixer does not act). The flat GRU agent's inputs and outputs are sized by the map;
    the entity agent's weights fit any team size with the same per-entity features (with
    ``use_agent_id``, the same number of agents)."""
    if settings.agent.name == "entity_attention":
        expected = {"entity_features": _entity_features(require_obs_layout(spec, settings.env))}
        if settings.agent.use_agent_id:
            expected["n_agents"] = int(env_info["n_agents"])
        return expected
    return {key: int(env_info[key]) for key in ("n_agents", "n_actions", "obs_shape")}


# --------------------------------------------------------------------------- random states
def _member_env_rng_state(parts: Components, member: Member):
    if isinstance(parts.env, MemberEnvs):
        return parts.env.member_rng_state(member.index)
    env = member.env
    return env.get_rng_state() if hasattr(env, "get_rng_state") else None


def _rng_state(parts: Components, member: Member) -> dict:
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "env": _member_env_rng_state(parts, member),
        "exploration": member.generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(parts: Components, member: Member, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if isinstance(parts.env, MemberEnvs):
        parts.env.set_member_rng_state(member.index, state.get("env"))
    elif state.get("env") is not None and hasattr(member.env, "set_rng_state"):
        member.env.set_rng_state(state["env"])
    if state.get("exploration") is not None:
        member.generator.set_state(state["exploration"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_payload(parts: Components, member: Member) -> dict:
    """Member's checkpoint, laid out exactly as its separate run's (its replay buffer is saved
    beside it: ``save_checkpoint(..., buffer=member.buffer.state_dict())``)."""
    return {
        "compatibility": compatibility(member.settings, parts.env_info, parts.runner.spec),
        "settings": asdict(member.settings),
        "learner": parts.learner.member_state_dict(member.index),
        "buffer": None,
        "counters": asdict(member.counters),
        "logger": member.logger.state_dict(),
        "rng": _rng_state(parts, member),
    }


def restore(parts: Components, member: Member, weights_only_for_eval=False) -> Path:
    """Load the member's ``checkpoint_path`` (the latest readable checkpoint, or ``load_step``'s)."""
    settings = member.settings
    if weights_only_for_eval:
        path = find_checkpoint(settings.checkpoint_path, settings.load_step)
        expected = evaluation_compatibility(settings, parts.env_info, parts.runner.spec)
        try:
            payload = load_checkpoint(path, expected=expected, with_buffer=False)
        except CheckpointError as error:
            if settings.agent.name == "entity_attention":
                raise
            raise CheckpointError(
                f"{error}. The flat GRU agent (agent.name=rnn) is sized by the map it was trained on; evaluate "
                "it on a map with the same numbers of agents, enemies and features, or train "
                "agent.name=entity_attention, whose weights fit any team size") from error
        try:
            parts.learner.load_agent_state_dict(member.index, payload["learner"]["mac"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this agent: {error}") from error
        return path
    expected = compatibility(settings, parts.env_info, parts.runner.spec)
    path, payload = load_latest_readable(settings.checkpoint_path, settings.load_step, expected=expected)
    try:
        parts.learner.load_member_state_dict(member.index, payload["learner"])
        if payload["buffer"] is not None:
            member.buffer.load_state_dict(payload["buffer"])
        elif payload.get("buffer_pruned"):
            log.warning("checkpoint %s no longer holds its replay buffer (buffer.checkpoints_with_buffer=%d keeps it "
                        "in the latest checkpoints only): the run continues with an empty buffer, so it will not "
                        "repeat the uninterrupted run", path, settings.buffer.checkpoints_with_buffer)
        for key, value in payload["counters"].items():
            setattr(member.counters, key, value)
        member.logger.load_state_dict(payload["logger"], replay_history=True)
        _set_rng_state(parts, member, payload["rng"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this run: {error}") from error
    return path


# --------------------------------------------------------------------------- evaluation
def run_tests(settings, parts, t_env, testing: Optional[Sequence[bool]] = None):
    """``test_nepisode`` greedy episodes (rounded up to whole rollouts) of every member marked in
    ``testing`` (default all), as one ``EpisodeStats`` per member (None for the others, and for
    everyone when ``test_nepisode`` is 0)."""
    K = len(parts.members)
    testing = [True] * K if testing is None else list(testing)
    if settings.test_nepisode == 0 or not any(testing):
        return [None] * K
    rounds = math.ceil(settings.test_nepisode / settings.batch_size_run)
    played = []
    with single_threaded():
        for _ in range(rounds):
            if K == 1:
                played.append(parts.runner.run(test_mode=True, t_env=t_env[0])[1])
            else:
                played.append(parts.runner.run(test_mode=True, t_env=list(t_env), members=np.array(testing))[1])
    n = settings.batch_size_run
    return [EpisodeStats.concatenate([stats.select(slice(k * n, (k + 1) * n)) for stats in played])
            if testing[k] else None for k in range(K)]


def evaluate(settings: RunSettings, logger: RunLogger) -> dict:
    parts = build_components(settings)
    member = parts.members[0]
    member.logger = logger
    if not settings.checkpoint_path:
        log.warning("evaluate=True without checkpoint_path: evaluating an untrained network")
    else:
        path = restore(parts, member, weights_only_for_eval=True)
        log.info("evaluating %s", path)
    (stats,) = run_tests(settings, parts, t_env=[0])
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
    (member,) = train_members(settings, [logger], [models_dir])
    return member.test_summary


def train_members(settings: RunSettings, loggers: Sequence[RunLogger],
                  models_dirs: Sequence[Optional[Path]], on_member_done=None) -> List[Member]:
    """Train every member (one per seed; ``loggers`` and ``models_dirs`` per member) until its
    ``t_max``; returns the members, each ``finished`` or ``failed`` (its ``error`` says why),
    and calls ``on_member_done(member)`` as each one stops. A one-member run raises its error
    instead. A stop request (SIGINT/SIGTERM) saves every running member and raises
    ``RunInterrupted``."""
    parts = build_components(settings)
    members = parts.members
    K = len(members)
    for member, logger, models_dir in zip(members, loggers, models_dirs, strict=True):
        member.logger, member.models_dir = logger, models_dir
        member.counters = LoopCounters(last_test_t=-settings.test_interval - 1)
        if models_dir is not None and Path(models_dir).is_dir():
            for leftover in cleanup_interrupted_saves(models_dir):
                log.warning("removed %s, left by a save that was killed", leftover)
        if member.settings.checkpoint_path:
            path = restore(parts, member)
            log.info("%sresumed from %s at t_env=%d", _who(member, K), path, member.counters.t_env)
    runner, learner = parts.runner, parts.learner
    schedule = learner.mac.action_selector.schedule
    n = settings.batch_size_run
    bar = _progress_bar(settings, min(m.counters.t_env for m in members))
    started = time.time()

    def save(member: Member, reason: str) -> Optional[Path]:
        if member.models_dir is None:
            return None
        counters = member.counters
        # Set before the payload is built, so that a resumed run keeps the uninterrupted run's
        # schedule; only periodic saves move it (an interrupted save falls between them).
        if reason == "periodic":
            counters.last_save_t = counters.t_env
        counters.saved_once = True
        buffer = member.buffer.state_dict() if settings.buffer.save_in_checkpoint else None
        folder = save_checkpoint(member.models_dir, counters.t_env, checkpoint_payload(parts, member), buffer=buffer)
        prune_buffers(member.models_dir, settings.buffer.checkpoints_with_buffer)
        log.info("%ssaved checkpoint %s (%s)", _who(member, K), folder, reason)
        return folder

    def fail(member: Member, error: BaseException) -> None:
        if K == 1:
            raise error
        member.state, member.error = FAILED, error
        log.error("%s%s; the other members go on", _who(member, K), error)
        if on_member_done is not None:
            on_member_done(member)

    try:
        with _StopRequest(saving=any(m.models_dir is not None for m in members)) as stop:
            while True:
                for member in members:
                    if member.state == RUNNING and member.counters.t_env > settings.t_max:
                        if settings.save_model:
                            save(member, "final")
                        member.state = FINISHED
                        if on_member_done is not None:
                            on_member_done(member)
                running = [m.state == RUNNING for m in members]
                if not any(running):
                    break
                playing = [m for m in members if m.state == RUNNING]
                t_envs = [m.counters.t_env for m in members]
                with single_threaded():
                    batch, stats = runner.run(test_mode=False, t_env=t_envs[0] if K == 1 else t_envs,
                                              members=None if K == 1 else np.array(running))
                for member in playing:
                    rows = slice(member.index * n, (member.index + 1) * n)
                    member_stats = stats.select(rows)
                    member.buffer.insert_episode_batch(batch if K == 1 else batch[rows])
                    member.logger.accumulate(member_stats.summary(), weight=len(member_stats.returns))
                    member.logger.accumulate({"epsilon": float(schedule(member.counters.t_env))})
                    member.counters.t_env += int(member_stats.lengths.sum())
                # Members train when their own buffer can sample: a resumed group's members may be
                # at different episode counts. One that does not train (finished, failed or not
                # enough episodes yet) fills its rows of the stacked call with a copy of a training
                # member's sample, draws nothing from its own buffer, and is left out of the step.
                can_train = [m.state == RUNNING and m.buffer.can_sample(settings.batch_size) for m in members]
                if any(can_train):
                    drawn = {m.index: m.buffer.sample(settings.batch_size) for m in members if can_train[m.index]}
                    filler = drawn[min(drawn)]
                    samples = [drawn.get(m.index, filler) for m in members]
                    if K == 1:
                        train_stats = [learner.train(samples[0], playing[0].counters.t_env, playing[0].counters.episode)]
                    else:
                        train_stats = learner.train(EpisodeBatch.concatenate(samples), playing[0].counters.t_env,
                                                    [m.counters.episode for m in members], active=can_train)
                    for member in (m for m in playing if can_train[m.index]):
                        member_train = train_stats[member.index]
                        if not math.isfinite(member_train["loss"]):
                            fail(member, NonFiniteLossError(
                                f"non-finite loss {member_train['loss']} at t_env={member.counters.t_env}: "
                                "training stopped; the last good checkpoint is kept"))
                        else:
                            member.logger.accumulate(member_train)
                playing = [m for m in playing if m.state == RUNNING]
                for member in playing:
                    member.counters.episode += n

                testing = [m.state == RUNNING and
                           (m.counters.t_env - m.counters.last_test_t) / settings.test_interval >= 1.0
                           for m in members]
                logged = [False] * K
                if any(testing):
                    results = run_tests(settings, parts, [m.counters.t_env for m in members], testing)
                    for member, test_stats in zip(members, results):
                        if not testing[member.index]:
                            continue
                        if test_stats is not None:
                            member.test_summary = {"test_" + k: v for k, v in test_stats.summary().items()}
                            for key, value in member.test_summary.items():
                                member.logger.log(key, value, member.counters.t_env)
                            logged[member.index] = True
                        member.counters.last_test_t = member.counters.t_env
                for member in playing:
                    counters, logger = member.counters, member.logger
                    if counters.t_env - counters.last_log_t >= settings.log_interval:
                        values = logger.flush(counters.t_env)
                        values.update(member.test_summary)
                        logger.print_summary(counters.t_env, counters.episode, values)
                        counters.last_log_t = counters.t_env
                        logged[member.index] = True
                    if logged[member.index]:
                        logger.persist()  # a kill now loses no logged point
                if bar is not None:
                    bar.update(min(m.counters.t_env for m in playing or members) - bar.n)
                    bar.set_postfix(test_win=f"{members[0].logger.latest('test_battle_won_mean'):.2f}",
                                    refresh=False)
                for member in playing:
                    counters = member.counters
                    if settings.save_model and (
                        not counters.saved_once or counters.t_env - counters.last_save_t >= settings.save_model_interval
                    ):
                        save(member, "periodic")
                if stop.requested:
                    _stop(settings, members, stop.signal, save)
    finally:
        if bar is not None:
            bar.close()
        parts.env.close()
    log.info("finished %s environment steps in %.1f s",
             "/".join(str(m.counters.t_env) for m in members), time.time() - started)
    return members


def _who(member: Member, members: int) -> str:
    """The log prefix naming a member (nothing for a one-member run)."""
    return "" if members == 1 else f"[seed {member.settings.seed}] "


def _stop(settings, members: List[Member], signum: int, save) -> None:
    """Save every running member and raise ``RunInterrupted``."""
    name = signal.Signals(signum).name
    folders = [save(m, "interrupted") if settings.save_model else None for m in members if m.state == RUNNING]
    t_env = "/".join(str(m.counters.t_env) for m in members if m.state == RUNNING)
    if not any(folders):
        message = f"{name}: stopped at t_env={t_env} (save_model=False: nothing saved)"
    elif len(folders) == 1:
        message = (f"{name}: stopped at t_env={t_env}; checkpoint {folders[0]}; resume with: "
                   f"qmixlab with checkpoint_path={folders[0].parent}")
    else:
        paths = ",".join(str(folder.parent) for folder in folders)
        message = (f"{name}: stopped at t_env={t_env}; checkpoints saved; resume the members with: "
                   f"qmixlab with checkpoint_path=[{paths}]")
    raise RunInterrupted(message, 128 + signum)
