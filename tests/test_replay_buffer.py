"""ReplayBuffer: ring semantics, sampling, checkpoints, the codecs of the compact storage layout."""

import io
import random

import numpy as np
import pytest
import torch

from qmixlab.components import episode_batch as episode_batch_module
from qmixlab.components import replay_buffer as replay_buffer_module
from qmixlab.components.episode_batch import EpisodeBatch, OneHot
from qmixlab.components.replay_buffer import (
    CastCodec,
    EpisodeRing,
    PreprocessedCodec,
    ReplayBuffer,
    StateWithoutLastActionCodec,
    StorageOptions,
)

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
    with pytest.raises(ValueError, match=r"last-action block \(columns 21:48\) does not match the stored "
                                         r"actions at episode 1, t=4; .*derive_state_last_action=False"):
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


# ------------------------------------------------------------------ codecs, ring, boundary checks

def plain_episodes(n, seed, scheme=SCHEME, block=(UNIT_DIM, STATE_DIM), preprocess=None, max_t=T):
    """Whole-batch random episodes (NaN-free floats); the state holds the previous joint action's
    one-hot at columns ``block``, built by plain loops."""
    gen = torch.Generator().manual_seed(seed)
    batch = EpisodeBatch(scheme, GROUPS, n, max_t, preprocess)
    lengths = torch.randint(1, max_t, (n,), generator=gen)
    filled = torch.arange(max_t)[None, :] <= lengths[:, None]
    data = {"filled": filled[..., None]}
    for name, field in batch.fields.items():
        if name == "filled" or field.derived_from is not None:
            continue
        shape = (n,) + (() if field.episode_const else (max_t,)) + field.shape
        if field.dtype == torch.bool:
            data[name] = torch.rand(shape, generator=gen) < 0.4
        elif name == "actions":
            data[name] = torch.randint(0, N_ACTIONS, shape, generator=gen)
        elif name == "episode_id":  # distinct, to match sampled episodes to inserted ones
            data[name] = torch.randperm(1000, generator=gen)[:n, None]
        elif not field.dtype.is_floating_point:
            data[name] = torch.randint(-1000, 1000, shape, generator=gen)
        else:
            data[name] = torch.randn(shape, generator=gen)
    if block is not None:
        state = data["state"]
        state[..., block[0]:block[1]] = 0.0
        for b in range(n):
            for t in range(1, max_t):
                if filled[b, t]:
                    for a in range(N_AGENTS):
                        state[b, t, block[0] + a * N_ACTIONS + int(data["actions"][b, t - 1, a, 0])] = 1.0
    batch.update(data, mark_filled=False)
    return batch


def test_cast_codecs_round_trip_against_plain_reference():
    buffer = make_buffer(4)  # default options: obs/state float16, reward float32, actions uint8
    episodes = run_episodes([3, 15, 7])
    data = {**episodes.transition_data, **episodes.episode_data}
    codecs = buffer.codecs
    expected_storage = {"obs": torch.float16, "state": torch.float16, "reward": torch.float32,
                        "actions": torch.uint8, "avail_actions": torch.bool, "terminated": torch.bool,
                        "invalid": torch.bool, "filled": torch.bool, "episode_id": torch.long}
    for name, storage_dtype in expected_storage.items():
        codec = codecs[name]
        assert isinstance(codec, CastCodec), name
        stored = codec.encode(data)
        assert list(stored) == [name] and stored[name].dtype == storage_dtype, name
        decoded = codec.decode(stored, {})
        assert decoded.dtype == data[name].dtype and decoded.shape == data[name].shape, name
        original = data[name].numpy()
        if storage_dtype == torch.float16:  # reference: numpy's own float16 rounding
            reference = original.astype(np.float16).astype(np.float32)
        else:
            reference = original
        assert np.array_equal(decoded.numpy(), reference), name

    wide = ReplayBuffer(dict(SCHEME, avail_actions={"vshape": (300,), "group": "agents", "dtype": torch.bool}),
                        GROUPS, 2, T)
    actions = torch.tensor([0, 255, 256, 299]).reshape(1, 1, 4, 1)
    stored = wide.codecs["actions"].encode({"actions": actions})
    assert stored["actions"].dtype == torch.int16
    assert wide.codecs["actions"].decode(stored, {}).tolist() == [[[[0], [255], [256], [299]]]]
    with pytest.raises(ValueError, match="value 256 does not fit torch.uint8"):
        codecs["actions"].encode({"actions": torch.tensor([[[[256]]]])})


