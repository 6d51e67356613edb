"""Native 2-D renderer: batching, OpenCV-compatible resampling, and pixel parity with the reference."""
import numpy as np
import pytest

from lewm_fast.envs.render import PUSHT_GOAL_POSE, render_pusht, render_tworoom
from reference_compat import REFERENCE_ERROR, import_reference


def random_pusht_states(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(50, 450, (n, 2)), rng.uniform(100, 400, (n, 2)),
                            rng.uniform(0, 2 * np.pi, n), rng.normal(0, 50, (n, 2))])


def test_pusht_batched_equals_single_and_threading():
    states = random_pusht_states(12)
    batch = render_pusht(states, threads=0)
    assert batch.shape == (12, 224, 224, 3) and batch.dtype == np.uint8
    single = np.stack([render_pusht(s, threads=1) for s in states])
    np.testing.assert_array_equal(batch, single)
    np.testing.assert_array_equal(batch, render_pusht(states, threads=3))


def test_tworoom_batched_equals_single():
    pos = np.random.default_rng(1).uniform(14, 210, (9, 2))
    batch = render_tworoom(pos)
    assert batch.shape == (9, 224, 224, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, np.stack([render_tworoom(p, threads=1) for p in pos]))


def test_resampling_is_opencv_bilinear():
    # The 224 frame must be exactly cv2.resize(INTER_LINEAR) of our own 512 canvas.
    cv2 = pytest.importorskip("cv2")
    states = random_pusht_states(4, seed=2)
    canvas = render_pusht(states, size=512)
    small = render_pusht(states, size=224)
    for c, s in zip(canvas, small):
        np.testing.assert_array_equal(cv2.resize(c, (224, 224)), s)


def test_pusht_scene_content():
    # Agent far from block: its centre is the light fill, its rim the darker royal blue; the goal T's
    # centre line is light green; walls light gray; the background white.
    state = np.array([100.0, 420.0, 380.0, 120.0, 0.0])
    img = render_pusht(state, size=512)
    assert tuple(img[420, 100]) == (78, 126, 255)
    assert tuple(img[420, 100 + 13]) == (65, 105, 225)
    assert tuple(img[256 + 40, 256 - 40]) == (144, 238, 144)  # inside the goal stem (rotated pi/4)
    assert tuple(img[5, 200]) == (211, 211, 211)
    assert tuple(img[60, 460]) == (255, 255, 255)
    assert tuple(img[135, 380]) == (143, 163, 184)  # block bar interior
    no_goal = render_pusht(state, size=512, draw_goal=False)
    assert tuple(no_goal[256 + 40, 256 - 40]) == (255, 255, 255)


def test_tworoom_scene_content():
    img = render_tworoom(np.array([60.0, 150.0]))
    assert tuple(img[150, 60]) == (255, 0, 0)  # agent centre: full red
    assert tuple(img[120, 110]) == (0, 0, 0)  # middle wall
    assert tuple(img[49, 112]) == (255, 255, 255)  # door
    assert tuple(img[12, 60]) == (0, 0, 0)  # border line
    assert tuple(img[5, 5]) == (255, 255, 255)  # outside the border lines
    assert img[150, 60 + 30, 0] == 255 and img[150, 60 + 30, 1] < 255  # Gaussian tail


def test_bad_input_raises():
    with pytest.raises(ValueError):
        render_pusht(np.zeros((3, 4)))
    with pytest.raises(ValueError):
        render_pusht(np.full(5, np.nan))
    with pytest.raises(ValueError):
        render_tworoom(np.zeros((2, 1)))


# ------------------------------------------------------------------ parity with the reference
@pytest.fixture(scope="module")
def reference():
    swm = import_reference()
    if swm is None:
        pytest.skip(REFERENCE_ERROR)
    return swm


def _pad_contacts(per_frame):
    k = max(1, max(len(c) for c in per_frame))
    out = np.full((len(per_frame), k, 4), np.nan)
    for i, c in enumerate(per_frame):
        out[i, :len(c)] = c
    return out


def test_pusht_pixel_parity_with_reference(reference):
    from stable_worldmodel.envs.pusht import PushT

    from lewm_fast.envs.pusht import contact_segments

    env = PushT()
    env.reset(seed=0)
    frames, states, contacts = [], [], []
    for s in random_pusht_states(100, seed=3):
        s[5:] = 0.0
        env._set_state(s)  # the reference settles one physics step: render the state it ends in
        frames.append(env.render())
        states.append(env._get_obs())
        contacts.append(contact_segments(env.block))  # overlapping bodies get red contact markers
    frames = np.array(frames).astype(np.int16)
    ours = render_pusht(np.array(states), goal_pose=PUSHT_GOAL_POSE, contacts=_pad_contacts(contacts))
    diff = np.abs(ours.astype(np.int16) - frames)
    assert diff.mean() <= 2.0, diff.mean()
    assert (diff.reshape(100, -1).max(1) == 0).mean() >= 0.95  # bit-identical frames
    without = np.abs(render_pusht(np.array(states)).astype(np.int16) - frames)
    assert without.mean() <= 2.0 and without.sum() >= diff.sum()


