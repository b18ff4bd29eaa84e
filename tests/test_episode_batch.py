"""EpisodeBatch: scheme, writes, preprocess, slicing and bookkeeping, against plain references."""

import numpy as np
import pytest
import torch

from qmixlab.components.episode_batch import EpisodeBatch, OneHot

N_AGENTS, N_ACTIONS, B, T = 3, 9, 8, 61


def make_scheme():
    return {
        "state": {"vshape": (48,)},
        "obs": {"vshape": (30,), "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "avail_actions": {"vshape": (N_ACTIONS,), "group": "agents", "dtype": torch.bool},
        "reward": {"vshape": (1,)},
        "terminated": {"vshape": (1,), "dtype": torch.bool},
        "timeout": {"vshape": (1,), "dtype": torch.bool},
        "invalid": {"vshape": (1,), "dtype": torch.bool},
        "map_id": {"vshape": (1,), "dtype": torch.long, "episode_const": True},
    }


def make_batch(batch_size=B, max_seq_length=T):
    return EpisodeBatch(
        make_scheme(), {"agents": N_AGENTS}, batch_size, max_seq_length,
        preprocess={"actions": ("actions_onehot", [OneHot(out_dim=N_ACTIONS)])},
    )


def fill_random(batch, lengths, seed=0):
    """Write every transition field at t < lengths[b] for each episode b, one row at a time."""
    rng = np.random.default_rng(seed)
    for b, length in enumerate(lengths):
        for t in range(length):
            batch.update(
                {
                    "obs": rng.standard_normal((N_AGENTS, 30)).astype(np.float32),
                    "state": rng.standard_normal(48),
                    "avail_actions": np.ones((N_AGENTS, N_ACTIONS), dtype=bool),
                    "actions": rng.integers(0, N_ACTIONS, size=(N_AGENTS, 1)),
                    "reward": [float(rng.standard_normal())],
                    "terminated": [t == length - 1],
                },
                bs=b, ts=t,
            )
        batch.update({"map_id": [b * 10]}, bs=b)


def test_scheme_shapes_and_dtypes():
    batch = make_batch()
    expected = {
        "state": ((B, T, 48), torch.float32),
        "obs": ((B, T, N_AGENTS, 30), torch.float32),
        "actions": ((B, T, N_AGENTS, 1), torch.long),
        "avail_actions": ((B, T, N_AGENTS, N_ACTIONS), torch.bool),
        "reward": ((B, T, 1), torch.float32),
        "terminated": ((B, T, 1), torch.bool),
        "timeout": ((B, T, 1), torch.bool),
        "invalid": ((B, T, 1), torch.bool),
        "filled": ((B, T, 1), torch.bool),
        "actions_onehot": ((B, T, N_AGENTS, N_ACTIONS), torch.float32),
        "map_id": ((B, 1), torch.long),
    }
    for name, (shape, dtype) in expected.items():
        assert tuple(batch[name].shape) == shape, name
        assert batch[name].dtype == dtype, name
        assert not batch[name].any(), f"{name} must start zeroed"
    assert batch.batch_size == B and batch.max_seq_length == T
    assert batch.groups == {"agents": N_AGENTS}
    assert batch.scheme["actions_onehot"] == {"vshape": (N_ACTIONS,), "dtype": torch.float32, "group": "agents"}
    assert batch.scheme["filled"] == {"vshape": (1,), "dtype": torch.bool}
    assert batch.scheme["map_id"]["episode_const"] is True
    assert batch.device == torch.device("cpu")


def test_int_vshape_is_a_tuple():
    batch = EpisodeBatch({"x": {"vshape": 4}}, {}, 2, 3)
    assert tuple(batch["x"].shape) == (2, 3, 4)


@pytest.mark.parametrize(
    "scheme, groups, match",
    [
        ({"x": {"vshape": (2,), "shape": 3}}, {}, "unknown keys"),
        ({"x": {"vshape": (2,), "group": "enemies"}}, {"agents": 2}, "unknown group 'enemies'"),
        ({"filled": {"vshape": (1,)}}, {}, "reserved"),
        ({"x": {"vshape": (0,)}}, {}, "positive"),
        ({"x": {"vshape": (2,)}}, {"agents": 0}, "positive"),
    ],
)
def test_scheme_validation(scheme, groups, match):
    with pytest.raises(ValueError, match=match):
        EpisodeBatch(scheme, groups, 2, 3)


def test_filled_marking():
    batch = make_batch()
    batch.update({"obs": torch.ones(2, N_AGENTS, 30)}, bs=[1, 4], ts=3)
    reference = torch.zeros(B, T, 1, dtype=torch.bool)
    reference[1, 3] = reference[4, 3] = True
    assert torch.equal(batch["filled"], reference)

    batch.update({"reward": torch.ones(B, 2, 1)}, ts=slice(10, 12), mark_filled=False)
    assert torch.equal(batch["filled"], reference)

    batch.update({"map_id": torch.full((B, 1), 7)})  # episode constants do not mark rows
    assert torch.equal(batch["filled"], reference)

    batch.update({"terminated": [True]}, bs=0, ts=5)
    reference[0, 5] = True
    assert torch.equal(batch["filled"], reference)

    # Writing filled explicitly overrides the automatic marking.
    batch.update({"obs": torch.ones(N_AGENTS, 30), "filled": [False]}, bs=0, ts=6)
    assert torch.equal(batch["filled"], reference)


def test_preprocess_one_hot_matches_reference():
    batch = make_batch()
    actions = torch.randint(0, N_ACTIONS, (B, N_AGENTS))
    batch.update({"actions": actions}, ts=2)  # [B, n_agents] for vshape (1,)
    reference = torch.zeros(B, T, N_AGENTS, N_ACTIONS)
    for b in range(B):
        for a in range(N_AGENTS):
            reference[b, 2, a, int(actions[b, a])] = 1.0
    assert torch.equal(batch["actions_onehot"], reference)
    assert torch.equal(batch["actions"][:, 2, :, 0], actions)


def test_one_hot_out_of_range_raises_and_direct_write_is_rejected():
    batch = make_batch()
    with pytest.raises(ValueError, match=r"OneHot\(out_dim=9\) got index 9"):
        batch.update({"actions": torch.full((B, N_AGENTS), N_ACTIONS)}, ts=0)
    with pytest.raises(ValueError, match=r"OneHot\(out_dim=9\) got index -1"):
        batch.update({"actions": torch.full((B, N_AGENTS), -1)}, ts=0)
    with pytest.raises(ValueError, match="write 'actions' instead"):
        batch.update({"actions_onehot": torch.zeros(B, N_AGENTS, N_ACTIONS)}, ts=0)
    assert not batch["filled"].any() and not batch["actions"].any()


def test_slicing_equals_manual_indexing():
    batch = make_batch()
    fill_random(batch, [5, 12, 0, 7, 61, 1, 30, 2])
    selections = [
        ((slice(None), slice(None, 20)), (slice(None), slice(None, 20))),
        ((slice(2, 5), slice(3, 7)), (slice(2, 5), slice(3, 7))),
        ((3,), (slice(3, 4), slice(None))),
        ((-1, 4), (slice(7, 8), slice(4, 5))),
        (([0, 2, 5], slice(1, 9)), ([0, 2, 5], slice(1, 9))),
        ((torch.tensor([6, 1]), [0, 3, 4]), ([6, 1], [0, 3, 4])),
        ((torch.arange(B) % 2 == 0,), ([0, 2, 4, 6], slice(None))),
    ]
    for index, (bs, ts) in selections:
        sub = batch[index if len(index) > 1 else index[0]]
        assert isinstance(sub, EpisodeBatch)
        for name in batch.scheme:
            full = batch[name]
            if name == "map_id":
                expected = torch.stack([full[b] for b in np.arange(B)[bs].reshape(-1)])
            else:
                rows = np.arange(B)[bs].reshape(-1)
                steps = np.arange(T)[ts].reshape(-1)
                expected = torch.stack([torch.stack([full[b, t] for t in steps]) for b in rows])
            assert torch.equal(sub[name], expected), (index, name)
        assert sub.batch_size == sub["filled"].shape[0]
        assert sub.max_seq_length == sub["filled"].shape[1]


def test_slices_are_views_and_updates_apply_preprocess():
    batch = make_batch()
    sub = batch[2:5, 3:7]
    sub.update({"actions": torch.full((3, N_AGENTS), 4)}, ts=1)
    assert (batch["actions"][2:5, 4] == 4).all()
    assert (batch["actions_onehot"][2:5, 4, :, 4] == 1).all()
    assert batch["filled"][2:5, 4].all() and batch["filled"].sum() == 3


def test_max_t_filled_with_different_lengths():
    batch = make_batch()
    lengths = [5, 12, 0, 7, 3, 1, 9, 2]
    fill_random(batch, lengths)
    assert batch.max_t_filled() == max(lengths)
    assert batch[[0, 3, 4]].max_t_filled() == 7
    assert batch[2].max_t_filled() == 0
    assert make_batch().max_t_filled() == 0
    reference_counts = [int(batch["filled"][b].sum()) for b in range(B)]
    assert reference_counts == lengths


def test_shape_mismatch_message_names_field_and_shapes():
    batch = make_batch()
    with pytest.raises(ValueError) as err:
        batch.update({"obs": torch.zeros(B, N_AGENTS, 29)}, ts=0)
    message = str(err.value)
    assert "'obs'" in message and "(8, 3, 29)" in message and "(8, 3, 30)" in message
    with pytest.raises(ValueError, match=r"'state'.*\(7, 48\).*\(8, 48\)"):
        batch.update({"state": np.zeros((7, 48))}, ts=0)
    with pytest.raises(ValueError, match=r"'obs'.*\(3, 30\).*\(8, 3, 30\)"):
        batch.update({"obs": np.zeros((N_AGENTS, 30))}, ts=0)  # missing batch dim with bs a slice
    assert not batch["filled"].any()


def test_accepted_shape_variants():
    batch = make_batch()
    batch.update({"actions": torch.ones(B, N_AGENTS, 1, dtype=torch.long)}, ts=0)
    batch.update({"actions": torch.ones(B, N_AGENTS, dtype=torch.long) * 2}, ts=1)
    batch.update({"obs": np.ones((N_AGENTS, 30))}, bs=3, ts=2)         # no batch dim, bs int
    batch.update({"obs": np.ones((1, N_AGENTS, 30)) * 2}, bs=4, ts=2)  # batch dim of 1, bs int
    batch.update({"reward": 1.5}, bs=0, ts=4)                           # scalar for vshape (1,)
    batch.update({"state": torch.ones(B, 2, 48)}, ts=slice(5, 7))
    assert (batch["actions"][:, 0] == 1).all() and (batch["actions"][:, 1] == 2).all()
    assert (batch["obs"][3, 2] == 1).all() and (batch["obs"][4, 2] == 2).all()
    assert batch["reward"][0, 4, 0] == 1.5
    assert batch["state"][:, 5:7].all()


def test_unknown_field_raises_key_error():
    batch = make_batch()
    with pytest.raises(KeyError) as err:
        batch.update({"obz": np.zeros((B, N_AGENTS, 30))}, ts=0)
    assert "'obz'" in str(err.value) and "obs" in str(err.value) and "state" in str(err.value)
    with pytest.raises(KeyError, match="obz"):
        batch["obz"]


def test_conversion_is_checked_and_detached():
    batch = make_batch()
    batch.update({"obs": np.full((B, N_AGENTS, 30), 0.5, dtype=np.float64)}, ts=0)
    assert batch["obs"].dtype == torch.float32 and (batch["obs"][:, 0] == 0.5).all()
    batch.update({"terminated": np.array([[1.0]] * B)}, ts=0)
    assert batch["terminated"][:, 0].all()
    batch.update({"actions": np.full((B, N_AGENTS), 3.0)}, ts=0)
    assert (batch["actions"][:, 0] == 3).all()
    with pytest.raises(ValueError, match="'actions'.*integral"):
        batch.update({"actions": np.full((B, N_AGENTS), 2.5)}, ts=1)
    with pytest.raises(ValueError, match="'terminated'.*0 or 1"):
        batch.update({"terminated": np.full((B, 1), 2)}, ts=1)

    weights = torch.ones(30, requires_grad=True)
    obs = torch.ones(B, N_AGENTS, 30) * weights
    batch.update({"obs": obs}, ts=1)
    assert all(not batch[name].requires_grad for name in batch.scheme)
    assert batch["obs"].grad_fn is None


def test_failed_update_writes_nothing():
    batch = make_batch()
    with pytest.raises(ValueError):
        batch.update({"state": torch.ones(B, 48), "obs": torch.ones(B, 2, 30)}, ts=0)
    assert not batch["state"].any() and not batch["filled"].any()


def test_episode_constants():
    batch = make_batch()
    batch.update({"map_id": torch.arange(B).view(B, 1)})
    batch.update({"map_id": [42]}, bs=3, ts=5)  # ts does not apply to episode constants
    batch.update({"map_id": [7, 8]}, bs=[0, 1])
    assert batch["map_id"].tolist() == [[7], [8], [2], [42], [4], [5], [6], [7]]
    assert not batch["filled"].any()
    sub = batch[2:4, 10:20]
    assert sub["map_id"].tolist() == [[2], [42]] and tuple(sub["map_id"].shape) == (2, 1)
    assert batch[[5, 0]]["map_id"].tolist() == [[5], [7]]


def test_index_errors():
    batch = make_batch()
    with pytest.raises(IndexError):
        batch[B]
    with pytest.raises(IndexError):
        batch.update({"reward": 1.0}, bs=0, ts=T)
    with pytest.raises(IndexError):
        batch[:, 5:5]


def test_to_moves_every_tensor():
    batch = make_batch()
    fill_random(batch, [3] * B)
    assert batch.to("cpu") is batch and batch.device == torch.device("cpu")
    batch.to("meta")  # a second device that exists on every machine
    assert batch.device == torch.device("meta")
    for name in batch.scheme:
        assert batch[name].device == torch.device("meta"), name
    assert tuple(batch["obs"].shape) == (B, T, N_AGENTS, 30)


def test_from_tensors_validates():
    batch = make_batch(2, 4)
    transition = dict(batch.transition_data)
    episode = dict(batch.episode_data)
    prep = batch.preprocess
    rebuilt = EpisodeBatch.from_tensors(make_scheme(), batch.groups, transition, episode, prep)
    assert rebuilt["obs"].data_ptr() == transition["obs"].data_ptr()  # no copy
    transition["obs"] = transition["obs"].double()
    with pytest.raises(ValueError, match="'obs'"):
        EpisodeBatch.from_tensors(make_scheme(), batch.groups, transition, episode, prep)


def test_from_fields_wraps_without_copy_or_checks(monkeypatch):
    batch = make_batch(2, 4)
    fill_random(batch, [3, 4])
    transition, episode = dict(batch.transition_data), dict(batch.episode_data)
    from qmixlab.components import episode_batch as module

    def forbidden(*args, **kwargs):
        raise AssertionError("from_fields validated the scheme")

    monkeypatch.setattr(module, "build_fields", forbidden)
    wrapped = EpisodeBatch.from_fields(batch.fields, batch.groups, transition, episode, batch.preprocess)
    assert wrapped.batch_size == 2 and wrapped.max_seq_length == 4 and wrapped.device == batch.device
    assert wrapped.scheme == batch.scheme and wrapped.preprocess == batch.preprocess
    for name in batch.scheme:
        assert wrapped[name].data_ptr() == batch[name].data_ptr(), name
    assert EpisodeBatch.from_fields(batch.fields, batch.groups, transition, episode).preprocess == {}
