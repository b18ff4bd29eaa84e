"""Mask ablations: sweeps of one-option variants of the standard mask, and their report.

    qmixlab ablate examples/ablations_smacsim.yaml [--out DIR] [--workers N] [--backend local|ray]
                   [--address ADDR] [--retry-failed] [--dry-run]
    qmixlab report results/ablations/<name> [--metric test_battle_won_mean] [--out report.md]

``sweep`` reads sweep files and presets (``config/ablations/*.yaml``) and expands them into runs,
``execution`` runs them (claims, status files, local pool or Ray), ``stats`` holds the rliable
statistics and ``report`` writes the report. ``main`` is the command line.
"""

from qmixlab.ablations.cli import main

__all__ = ["main"]
