"""Mask ablations: sweeps of one-option variants of the standard mask, and their report.

    qmixlab ablate examples/ablations_smacsim.yaml [--out DIR] [--append] [--workers N]
                   [--seeds-per-process N] [--backend local|ray] [--address ADDR]
                   [--retry-failed] [--dry-run]
    qmixlab report results/ablations/<name> [--metric test_battle_won_mean] [--out report.md]
    qmixlab report results/ablations/masks-smacsim    # a folder of sweeps: one report per sweep

``ablate`` validates every run's configuration before starting any, never adds runs to a folder
of kept results (tracked by git, or with a README.md) without ``--append``, and stops cleanly on
Ctrl-C or SIGTERM (running runs marked interrupted; the same command resumes). Runs that differ
only in their seed train together, up to ``seeds_per_process`` (default 5) in one process.

``sweep`` reads sweep files and presets (``config/ablations/*.yaml``) and expands them into runs,
``execution`` runs them (claims, status files, local pool or Ray), ``stats`` holds the rliable
statistics and ``report`` writes the report. ``main`` is the command line.
"""

from qmixlab.ablations.cli import main

__all__ = ["main"]