def test_state_codec_round_trip_with_block_in_the_middle():
    # SMAC with state_timestep_number: unit features, the last-action block, then one more column.
    state_dim = UNIT_DIM + N_AGENTS * N_ACTIONS + 1
    scheme = dict(SCHEME, state={"vshape": (state_dim,)})
    block = (UNIT_DIM, UNIT_DIM + N_AGENTS * N_ACTIONS)
    buffer = ReplayBuffer(scheme, GROUPS, 8, T, storage=StorageOptions.full_precision(state_last_action=block))
    codec = buffer.codecs["state"]
    assert isinstance(codec, StateWithoutLastActionCodec) and codec.block == block
    episodes = plain_episodes(5, seed=3, scheme=scheme, block=block)
    data = {**episodes.transition_data, **episodes.episode_data}
    stored = codec.encode(data)["state"]
    state = data["state"]
    reference_kept = torch.tensor([[[float(state[b, t, c]) for c in range(state_dim) if not block[0] <= c < block[1]]
                                    for t in range(T)] for b in range(5)])
    assert torch.equal(stored, reference_kept)
    decoded = codec.decode({"state": stored}, {"actions": data["actions"], "filled": data["filled"]})
    assert torch.equal(decoded, state)

    buffer.insert_episode_batch(episodes)
    sample = buffer.sample(5)
    order = sample["episode_id"][:, 0].argsort()
    assert torch.equal(sample["state"][order], episodes["state"][episodes["episode_id"][:, 0].argsort()])


def test_state_codec_rejects_a_block_that_disagrees_with_the_actions():
    block = (UNIT_DIM, STATE_DIM)
    buffer = ReplayBuffer(SCHEME, GROUPS, 4, T, storage=StorageOptions(state_last_action=block))
    # An environment whose block holds the current joint action instead of the previous one.
    shifted = plain_episodes(3, seed=1, block=None)
    state, actions, filled = shifted["state"].clone(), shifted["actions"], shifted["filled"]
    state[..., UNIT_DIM:] = 0.0
    for b in range(3):
        for t in range(T):
            if filled[b, t, 0]:
                for a in range(N_AGENTS):
                    state[b, t, UNIT_DIM + a * N_ACTIONS + int(actions[b, t, a, 0])] = 1.0
    shifted.update({"state": state}, mark_filled=False)
    with pytest.raises(ValueError, match=r"last-action block \(columns 21:48\) does not match the stored actions "
                                         r"at episode 0, t=0"):
        buffer.insert_episode_batch(shifted)
    # One wrong value in one row of one episode is caught too.
    episodes = plain_episodes(3, seed=2)
    episodes["state"][2, 5, STATE_DIM - 1] += 0.5
    with pytest.raises(ValueError, match="at episode 2, t=5"):
        buffer.insert_episode_batch(episodes)
    out_of_range = plain_episodes(2, seed=4)
    out_of_range["actions"][1, 3, 0, 0] = N_ACTIONS
    with pytest.raises(ValueError, match=r"'actions': action 9 is outside 0..8"):
        buffer.insert_episode_batch(out_of_range)
    assert buffer.episodes_in_buffer == 0