def test_pusht_env_frames_match_reference_along_expert_trajectory(reference):
    # Pushing makes contacts in most frames: our env's render() (markers included) against the reference
    # stepping the same actions from the same state.
    from stable_worldmodel.envs.pusht import PushT

    from lewm_fast.envs import make
    from lewm_fast.envs.pusht import contact_segments
    from lewm_fast.policies import make_policy

    ref, ours = PushT(), make("pusht")
    ref.reset(seed=0)
    policy = make_policy("pusht", ours, seed=0)
    ours.reset(seed=3)
    ref._setup()
    ref._set_state(ours.get_state())
    diffs, touching = [], 0
    for _ in range(80):
        a = policy.act()
        ours.step(a)
        ref.step(a)
        touching += len(contact_segments(ours.block)) > 0
        diffs.append(np.abs(ours.render().astype(np.int16) - ref.render().astype(np.int16)).mean())
    assert touching >= 10  # the trajectory really exercises the contact markers
    assert max(diffs) <= 2.0 and np.mean(diffs) <= 0.05, (max(diffs), np.mean(diffs))


def test_tworoom_pixel_parity_with_reference(reference):
    from stable_worldmodel.envs.two_room import TwoRoomEnv

    env = TwoRoomEnv()
    env.reset(seed=0)
    pos = np.random.default_rng(4).uniform(14, 210, (12, 2)).astype(np.float32)
    pos[0] = (100.0, 120.0)  # dot over the middle wall: blending over black
    frames = []
    for p in pos:
        env._set_state(p)
        frames.append(env.render())
    diff = np.abs(render_tworoom(pos.astype(np.float64)).astype(np.int16) - np.array(frames).astype(np.int16))
    assert diff.mean() <= 0.01 and diff.max() <= 1  # float32 exp rounding may differ by one ulp


def test_pusht_object_recolouring_changes_only_object_pixels():
    """On the raw 512 canvas (no resampling) every pixel of the block's outline / fill and the agent's rim /
    fill colour takes the new colour (fill = outline * 1.2, capped), and every other pixel is unchanged."""
    from lewm_fast.envs.render import PUSHT_COLOURS, pusht_palette
    states = random_pusht_states(6, seed=3)
    new = {"block": (200, 80, 60), "agent": (40, 160, 40)}
    fill = lambda c: tuple(min(255, int(np.floor(x * 1.2 + 0.5))) for x in c)   # noqa: E731
    a = render_pusht(states, size=512)
    b = render_pusht(states, size=512, colours=new)
    mapping = {PUSHT_COLOURS["block"]: new["block"], fill(PUSHT_COLOURS["block"]): fill(new["block"]),
               PUSHT_COLOURS["agent"]: new["agent"], fill(PUSHT_COLOURS["agent"]): fill(new["agent"])}
    expected = a.copy()
    for old, nc in mapping.items():
        expected[(a == old).all(-1)] = nc
    assert (b == expected).all()
    assert (a != b).any(-1).sum() > 6 * 3000          # the block and agent really moved colour
    assert (render_pusht(states, size=224, colours={}) == render_pusht(states, size=224)).all()
    assert pusht_palette(None) is None
    with pytest.raises(ValueError, match="unknown PushT objects"):
        render_pusht(states, size=64, colours={"wall": (0, 0, 0)})
    with pytest.raises(ValueError, match="3 integers"):
        render_pusht(states, size=64, colours={"block": (0, 0, 300)})


def test_tworoom_agent_colour():
    pos = np.array([[60.0, 120.0], [150.0, 40.0]])
    red = render_tworoom(pos)
    assert (render_tworoom(pos, colour=(255, 0, 0)) == red).all()
    blue = render_tworoom(pos, colour=(0, 0, 255))
    # same alpha mask, channels swapped: R and B exchange where the dot is drawn
    assert (blue[..., 0] == red[..., 2]).all() and (blue[..., 2] == red[..., 0]).all()
    assert (blue != red).any(-1).sum() > 100
    with pytest.raises(ValueError, match="colour must be"):
        render_tworoom(pos, colour=(0, 0))
