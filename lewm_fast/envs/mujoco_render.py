"""What the MuJoCo envs (Cube, Reacher) share: render settings, an offscreen renderer made on first use,
and the reset/step plumbing of the env contract around them (lewm_fast/envs/__init__.py).
"""
from __future__ import annotations

from lewm_fast.envs.mujoco_gl import select_gl_backend

select_gl_backend()  # must run before mujoco is imported

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402


def check_render_mode(render_mode: str | None) -> None:
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")


def set_render_quality(model: mujoco.MjModel, shadow_size: int, antialias: bool) -> None:
    """Shadow-map size and multisampling: the two settings that dominate render time on llvmpipe."""
    model.vis.quality.shadowsize = int(shadow_size)
    model.vis.quality.offsamples = 4 if antialias else 0


def render_size_for(resolution: int) -> int:
    """The size frames are rendered at before they are resized to `resolution`: twice the output (capped
    at the env's 224), so a small frame is antialiased the way a 224 render resized to it is (measured in
    bench/reports/render-mujoco-{reacher,cube}-64px-cpu.json: a native 64 px render differs from the 224 px
    reference resized to 64 px by 1.6 (Reacher) / 3.1 (Cube) grey levels, a 128 px render resized by 0.5 / 1.1
    (Cube with coarse_render_model's meshes))."""
    resolution = int(resolution)
    return resolution if resolution >= 224 else min(224, 2 * resolution)


