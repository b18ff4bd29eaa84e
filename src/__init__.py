"""qmixlab: QMIX-style recurrent off-policy multi-agent reinforcement learning."""

__version__ = "0.1.0"
