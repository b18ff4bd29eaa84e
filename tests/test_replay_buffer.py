"""ReplayBuffer: ring semantics, sampling, checkpoints and the compact storage layout."""

import io

import pytest
import torch

from qmixlab.components.episode_batch import EpisodeBatch, OneHot
from qmixlab.components.replay_buffer import ReplayBuffer, StorageOptions

# A 3m-like scheme: state = 21 unit features + the 3*9 last-action block.
N_AGENTS, N_ACTIONS, OBS_DIM, UNIT_DIM, T = 3, 9, 30, 21, 16
STATE_DIM = UNIT_DIM + N_AGENTS * N_ACTIONS
SCHEME = {
    "state": {"vshape": (STATE_DIM,)},
    "obs": {"vshape": (OBS_DIM,), "group": "agents"},
    "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
    "avail_actions": {"vshape": (N_ACTIONS,), "group": "agents", "dtype": torch.bool},
    "reward": {"vshape": (1,)},
    "terminated": {"vshape": (1,), "dtype": torch.bool},
    "timeout": {"vshape": (1,), "dtype": torch.bool},
    "invalid": {"vshape": (1,), "dtype": torch.bool},
    "episode_id": {"vshape": (1,), "dtype": torch.long, "episode_const": True},
}
GROUPS = {"agents": N_AGENTS}
PREPROCESS = {"actions": ("actions_onehot", [OneHot(out_dim=N_ACTIONS)])}
EXACT = StorageOptions.full_precision()


def run_episodes(lengths, first_id=0, seed=0, max_seq_length=T):
    """Write episodes the way the runner does: rows 0..L-1 carry an action, row L holds the
    final obs/state (filled, no action); the state ends with the previous joint action."""
    gen = torch.Generator().manual_seed(seed)
    batch = EpisodeBatch(SCHEME, GROUPS, len(lengths), max_seq_length, PREPROCESS)
    for b, length in enumerate(lengths):
        last_action = torch.zeros(N_AGENTS, N_ACTIONS)
        for t in range(length + 1):
            avail = torch.rand(N_AGENTS, N_ACTIONS, generator=gen) < 0.5
            avail[:, 1] = True
            state = torch.cat([torch.randn(UNIT_DIM, generator=gen), last_action.flatten()])
            obs = torch.randn(N_AGENTS, OBS_DIM, generator=gen)
            batch.update({"obs": obs, "state": state, "avail_actions": avail}, bs=b, ts=t)
            if t == length:
                break
            scores = torch.where(avail, torch.rand(avail.shape, generator=gen), torch.tensor(-1.0))
            actions = scores.argmax(-1)
            batch.update(
                {"actions": actions.unsqueeze(-1), "reward": [float(torch.randn(1, generator=gen))],
                 "terminated": [t == length - 1], "invalid": [t == 2]},
                bs=b, ts=t,
            )
            last_action = torch.nn.functional.one_hot(actions, N_ACTIONS).float()
        batch.update({"episode_id": [first_id + b]}, bs=b)
    return batch


def make_buffer(size=6, storage=None, seed=0, max_seq_length=T):
    return ReplayBuffer(SCHEME, GROUPS, size, max_seq_length, PREPROCESS, storage=storage, seed=seed)


def episodes_by_id(batch):
    return {int(batch["episode_id"][b, 0]): batch[b] for b in range(batch.batch_size)}