class OffscreenRenderer:
    """A square mujoco.Renderer on one camera, made on the first frame (so that an env used for physics
    only never opens a GL context) and closed by the env's close(). Renders at render_size_for(resolution)
    and resizes to `resolution` with the model's own resize (lewm_fast.model.resize_frames).

    Renderers of one model object at one size are shared (reference-counted): envs that render a shared
    render-only model (Cube's coarse_render_model) then hold one GL context between them, where 50 evaluation
    envs with one context and model copy each took 15 GB."""

    _shared: dict = {}   # (id(model), size) -> [mujoco.Renderer, model, users]

    def __init__(self, resolution: int, camera: str | int, share: bool = False):
        self.resolution, self.camera, self.share = int(resolution), camera, bool(share)
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {resolution}")
        self.size = render_size_for(self.resolution)
        self.shadows = True     # False: the scene's shadow pass off (a measurement in bench.render_mujoco; not the reference's look)
        self._renderer: mujoco.Renderer | None = None
        self._key = None

    def _open(self, model: mujoco.MjModel) -> mujoco.Renderer:
        if not self.share:
            return mujoco.Renderer(model, self.size, self.size)
        self._key = (id(model), self.size)
        entry = OffscreenRenderer._shared.get(self._key)
        if entry is None or entry[1] is not model:
            entry = OffscreenRenderer._shared[self._key] = [mujoco.Renderer(model, self.size, self.size), model, 0]
        entry[2] += 1
        return entry[0]

    def render(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        if self._renderer is None:
            self._renderer = self._open(model)
        self._renderer.update_scene(data, camera=self.camera)
        # every frame: a renderer can be shared by envs (share=True), so the flag is this env's, not the renderer's
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.shadows
        frame = self._renderer.render()
        if self.size == self.resolution:
            return frame.copy()
        from lewm_fast.collect import resize_uint8
        return resize_uint8(frame[None], self.resolution)[0]

    def close(self) -> None:
        if self._renderer is None:
            return
        if self.share:
            entry = OffscreenRenderer._shared.get(self._key)
            if entry is not None and entry[0] is self._renderer:
                entry[2] -= 1
                if entry[2] == 0:
                    del OffscreenRenderer._shared[self._key]
                    self._renderer.close()
        else:
            self._renderer.close()
        self._renderer = None


# -- coarser meshes for the renderer only -------------------------------------------------------
def _cluster_mesh(verts: np.ndarray, faces: np.ndarray, cell: float):
    """Vertex clustering: snap vertices to a `cell`-metre grid, merge each cell's vertices into their mean,
    drop triangles that collapse and duplicates; vertex normals are the area-weighted face normals."""
    _, cluster = np.unique(np.floor(verts / cell).astype(np.int64), axis=0, return_inverse=True)
    cluster = cluster.reshape(-1)
    n = int(cluster.max()) + 1
    counts = np.bincount(cluster, minlength=n)[:, None]
    new_verts = np.zeros((n, 3))
    np.add.at(new_verts, cluster, verts)
    new_verts /= counts
    f = cluster[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    # the same triangle reached from several original ones: compare them rotated to start at their smallest index
    start = np.argmin(f, axis=1)[:, None]
    canonical = np.take_along_axis(f, (start + np.arange(3)) % 3, axis=1)
    _, first = np.unique(canonical, axis=0, return_index=True)
    f = f[np.sort(first)]
    face_normals = np.cross(new_verts[f[:, 1]] - new_verts[f[:, 0]], new_verts[f[:, 2]] - new_verts[f[:, 0]])
    normals = np.zeros_like(new_verts)
    for k in range(3):
        np.add.at(normals, f[:, k], face_normals)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    return new_verts, f, normals


_COARSE_MODELS: dict = {}   # (mesh layout, cell, render quality) -> the shared render-only model


def coarse_render_model(model: mujoco.MjModel, cell: float) -> mujoco.MjModel:
    """A copy of `model` whose meshes are clustered on a `cell`-metre grid, for rendering only: on llvmpipe a
    frame's cost is the triangle count (the Cube arm has 185 k), and at 64-128 px a few-mm cell does not show.
    Physics keeps the original model; mjv_updateScene draws the copy at the physics data's geom poses (the
    copy's geom frames are the original's, so nothing moves). The arrays keep their sizes: each mesh's
    vertices, faces and normals are rewritten at the start of its range and its counts lowered.
    One copy per process for models of the same layout and render quality (envs of one kind share it, with
    their renderer: OffscreenRenderer(share=True)); a model changed after its first frame is not re-copied."""
    import copy

    key = (model.nmesh, int(model.mesh_facenum.sum()), int(model.mesh_vertnum.sum()), float(cell),
           int(model.vis.quality.shadowsize), int(model.vis.quality.offsamples), model.ngeom, model.nmat)
    if key in _COARSE_MODELS:
        return _COARSE_MODELS[key]
    m = copy.deepcopy(model)
    _COARSE_MODELS[key] = m
    if cell <= 0 or m.nmesh == 0:
        return m
    for i in range(m.nmesh):
        va, nv, fa, nf = m.mesh_vertadr[i], m.mesh_vertnum[i], m.mesh_faceadr[i], m.mesh_facenum[i]
        verts, faces, normals = _cluster_mesh(m.mesh_vert[va:va + nv].astype(np.float64), m.mesh_face[fa:fa + nf], cell)
        if len(faces) == 0 or len(verts) > m.mesh_normalnum[i] or m.mesh_texcoordnum[i] > 0:
            continue   # keep meshes that would vanish, or whose normal/texture layout we cannot rewrite
        na = m.mesh_normaladr[i]
        m.mesh_vert[va:va + len(verts)] = verts
        m.mesh_normal[na:na + len(verts)] = normals
        m.mesh_face[fa:fa + len(faces)] = faces
        m.mesh_facenormal[fa:fa + len(faces)] = faces
        m.mesh_vertnum[i] = m.mesh_normalnum[i] = len(verts)
        m.mesh_facenum[i] = len(faces)
    return m


def apply_reset_options(env: gym.Env, options: dict | None) -> None:
    """reset()'s optional `state` and `goal_state`, applied after the random draw."""
    options = options or {}
    if options.get("state") is not None:
        env.set_state(options["state"])
    if options.get("goal_state") is not None:
        env.set_goal_state(options["goal_state"])


def flat_action(action, size: int, env_name: str) -> np.ndarray:
    """The action as a float64 vector of `size` entries (not yet clipped); a clear error otherwise."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (size,):
        raise ValueError(f"{env_name} action must have {size} entries, got shape {action.shape}")
    return action
