"""``python -m qmixlab`` and the ``qmixlab`` console script."""

import sys


def main(argv=None):
    from qmixlab.experiment import main as experiment_main

    experiment_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(["qmixlab", *sys.argv[1:]]))
