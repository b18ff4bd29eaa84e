"""YAML configuration files shipped with qmixlab (read with importlib.resources)."""
