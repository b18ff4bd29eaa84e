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
        ({"lr": 0.1}, "unknown config key 'lr'; did you mean 'learner.lr'?"),
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
    # A user environment class has no YAML of its own.
    assert compose_config("qmix", "tests.envs:TinyEnv")["env"] == "tests.envs:TinyEnv"


def test_masks_section_reaches_the_learner_options():
    run = validate_config(composed(masks={"timeout": "terminal", "masked_rows": "drop"}))
    options = run.learner_options()
    assert options.masks.timeout == "terminal" and options.masks.masked_rows == "drop"
    with pytest.raises(ConfigError, match="unknown config key 'learner.masks'"):
        validate_config(composed(learner={"masks": {}}))
