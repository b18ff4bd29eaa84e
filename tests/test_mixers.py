"""VDN and QMIX against slow references, QMIX's monotonicity, and build_mixer's errors."""

import math

import pytest
import torch

from qmixlab.modules.mixers import QMixer, VDNMixer, build_mixer

B, T, N, S, E, HYPER = 3, 5, 4, 6, 8, 10


def random_inputs(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(B, T, N, generator=g, dtype=dtype),
            torch.randn(B, T, S, generator=g, dtype=dtype))


def make_qmix(hypernet_layers, seed=0):
    torch.manual_seed(seed)
    mixer = build_mixer("qmix", N, S, mixing_embed_dim=E, hypernet_layers=hypernet_layers, hypernet_embed=HYPER)
    return mixer.double()


def linear(layer, x):
    """y = W x + b for one sample, with an explicit sum over inputs."""
    W, b = layer.weight, layer.bias
    return torch.stack([sum(W[o, i] * x[i] for i in range(len(x))) + b[o] for o in range(W.shape[0])])


def hypernet(net, s, layers):
    if layers == 1:
        return linear(net, s)
    return linear(net[2], torch.relu(linear(net[0], s)))


def reference_qmix(mixer, agent_qs, states, layers):
    """QMIX written out per sample: weights from the hypernetworks, then plain matrix products."""
    out = torch.empty(B, T, 1, dtype=agent_qs.dtype)
    for b in range(B):
        for t in range(T):
            s, q = states[b, t], agent_qs[b, t]
            W1 = hypernet(mixer.hyper_w_1, s, layers).abs().view(N, E)  # row i: agent i's weights
            b1 = linear(mixer.hyper_b_1, s)
            hidden = torch.stack([sum(q[i] * W1[i, e] for i in range(N)) + b1[e] for e in range(E)])
            hidden = torch.where(hidden > 0, hidden, torch.exp(hidden) - 1)  # ELU
            w2 = hypernet(mixer.hyper_w_final, s, layers).abs()
            v = linear(mixer.V[2], torch.relu(linear(mixer.V[0], s)))
            out[b, t, 0] = sum(hidden[e] * w2[e] for e in range(E)) + v[0]
    return out


def test_vdn_is_the_sum():
    agent_qs, states = random_inputs()
    mixer = build_mixer("vdn", N, S)
    assert isinstance(mixer, VDNMixer)
    expected = torch.zeros(B, T, 1, dtype=agent_qs.dtype)
    for i in range(N):
        expected[..., 0] += agent_qs[..., i]
    torch.testing.assert_close(mixer(agent_qs, states), expected)
    torch.testing.assert_close(mixer(agent_qs, None), expected)
    assert list(mixer.parameters()) == []


