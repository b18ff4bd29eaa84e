"""The merged configuration is validated once, naming bad keys and suggesting close matches."""

import pytest

from qmixlab import settings
from qmixlab.settings import ConfigError, compose_config, deep_merge, validate_config


def composed(**updates):
    config = compose_config("qmix", "smacsim")
    config["seed"] = 1
    return deep_merge(config, updates)


@pytest.mark.parametrize("alg", settings.available("algs"))
def test_every_shipped_algorithm_validates(alg):
    config = compose_config(alg, "smacsim")
    config["seed"] = 0
    run = validate_config(config)
    assert run.alg == alg and run.env == "smacsim"


def test_shipped_algorithms_have_their_documented_values():
    pymarl2 = validate_config(dict(compose_config("qmix_pymarl2", "smacsim"), seed=0))
    assert pymarl2.learner.optimiser == "adam" and pymarl2.learner.td_lambda == 0.6
    assert pymarl2.batch_size == 128 and pymarl2.batch_size_run == 8
    iql = validate_config(dict(compose_config("iql", "smacsim"), seed=0))
    assert iql.mixer.name == "none" and iql.masks.normalisation == "valid_agent_steps"
    qmix = validate_config(dict(compose_config("qmix", "smacsim"), seed=0))
    assert qmix.learner.optimiser == "adam" and qmix.masks.timeout == "bootstrap"
    pymarl = validate_config(dict(compose_config("qmix_pymarl", "smacsim"), seed=0))
    assert pymarl.learner.optimiser == "rmsprop" and pymarl.learner.td_lambda == 0.0
    assert pymarl.batch_size == 32 and pymarl.batch_size_run == 1


@pytest.mark.parametrize(
    "updates, message",
    [
        ({"t_maxx": 5}, "unknown config key 't_maxx'; did you mean 't_max'?"),
        ({"lr": 0.1}, "unknown config key 'lr'; did you mean 'learner.lr=0.1'? ('lr' is PyMARL's name)"),
        ({"learner": {"gama": 0.9}}, "unknown config key 'learner.gama'; did you mean 'learner.gamma'?"),
        ({"masks": {"timeout": "terminl"}}, "masks.timeout='terminl'"),
        ({"mixer": {"name": "qmx"}}, "did you mean 'qmix'"),
        ({"t_max": "long"}, "t_max='long' must be an integer"),
        ({"save_model": "yes"}, "save_model='yes' must be true or false"),
        ({"learner": {"gamma": 1.5}}, "learner.gamma=1.5"),
        ({"batch_size": 64, "buffer_size": 32}, "buffer_size=32 is smaller than batch_size=64"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"buffer": {"obs_dtype": "float8"}}, "buffer.obs_dtype='float8'"),
    ],
)
def test_bad_configs_fail_naming_the_key(updates, message):
    with pytest.raises(ConfigError) as error:
        validate_config(composed(**updates))
    assert message in str(error.value)


def test_integral_floats_from_the_command_line_are_integers():
    assert validate_config(composed(t_max=2e6)).t_max == 2_000_000
    with pytest.raises(ConfigError, match="t_max=2.5"):
        validate_config(composed(t_max=2.5))


def test_unknown_algorithm_and_environment_names():
    with pytest.raises(ConfigError, match="unknown algs 'qmx'.*did you mean 'qmix'"):
        compose_config("qmx", "smacsim")
    with pytest.raises(ConfigError, match="unknown envs 'smacism'.*did you mean 'smacsim'"):
        compose_config("qmix", "smacism")
    # A user environment class has no YAML of its own; its module must import.
    user = compose_config("qmix", "qmixlab.envs.smacsim.env:SMACSim")
    assert user["env"] == "qmixlab.envs.smacsim.env:SMACSim" and "map_name" in user["env_args"]
    with pytest.raises(ConfigError, match="cannot import module 'tests.nowhere'"):
        compose_config("qmix", "tests.nowhere:TinyEnv")


def test_masks_are_one_section_and_the_learner_has_none():
    run = validate_config(composed(masks={"timeout": "terminal", "masked_rows": "drop"}))
    assert run.masks.timeout == "terminal" and run.masks.masked_rows == "drop"
    assert not hasattr(run.learner, "masks")
    with pytest.raises(ConfigError, match="unknown config key 'learner.masks'"):
        validate_config(composed(learner={"masks": {}}))


def _schema_defaults(cls):
    import dataclasses

    values = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        values[f.name] = _schema_defaults(type(default)) if dataclasses.is_dataclass(default) else default
    return values


def test_default_yaml_spells_out_exactly_the_schema_defaults():
    """The schema owns every default; config/default.yaml must list each key with the same value."""
    yaml_defaults = settings.load_yaml(None, "default")
    schema = _schema_defaults(settings.RunSettings)
    schema.pop("seed")  # sacred's
    assert set(yaml_defaults) == set(schema), "keys differ between default.yaml and the schema"
    for section, value in schema.items():
        if isinstance(value, dict) and section != "env_args":
            assert set(yaml_defaults[section]) == set(value), f"keys of section {section!r} differ"
            for key, default in value.items():
                assert yaml_defaults[section][key] == default, f"{section}.{key}"
        else:
            assert yaml_defaults[section] == value, section


