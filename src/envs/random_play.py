"""Random play: uniformly random available actions, and a controller stand-in that plays them
through the runner (the random baseline of benchmarks, the environment checker and tests). No
torch import until a controller selects actions, so that ``qmixlab.envs`` stays light."""

from __future__ import annotations

import numpy as np


def random_available_actions(rng: np.random.Generator, avail: np.ndarray) -> np.ndarray:
    """One uniformly random available action per row of ``avail [..., n_actions]`` (int64)."""
    scores = rng.random(avail.shape) + avail  # available actions score in [1, 2), others in [0, 1)
    return scores.argmax(-1).astype(np.int64)


class RandomAvailableController:
    """``select_actions`` as ``AgentController`` has it, uniform over the available actions, from
    its own generator (``seed``)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def init_hidden(self, n_envs: int) -> None:
        pass

    def select_actions(self, obs, avail_actions, t_env, test_mode=False, env_mask=None):
        import torch

        return torch.as_tensor(random_available_actions(self.rng, np.asarray(avail_actions)))