@pytest.mark.parametrize("layers", [1, 2])
def test_qmix_equals_per_sample_reference(layers):
    mixer = make_qmix(layers)
    agent_qs, states = random_inputs()
    got = mixer(agent_qs, states)
    assert got.shape == (B, T, 1)
    with torch.no_grad():
        torch.testing.assert_close(got, reference_qmix(mixer, agent_qs, states, layers), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layers", [1, 2])
def test_qmix_is_monotone_in_every_utility(layers):
    for seed in range(3):
        mixer = make_qmix(layers, seed)
        with torch.no_grad():  # larger weights than the default init, to make ELU's bend matter
            for p in mixer.parameters():
                p.mul_(3.0)
        agent_qs, states = random_inputs(seed)
        # autograd: d q_tot / d q_i >= 0 at every sample and agent
        agent_qs.requires_grad_(True)
        grad = torch.autograd.grad(mixer(agent_qs, states).sum(), agent_qs)[0]
        assert (grad >= 0).all()
        assert (grad > 0).any()
        # finite differences: raising one utility never lowers q_tot
        with torch.no_grad():
            base = mixer(agent_qs, states)
            for i in range(N):
                for delta in (1e-3, 0.5, 10.0):
                    raised = agent_qs.clone()
                    raised[..., i] += delta
                    assert (mixer(raised, states) - base >= -1e-12).all()


def test_mixers_accept_any_leading_dims():
    mixer = make_qmix(2)
    agent_qs, states = random_inputs()
    q_bt = mixer(agent_qs, states)
    torch.testing.assert_close(mixer(agent_qs.reshape(B * T, N), states.reshape(B * T, S)), q_bt.reshape(B * T, 1))
    torch.testing.assert_close(mixer(agent_qs[0, 0], states[0, 0]), q_bt[0, 0])
    vdn = build_mixer("vdn", N, S)
    assert vdn(agent_qs.reshape(B * T, N), None).shape == (B * T, 1)


def test_qmix_gradients_reach_every_parameter():
    mixer = make_qmix(2)
    agent_qs, states = random_inputs()
    mixer(agent_qs, states).square().sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_build_mixer_names_and_errors():
    assert build_mixer(None, N, S) is None
    assert build_mixer("none", N, S) is None
    assert isinstance(build_mixer("qmix", N, S), QMixer)
    with pytest.raises(ValueError, match=r"'qmixx'.*'vdn'.*'qmix'"):
        build_mixer("qmixx", N, S)
    with pytest.raises(ValueError, match=r"hypernet_layers.*\(1, 2\).*3"):
        build_mixer("qmix", N, S, hypernet_layers=3)
    with pytest.raises(ValueError, match="mixing_embed_dim.*0"):
        build_mixer("qmix", N, S, mixing_embed_dim=0)


def test_shape_errors_name_the_expected_size():
    mixer = make_qmix(1)
    agent_qs, states = random_inputs()
    with pytest.raises(ValueError, match=f"n_agents={N}"):
        mixer(agent_qs[..., :-1], states)
    with pytest.raises(ValueError, match=f"state_dim={S}"):
        mixer(agent_qs, states[..., :-1])
    with pytest.raises(ValueError, match="leading dims"):
        mixer(agent_qs, states[:, :-1])
    with pytest.raises(ValueError, match=f"n_agents={N}"):
        build_mixer("vdn", N, S)(agent_qs[..., :-1], states)


def test_pymarl_layout_of_the_first_layer_weights():
    """hyper_w_1's output is read as [n_agents, embed] row-major, as in PyMARL (checkpoints)."""
    mixer = make_qmix(1)
    with torch.no_grad():
        for p in mixer.parameters():
            p.zero_()
        # only agent 1 gets a weight, into embedding unit 0: q_tot = elu(q_1) * w_final[0]
        mixer.hyper_w_1.bias[1 * E + 0] = 1.0
        mixer.hyper_w_final.bias[0] = 2.0
    agent_qs, states = random_inputs()
    expected = 2.0 * torch.nn.functional.elu(agent_qs[..., 1:2])
    torch.testing.assert_close(mixer(agent_qs, states), expected)
    with torch.no_grad():
        zero = mixer(torch.zeros(N, dtype=torch.float64), torch.zeros(S, dtype=torch.float64))
    assert math.isclose(float(zero), 0.0)


def test_build_mixer_defaults_are_the_default_config():
    import inspect

    from qmixlab.settings import load_yaml

    section = load_yaml(None, "default")["mixer"]
    defaults = {name: p.default for name, p in inspect.signature(build_mixer).parameters.items()
                if p.default is not inspect.Parameter.empty}
    # What the environment tells (not a config key) defaults to "not given".
    assert {name: defaults.pop(name) for name in ("n_actions", "state_layout")} == {"n_actions": None,
                                                                                  "state_layout": None}
    assert defaults == {key: value for key, value in section.items() if key != "name"}
    from qmixlab.modules.mixers import AttentionMixer, QPLEXMixer

    for mixer_class in (QMixer, AttentionMixer, QPLEXMixer):
        class_defaults = {name: p.default for name, p in inspect.signature(mixer_class).parameters.items()
                          if p.default is not inspect.Parameter.empty}
        assert class_defaults and class_defaults == {name: defaults[name] for name in class_defaults}