def test_state_last_action_pair_equals_derive_flag_and_is_validated():
    by_flag = make_buffer(6, storage=StorageOptions(derive_state_last_action=True), seed=4)
    by_pair = make_buffer(6, storage=StorageOptions(state_last_action=(UNIT_DIM, STATE_DIM)), seed=4)
    assert by_flag.storage_layout() == by_pair.storage_layout()
    episodes = run_episodes([3, 8, 15, 1, 4])
    by_flag.insert_episode_batch(episodes)
    by_pair.insert_episode_batch(episodes)
    assert_same_episode(by_pair.sample(4), by_flag.sample(4))

    for bad in [(5, 5), (-1, 26), (0, 27.0), (1, 2, 3), True]:
        with pytest.raises(ValueError, match=r"state_last_action must be None or a \(start, stop\) pair"):
            StorageOptions(state_last_action=bad)
    with pytest.raises(ValueError, match="not both"):
        StorageOptions(state_last_action=(21, 48), derive_state_last_action=True)
    with pytest.raises(ValueError, match=r"expected 27 columns .* got 26 columns 21:47"):
        make_buffer(2, storage=StorageOptions(state_last_action=(21, 47)))
    with pytest.raises(ValueError, match=r"expected 27 columns .* got 27 columns 22:49"):
        make_buffer(2, storage=StorageOptions(state_last_action=(22, 49)))


def test_preprocessed_codec_round_trip_against_plain_one_hot():
    buffer = make_buffer(4)
    episodes = run_episodes([2, 9])
    data = {**episodes.transition_data, **episodes.episode_data}
    codec = buffer.codecs["actions_onehot"]
    assert isinstance(codec, PreprocessedCodec)
    stored = codec.encode(data)
    assert list(stored) == ["actions_onehot.written"] and stored["actions_onehot.written"].dtype == torch.bool
    decoded = codec.decode(stored, {"actions": data["actions"]})
    reference = torch.zeros(2, T, N_AGENTS, N_ACTIONS)
    for b, length in enumerate([2, 9]):
        for t in range(length):
            for a in range(N_AGENTS):
                reference[b, t, a, int(data["actions"][b, t, a, 0])] = 1.0
    assert torch.equal(decoded, reference)


def test_ring_claims_match_a_plain_list_model():
    rng = random.Random(0)
    for capacity in (1, 3, 7):
        ring = EpisodeRing(capacity)
        slots, model, position, next_id = [None] * capacity, [], 0, 0
        for _ in range(40):
            n = rng.choice([1, 2, capacity, capacity + 1, 2 * capacity + 3])
            new_ids = list(range(next_id, next_id + n))
            for slot, first, count in ring.claim(n):
                slots[slot:slot + count] = new_ids[first:first + count]
            for episode_id in new_ids:  # the model: write every episode in turn, oldest overwritten
                if len(model) < capacity:
                    model.append(episode_id)
                else:
                    model[position] = episode_id
                position = (position + 1) % capacity
            next_id += n
            assert slots[:len(model)] == model
            assert ring.size == len(model) and ring.next_slot == position


def test_ring_buffer_holds_the_newest_episodes_after_overfilling():
    buffer = make_buffer(4, storage=EXACT)
    held = []  # plain list model: the newest 4 episode ids
    next_id = 0
    for n in [3, 9, 1, 5]:
        batch = plain_episodes(n, seed=next_id, preprocess=PREPROCESS)
        batch.update({"episode_id": torch.arange(next_id, next_id + n)[:, None]})
        buffer.insert_episode_batch(batch)
        held = (held + list(range(next_id, next_id + n)))[-4:]
        next_id += n
        assert sorted(buffer.sample(len(held))["episode_id"][:, 0].tolist()) == sorted(held)


