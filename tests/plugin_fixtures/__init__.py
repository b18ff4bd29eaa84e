"""Fixture environments for the plug-in contract tests (importable as ``plugin_fixtures.*`` once
``tests/`` is on ``sys.path``). Each fixture has one property the contract must handle or the
conformance checker must catch; ``line_world.LineWorld`` is a small conforming env with a
learnable signal, fast enough for end-to-end training tests."""
