"""TwoRoom env: step rule, walls, door, success, determinism, parity with the reference, door expert."""
import numpy as np
import pytest

from lewm_fast.envs import make
from lewm_fast.policies import make_policy
from reference_compat import REFERENCE_ERROR, import_reference


@pytest.fixture
def env():
    e = make("tworoom")
    e.reset(seed=0)
    return e


def step_from(env, pos, action):
    env.set_state(np.array(pos, dtype=np.float64))
    obs, *_ = env.step(np.array(action, dtype=np.float32))
    return obs["state"]


def test_contract(env):
    obs, info = env.reset(seed=3)
    assert obs["state"].shape == (2,) and obs["state"].dtype == np.float64
    np.testing.assert_array_equal(obs["proprio"], obs["state"])
    assert not 100 <= obs["state"][0] <= 124  # never spawns in the wall band
    assert isinstance(info["success"], bool) and env.render().shape == (224, 224, 3)


def test_free_move_and_action_clip(env):
    np.testing.assert_allclose(step_from(env, [50, 150], [0.4, -0.6]), [52, 147], atol=1e-5)
    np.testing.assert_allclose(step_from(env, [50, 150], [3.0, -7.0]), [55, 145])  # clipped to [-1, 1]


def test_border_clamp(env):
    np.testing.assert_allclose(step_from(env, [23, 200], [-1, 1]), [21, 203])  # [14 + 7, 210 - 7]
    np.testing.assert_allclose(step_from(env, [200, 22], [1, -1]), [203, 21])


def test_wall_snaps_outside_band(env):
    # Left room moving right into the band (x > 107 - 7) outside the door: snapped to 99.5.
    np.testing.assert_allclose(step_from(env, [98, 150], [1, 0]), [99.5, 150])
    # Right room moving left (x < 117 + 7): snapped to 124.5.
    np.testing.assert_allclose(step_from(env, [127, 150], [-1, 0]), [124.5, 150])
    # Staying clear of the band is unaffected.
    np.testing.assert_allclose(step_from(env, [90, 150], [1, 0]), [95, 150])


def test_door_lets_agent_through(env):
    env.set_state([95.0, 49.0])
    for _ in range(8):
        env.step(np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(env.get_state(), [135, 49])
    # The door counts within half-size 14 + margin 1.75 of y = 49: y = 64.5 passes, y = 65 does not.
    np.testing.assert_allclose(step_from(env, [98, 64.5], [1, 0]), [103, 64.5])
    np.testing.assert_allclose(step_from(env, [98, 65.0], [1, 0]), [99.5, 65.0])


def test_success_radius(env):
    env.set_goal_state([150.0, 150.0])
    env.set_state([150.0, 165.9])
    assert env.is_success()
    env.set_state([150.0, 166.1])
    assert not env.is_success()
    _, _, terminated, _, info = env.step(np.array([0.0, -1.0], np.float32))
    assert terminated and info["success"]


def test_determinism():
    def run(seed):
        e = make("tworoom")
        obs, info = e.reset(seed=seed)
        pol = make_policy("tworoom", e, seed=seed)
        out = [obs["state"]]
        for _ in range(20):
            obs, *_ = e.step(pol.act(obs, info))
            out.append(obs["state"])
        return np.array(out), e.goal_state.copy()

    a, ga = run(5)
    b, gb = run(5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ga, gb)
    assert not np.array_equal(a, run(6)[0])


def test_trajectories_match_reference():
    swm = import_reference()
    if swm is None:
        pytest.skip(REFERENCE_ERROR)
    from stable_worldmodel.envs.two_room import TwoRoomEnv

    ref, ours = TwoRoomEnv(), make("tworoom")
    ref.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        s = rng.uniform(21, 203, 2).astype(np.float32)
        ref._set_state(s)
        ours.set_state(s)
        for _ in range(60):
            a = rng.normal(0, 2, 2).astype(np.float32)
            ref.step(a)
            ours.step(a)
            np.testing.assert_array_equal(ours.agent, ref.agent_position.numpy())


def test_door_expert():
    e = make("tworoom")
    clean = make_policy("tworoom", e, seed=0)
    clean.noise = 0.0
    for seed in range(20):  # noiseless: always arrives, crossing rooms through the door
        obs, info = e.reset(seed=seed)
        for _ in range(100):
            obs, _, done, _, info = e.step(clean.act(obs, info))
            if done:
                break
        assert done, seed
    noisy = make_policy("tworoom", e, seed=0)  # data setting: N(0, 2) noise, clipped
    a = np.array([noisy.act() for _ in range(200)])
    assert np.abs(a).max() <= 1.0 and (np.abs(a) == 1.0).mean() > 0.3