def test_extra_bool_fields_are_stored_as_bytes_and_round_trip():
    scheme = dict(
        SCHEME,
        alive={"vshape": (1,), "group": "agents", "dtype": torch.bool},
        flag_unit_stuck={"vshape": (1,), "dtype": torch.bool},
        flag_env_reset_late={"vshape": (2,), "dtype": torch.bool},
        won={"vshape": (1,), "dtype": torch.bool, "episode_const": True},
    )
    buffer = ReplayBuffer(scheme, GROUPS, 5, T, storage=StorageOptions(derive_state_last_action=True))
    layout = {entry["name"]: entry for entry in buffer.storage_layout()}
    for name, elements in [("alive", N_AGENTS), ("flag_unit_stuck", 1), ("flag_env_reset_late", 2), ("won", 1)]:
        assert layout[name]["dtype"] == torch.bool and layout[name]["bytes"] == elements, name
    episodes = plain_episodes(5, seed=7, scheme=scheme)
    buffer.insert_episode_batch(episodes)
    sample = buffer.sample(5)
    order = sample["episode_id"][:, 0].argsort()
    original_order = episodes["episode_id"][:, 0].argsort()
    for name in ("alive", "flag_unit_stuck", "flag_env_reset_late", "won"):
        assert sample[name].dtype == torch.bool
        assert torch.equal(sample[name][order], episodes[name][original_order]), name


def test_sample_does_no_scheme_validation(monkeypatch):
    buffer = make_buffer(6, storage=StorageOptions(derive_state_last_action=True))
    buffer.insert_episode_batch(run_episodes([4, 2, 9, 1]))

    def forbidden(*args, **kwargs):
        raise AssertionError("sample() validated the scheme")

    monkeypatch.setattr(replay_buffer_module, "build_fields", forbidden)
    monkeypatch.setattr(episode_batch_module, "build_fields", forbidden)
    monkeypatch.setattr(episode_batch_module, "convert_checked", forbidden)
    monkeypatch.setattr(replay_buffer_module, "convert_checked", forbidden)
    monkeypatch.setattr(EpisodeBatch, "from_tensors", forbidden)
    monkeypatch.setattr(ReplayBuffer, "_check_compatible", forbidden)
    monkeypatch.setattr(episode_batch_module.FieldSpec, "__eq__", forbidden)
    for _ in range(3):
        batch = buffer.sample(3)
        assert batch.batch_size == 3 and set(batch.scheme) == set(buffer.scheme)


def format_1_state_dict(state):
    """A state dict as the buffer saved it before the codecs (format 1)."""
    old = {key: value for key, value in state.items() if key != "format"}
    old["signature"] = {key: value for key, value in state["signature"].items() if key != "state_last_action"}
    return old


def test_format_1_checkpoints_load():
    options = StorageOptions(derive_state_last_action=True)
    saved = make_buffer(6, storage=options, seed=3)
    saved.insert_episode_batch(run_episodes([4, 9, 2, 15, 1, 7, 3], seed=1))
    old = format_1_state_dict(saved.state_dict())
    restored = make_buffer(6, storage=options, seed=0)
    restored.load_state_dict(old)
    assert_same_episode(restored.sample(5), saved.sample(5))

    # The runner no longer declares actions_onehot: its stored written-flags are dropped on load.
    no_preprocess = ReplayBuffer(SCHEME, GROUPS, 6, T, storage=options, seed=0)
    no_preprocess.load_state_dict(old)
    sample, reference = no_preprocess.sample(6), saved.sample(6)
    for name in no_preprocess.scheme:
        assert torch.equal(sample[name][sample["episode_id"][:, 0].argsort()],
                           reference[name][reference["episode_id"][:, 0].argsort()]), name

    # Format 1 always meant the trailing block: it does not load where the block sits elsewhere.
    scheme = dict(SCHEME, state={"vshape": (STATE_DIM,)})
    elsewhere = ReplayBuffer(scheme, GROUPS, 6, T, PREPROCESS, storage=StorageOptions(state_last_action=(0, 27)))
    with pytest.raises(ValueError, match=r"layout differs in \['state_last_action'\]"):
        elsewhere.load_state_dict(old)
    with pytest.raises(ValueError, match="buffer format 7, expected 1 or 2"):
        restored.load_state_dict(dict(saved.state_dict(), format=7))
