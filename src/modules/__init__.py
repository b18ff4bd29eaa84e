"""Networks: the recurrent agent and the mixers."""

from qmixlab.modules.agents import RNNAgent
from qmixlab.modules.gru import gru_sequence
from qmixlab.modules.mixers import MIXER_NAMES, QMixer, VDNMixer, build_mixer

__all__ = ["RNNAgent", "gru_sequence", "QMixer", "VDNMixer", "build_mixer", "MIXER_NAMES"]