def assert_same_episode(got, want, exact=True):
    for name in want.scheme:
        a, b = got[name], want[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if exact or not a.is_floating_point():
            assert torch.equal(a, b), name
        else:
            assert torch.allclose(a, b, rtol=2**-10, atol=1e-6), name


def test_wrap_around_matches_reference_ring():
    capacity = 5
    buffer = make_buffer(capacity, storage=EXACT)
    reference_slots, position, originals, next_id = [None] * capacity, 0, {}, 0
    for n in [2, 3, 4, 1, 7, 5, 3]:  # crosses the end, and once inserts more than capacity
        lengths = [1 + (next_id + k) % (T - 1) for k in range(n)]
        batch = run_episodes(lengths, first_id=next_id, seed=next_id)
        originals.update(episodes_by_id(batch))
        buffer.insert_episode_batch(batch)
        for k in range(n):
            reference_slots[position] = next_id + k
            position = (position + 1) % capacity
        next_id += n
        retained = [i for i in reference_slots if i is not None]
        assert buffer.episodes_in_buffer == len(buffer) == len(retained)
        stored_ids = buffer.state_dict()["storage"]["episode_id"][:, 0].tolist()
        assert stored_ids == reference_slots[: len(retained)]
        sample = buffer.sample(len(retained))
        assert sorted(sample["episode_id"][:, 0].tolist()) == sorted(retained)
        for b in range(sample.batch_size):
            assert_same_episode(sample[b], originals[int(sample["episode_id"][b, 0])])
    assert buffer.episodes_in_buffer == capacity


def test_sampling_without_replacement_and_errors():
    buffer = make_buffer(10)
    buffer.insert_episode_batch(run_episodes([3] * 10))
    for _ in range(50):
        ids = buffer.sample(7)["episode_id"][:, 0].tolist()
        assert len(set(ids)) == 7
    assert buffer.can_sample(10) and not buffer.can_sample(11)
    with pytest.raises(ValueError, match="asked for 11 episodes but the buffer holds 10"):
        buffer.sample(11)
    with pytest.raises(ValueError, match="positive"):
        buffer.sample(0)
    with pytest.raises(ValueError, match="max_seq_length"):
        buffer.insert_episode_batch(run_episodes([3], max_seq_length=T + 1))


def test_uniform_sampling():
    buffer = make_buffer(4)
    buffer.insert_episode_batch(run_episodes([2] * 4))
    counts = torch.zeros(4)
    for _ in range(2000):
        counts[buffer.sample(1)["episode_id"][0, 0]] += 1
    assert ((counts / 2000 - 0.25).abs() < 0.04).all(), counts


def test_reproducible_by_seed():
    def draws(seed):
        buffer = make_buffer(8, seed=seed)
        buffer.insert_episode_batch(run_episodes([2] * 8))
        return [buffer.sample(3)["episode_id"][:, 0].tolist() for _ in range(10)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


def test_state_dict_round_trip():
    buffer = make_buffer(6, seed=3)
    buffer.insert_episode_batch(run_episodes([4, 9, 2, 15, 1, 7, 3, 5], seed=1))  # wrapped
    buffer.sample(2)
    raw = io.BytesIO()
    torch.save(buffer.state_dict(), raw)
    raw.seek(0)
    restored = make_buffer(6, seed=99)
    restored.load_state_dict(torch.load(raw))
    assert restored.episodes_in_buffer == buffer.episodes_in_buffer
    for _ in range(3):
        assert_same_episode(restored.sample(4), buffer.sample(4))
    more = run_episodes([6, 6], first_id=100, seed=5)
    buffer.insert_episode_batch(more)
    restored.insert_episode_batch(more)
    assert_same_episode(restored.sample(6), buffer.sample(6))

    partial = make_buffer(6)
    partial.insert_episode_batch(run_episodes([2, 3]))
    state = partial.state_dict()
    assert state["storage"]["obs"].shape[0] == 2  # only the filled slots are saved
    fresh = make_buffer(6)
    fresh.load_state_dict(state)
    assert fresh.episodes_in_buffer == 2 and fresh.can_sample(2)
    with pytest.raises(ValueError, match="layout differs"):
        make_buffer(7).load_state_dict(state)


def test_sample_returns_compute_layout_and_reference_one_hot():
    buffer = make_buffer(6)
    lengths = [1, 4, 15, 7, 2, 9]
    buffer.insert_episode_batch(run_episodes(lengths))
    batch = buffer.sample(6)
    expected_dtypes = {
        "state": torch.float32, "obs": torch.float32, "reward": torch.float32,
        "actions": torch.long, "avail_actions": torch.bool, "terminated": torch.bool,
        "timeout": torch.bool, "invalid": torch.bool, "filled": torch.bool,
        "actions_onehot": torch.float32, "episode_id": torch.long,
    }
    assert {name: batch[name].dtype for name in batch.scheme} == expected_dtypes
    assert tuple(batch["state"].shape) == (6, T, STATE_DIM)
    assert tuple(batch["actions_onehot"].shape) == (6, T, N_AGENTS, N_ACTIONS)

    for b in range(6):
        length = lengths[int(batch["episode_id"][b, 0])]
        reference = torch.zeros(T, N_AGENTS, N_ACTIONS)
        for t in range(length):  # action rows only: the final row and padding stay zero
            for a in range(N_AGENTS):
                reference[t, a, int(batch["actions"][b, t, a, 0])] = 1.0
        assert torch.equal(batch["actions_onehot"][b], reference)
        assert int(batch["filled"][b].sum()) == length + 1
    assert not batch["actions_onehot"][~batch["filled"][..., 0]].any()


def test_derived_state_last_action_round_trip_and_mismatch():
    options = StorageOptions(state_dtype=torch.float32, derive_state_last_action=True)
    buffer = make_buffer(4, storage=options)
    layout = {entry["name"]: entry for entry in buffer.storage_layout()}
    assert layout["state"]["shape"] == (UNIT_DIM,)
    episodes = run_episodes([3, 15, 1, 8])
    buffer.insert_episode_batch(episodes)
    originals = episodes_by_id(episodes)
    sample = buffer.sample(4)
    for b in range(4):
        original = originals[int(sample["episode_id"][b, 0])]
        assert torch.equal(sample["state"][b], original["state"][0])  # exact, block included

    corrupted = run_episodes([5, 6])
    wrong_action = (int(corrupted["actions"][1, 3, 0, 0]) + 1) % N_ACTIONS
    corrupted["state"][1, 4, UNIT_DIM:UNIT_DIM + N_ACTIONS] = 0.0  # agent 0's block at t=4
    corrupted["state"][1, 4, UNIT_DIM + wrong_action] = 1.0
    with pytest.raises(ValueError, match=r"last-action block does not match the stored actions at "
                                         r"episode 1, t=4; set derive_state_last_action=False"):
        buffer.insert_episode_batch(corrupted)
    assert buffer.episodes_in_buffer == 4  # nothing written

    with pytest.raises(ValueError, match="state_dim 20 is smaller"):
        scheme = dict(SCHEME, state={"vshape": (20,)})
        ReplayBuffer(scheme, GROUPS, 2, T, PREPROCESS, storage=options)


def test_derived_one_hot_mismatch_raises():
    buffer = make_buffer(4)
    episodes = run_episodes([3, 3])
    episodes["actions_onehot"][1, 2, 0] = 0.0  # one agent's one-hot erased
    with pytest.raises(ValueError, match="'actions_onehot' is not the preprocess of 'actions' at episode 1, t=2"):
        buffer.insert_episode_batch(episodes)
    stored = make_buffer(4, storage=StorageOptions(derive_preprocessed=False))
    stored.insert_episode_batch(episodes)
    sample = stored.sample(2)
    order = sample["episode_id"][:, 0].argsort()
    assert torch.equal(sample["actions_onehot"][order], episodes["actions_onehot"])


def test_no_stored_tensor_requires_grad_and_insert_copies():
    episodes = run_episodes([4, 5])
    weight = torch.ones(OBS_DIM, requires_grad=True)
    with torch.no_grad():
        original_obs = episodes["obs"].clone()
    episodes["obs"].copy_(episodes["obs"] * weight)  # the batch tensor now carries a graph
    assert episodes["obs"].requires_grad
    buffer = make_buffer(4, storage=EXACT)
    buffer.insert_episode_batch(episodes)
    state = buffer.state_dict()
    assert not any(t.requires_grad for t in state["storage"].values())
    sample = buffer.sample(2)
    assert not any(sample[name].requires_grad for name in sample.scheme)

    with torch.no_grad():
        episodes["obs"].zero_()  # the runner reuses its tensors
        episodes["actions"].fill_(1)
    order = sample["episode_id"][:, 0]
    again = buffer.sample(2)
    again_order = again["episode_id"][:, 0]
    assert torch.equal(again["obs"][again_order.argsort()], original_obs)
    assert torch.equal(sample["obs"][order.argsort()], original_obs)


def test_float16_storage_precision_bound():
    buffer = make_buffer(4)  # default: obs and state in float16
    episodes = run_episodes([15, 15, 15, 15])
    buffer.insert_episode_batch(episodes)
    sample = buffer.sample(4)
    originals = episodes_by_id(episodes)
    for b in range(4):
        original = originals[int(sample["episode_id"][b, 0])]
        for name in ("obs", "state"):
            got, want = sample[name][b], original[name][0]
            # float16 round-to-nearest: relative error <= 2^-11, absolute <= 2^-25 for subnormals.
            assert ((got - want).abs() <= want.abs() * 2**-11 + 2**-25).all(), name
        assert torch.equal(sample["reward"][b], original["reward"][0])  # reward stays float32
        assert torch.equal(sample["actions"][b], original["actions"][0])

    overflowing = run_episodes([2])
    overflowing["obs"][0, 1, 0, 0] = 1e6
    with pytest.raises(ValueError, match="'obs'.*overflows torch.float16"):
        buffer.insert_episode_batch(overflowing)


def test_storage_layout_and_bytes():
    buffer = make_buffer(2, storage=StorageOptions(derive_state_last_action=True))
    dtypes = {entry["name"]: entry["dtype"] for entry in buffer.storage_layout()}
    assert dtypes == {
        "state": torch.float16, "obs": torch.float16, "actions": torch.uint8,
        "avail_actions": torch.bool, "reward": torch.float32, "terminated": torch.bool,
        "timeout": torch.bool, "invalid": torch.bool, "episode_id": torch.long,
        "actions_onehot.written": torch.bool, "filled": torch.bool,
    }
    per_step = 2 * UNIT_DIM + 2 * N_AGENTS * OBS_DIM + N_AGENTS + N_AGENTS * N_ACTIONS + 4 + 1 + 1 + 1 + 1 + 1
    assert buffer.bytes_per_step() == per_step
    float32 = 4 * (STATE_DIM + N_AGENTS * OBS_DIM + N_AGENTS + 2 * N_AGENTS * N_ACTIONS + 1 + 1 + 1 + 1 + 1)
    assert buffer.float32_bytes_per_step() == float32
    buffer.insert_episode_batch(run_episodes([3, 4]))
    storage = buffer.state_dict()["storage"]
    measured = sum(t.numel() * t.element_size() for n, t in storage.items() if n != "episode_id")
    assert measured == 2 * T * per_step  # the accounting matches the allocated tensors

    full = make_buffer(2, storage=StorageOptions.full_precision(compact_actions=False, derive_preprocessed=False))
    assert {e["name"]: e["dtype"] for e in full.storage_layout()}["actions_onehot"] == torch.float32


def test_wide_action_spaces_use_int16():
    n_actions = 300
    scheme = dict(SCHEME, avail_actions={"vshape": (n_actions,), "group": "agents", "dtype": torch.bool})
    preprocess = {"actions": ("actions_onehot", [OneHot(out_dim=n_actions)])}
    scheme["state"] = {"vshape": (10,)}
    buffer = ReplayBuffer(scheme, GROUPS, 2, 4, preprocess)
    assert {e["name"]: e["dtype"] for e in buffer.storage_layout()}["actions"] == torch.int16
    batch = EpisodeBatch(scheme, GROUPS, 1, 4, preprocess)
    batch.update({"actions": torch.tensor([[299], [256], [0]])}, bs=0, ts=0)
    buffer.insert_episode_batch(batch)
    assert buffer.sample(1)["actions"][0, 0, :, 0].tolist() == [299, 256, 0]


def test_storage_options_validation():
    with pytest.raises(ValueError, match="obs_dtype"):
        StorageOptions(obs_dtype=torch.int8)
    with pytest.raises(ValueError, match="derive_state_last_action"):
        StorageOptions(derive_state_last_action=1)
    scheme = {k: v for k, v in SCHEME.items() if k != "state"}
    with pytest.raises(ValueError, match="needs a per-step floating 'state'"):
        ReplayBuffer(scheme, GROUPS, 2, T, PREPROCESS, storage=StorageOptions(derive_state_last_action=True))