def test_every_shipped_yaml_key_exists_in_the_schema():
    for kind in ("algs", "envs"):
        for name in settings.available(kind):
            overrides = settings.flatten_dotted(settings.load_yaml(kind, name))
            overrides.pop("env", None)
            env = settings.load_yaml(kind, name).get("env", "smacsim")
            if env == "sc2":
                continue  # its arguments are checked against the adapter in test_sc2_adapter
            settings.validate_run("qmix" if kind == "envs" else name, env, overrides)


def _readme_pymarl_table():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = text.split("| PyMARL | qmixlab |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    import re

    table = []
    for row in rows:
        left, right = [cell.strip() for cell in row.strip("|").split("|")]
        table.append((re.findall(r"`([^`]+)`", left), right))
    return table


def test_every_row_of_the_readme_mapping_table_is_answered_with_its_new_name():
    import re

    table = _readme_pymarl_table()
    assert len(table) >= 6
    checked = 0
    for keys, right in table:
        if right == "same":
            for key in keys:  # accepted as they are
                assert key in settings.RunSettings.__dataclass_fields__, key
            continue
        names = re.findall(r"`([^`]+)`", right)
        for index, key in enumerate(keys):
            if len(names) == len(keys):
                expected = names[index]
            elif "<same>" in names[-1] and (index > 0 or len(names) == 1):
                expected = names[-1].replace("<same>", key)
            else:
                expected = names[0]
            with pytest.raises(ConfigError) as error:
                validate_config(composed(**{key: 1}))
            message = str(error.value)
            assert f"unknown config key {key!r}" in message or f"{key} is a section" in message, message
            assert expected.split("=")[0] in message, (key, expected, message)
            checked += 1
    assert checked >= 15


@pytest.mark.parametrize("key, value, answer", [
    ("target_update_interval", 200, "'learner.target_update_interval_episodes=200'"),
    ("map_name", "3m", "'env_args.map_name=3m'"),
    ("epsilon_start", 1.0, "'epsilon.start=1.0'"),
    ("rnn_hidden_dim", 64, "'agent.hidden_dim=64'"),
    ("epsilon_anneal_time", 50000, "'epsilon.anneal_time=50000'"),
    ("use_cuda", True, "'device=cuda'"),
    ("obs_agent_id", True, "'agent.use_agent_id=True'"),
    ("mixer", "vdn", "'mixer.name=vdn'"),
])
def test_pymarl_flat_keys_get_their_qmixlab_names(key, value, answer):
    with pytest.raises(ConfigError) as error:
        validate_config(composed(**{key: value}))
    assert answer in str(error.value)


def test_dead_agents_loss_mask_with_a_mixer_fails_at_validation():
    with pytest.raises(ConfigError, match="masks.dead_agents='agent_loss_mask'.*mixer.name=none"):
        validate_config(composed(masks={"dead_agents": "agent_loss_mask"}))
    run = validate_config(composed(masks={"dead_agents": "agent_loss_mask"}, mixer={"name": "none"}))
    assert run.masks.dead_agents == "agent_loss_mask"


def test_cuda_device_without_cuda_fails_at_validation():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path cannot be shown here")
    with pytest.raises(ConfigError, match="device='cuda' but this torch build .* sees no CUDA device"):
        validate_config(composed(device="cuda"))


def test_environment_arguments_are_composed_and_checked():
    config = compose_config("qmix", "smacsim")
    assert config["env_args"]["flag_invalid_steps"] is False  # every argument smacsim takes
    assert validate_run_ok({"env_args.flag_invalid_steps": True}).env_args["flag_invalid_steps"] is True
    with pytest.raises(ConfigError, match="flag_invalid_step.*did you mean 'flag_invalid_steps'"):
        settings.validate_run("qmix", "smacsim", {"env_args.flag_invalid_step": True})
    with pytest.raises(ConfigError, match="3mm.*did you mean '3m'"):
        settings.validate_run("qmix", "smacsim", {"env_args.map_name": "3mm"})


def validate_run_ok(overrides):
    return settings.validate_run("qmix", "smacsim", overrides)


def test_settings_and_the_cli_help_import_no_torch():
    import subprocess
    import sys

    code = ("import sys, qmixlab.settings, qmixlab.ablations.stats, qmixlab.experiment;"
            "qmixlab.settings.validate_run('qmix', 'smacsim', {});"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    help_code = ("import sys, contextlib, io\n"
                 "from qmixlab.__main__ import main\n"
                 "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
                 "    try:\n        main(['qmixlab', '--help'])\n    except SystemExit:\n        pass\n"
                 "assert 'Usage' in out.getvalue(), out.getvalue()\n"
                 "assert 'torch' not in sys.modules, 'qmixlab --help imported torch'")
    subprocess.run([sys.executable, "-c", help_code], check=True)


def test_the_task_names_smac_maps_mpe_tasks_and_gym_ids():
    assert validate_run_ok({"env_args.map_name": "2s3z"}).task == "2s3z"
    assert settings.validate_run("qmix", "mpe", {}).task == "simple_spread_v3"
    assert settings.validate_run("qmix", "lbf", {}).task == "Foraging-8x8-2p-3f-v3"


def test_feature_axis_options_need_the_entity_agent():
    with pytest.raises(ConfigError, match="masks.visibility='zeros' applies to agent.name=entity_attention"):
        validate_config(composed(masks={"visibility": "zeros"}))
    run = validate_config(composed(masks={"visibility": "zeros"}, agent={"name": "entity_attention"}))
    assert run.masks.visibility == "zeros"
