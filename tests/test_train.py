import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import write_synthetic
from lewm_fast.checkpoint import load_checkpoint
from lewm_fast.data import make_datasets
from lewm_fast.train import build_parser, epoch_batches, lr_lambda, train

TINY = ["--preset", "tiny", "--batch-size", "16", "--workers", "0", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "syn.h5", n_episodes=16, length=40)


def _embedding_spread(model, data):
    train_set, _ = make_datasets(data, val_fraction=0.0)
    px = torch.stack([train_set[i]["pixels"][0] for i in range(0, len(train_set), 7)])
    with torch.no_grad():
        emb = model.encode(px)
    s = torch.linalg.svdvals(emb - emb.mean(0))
    return float(emb.std(0).mean()), int((s > 0.05 * s[0]).sum())


def test_training_lowers_prediction_loss_without_collapse(data, tmp_path):
    out = tmp_path / "run"
    train(["--data", str(data), "--out", str(out), "--max-steps", "200", "--lr", "2e-3", "--ckpt-every", "100",
           "--epochs", "100", *TINY])
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in log if "val" not in r]
    assert len(steps) == 200
    # every step carries the wall clock, from which bench.model_card reports the training time
    clock = [r["time"] for r in steps]
    assert clock == sorted(clock) and clock[-1] - clock[0] > 0
    from bench.model_card import training_wall_time
    assert training_wall_time(steps) == pytest.approx(clock[-1] - clock[0])
    first = np.mean([r["pred_loss"] for r in steps[:20]])
    last = np.mean([r["pred_loss"] for r in steps[-20:]])
    assert last < 0.7 * first, (first, last)
    ckpt = load_checkpoint(out / "model.safetensors")
    assert set(ckpt.stats) == {"action", "state"}   # z-scoring stats travel with the weights
    model = ckpt.model
    # it learnt action-conditioned dynamics: on held-out episodes it beats predicting "no change"
    _, val = make_datasets(data)
    b = next(iter(torch.utils.data.DataLoader(val, batch_size=64)))
    with torch.no_grad():
        emb = model.encode(b["pixels"])
        pred = model.predict(emb[:, :-1], model.embed_actions(b["action"])[:, :-1])
    model_err = torch.nn.functional.mse_loss(pred, emb[:, 1:]).item()
    copy_err = torch.nn.functional.mse_loss(emb[:, :-1], emb[:, 1:]).item()
    assert model_err < 0.75 * copy_err, (model_err, copy_err)
    std, rank = _embedding_spread(model, data)
    # a collapsed encoder maps every frame to (nearly) one point: tiny spread and rank ~1
    assert std > 0.2 and rank >= 4, (std, rank)
    assert any("val" in r for r in log)


def test_killed_run_resumes_from_last_checkpoint_exactly(data, tmp_path):
    args = ["--data", str(data), "--max-steps", "40", "--ckpt-every", "5", "--epochs", "100", "--seed", "7", *TINY]
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    train(args + ["--out", str(ref_dir)])

    proc = subprocess.Popen([sys.executable, "-m", "lewm_fast.train", *args, "--out", str(killed_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    ckpt = killed_dir / "last.pt"
    while time.time() < deadline:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 10:
            break
        if proc.poll() is not None:
            pytest.fail(f"training exited before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 10 <= killed_at < 40, killed_at

    result = train(args + ["--out", str(killed_dir), "--resume"])
    assert result["step"] == 40
    a = torch.load(ref_dir / "last.pt", weights_only=True)["model"]
    b = torch.load(killed_dir / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), f"resumed run diverged at {k}"
    records = [json.loads(x) for x in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "val" not in r]
    assert steps == list(range(1, 41))   # no step lost, none logged twice


def test_help_documents_every_flag():
    parser = build_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and len(action.help) > 5, f"--{action.dest} has no help"
    r = subprocess.run([sys.executable, "-m", "lewm_fast.train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in r.stdout


def test_schedule_and_batches():
    f = lr_lambda(1000, 0.01)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(505) == pytest.approx(0.5, abs=1e-3) and f(999) < 1e-4
    b = epoch_batches(103, 10, seed=1, epoch=0)
    assert b.shape == (10, 10) and len(set(b.ravel())) == 100
    r0, r1 = (epoch_batches(103, 10, 1, 0, rank=r, world=2) for r in (0, 1))
    assert r0.shape == r1.shape == (5, 10) and not set(r0.ravel()) & set(r1.ravel())
    assert not np.array_equal(epoch_batches(103, 10, 1, 1), b)


def test_torchrun_two_ranks(data, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29517", "-m", "lewm_fast.train", "--data", str(data), "--out", str(out),
                        "--max-steps", "6", "--ckpt-every", "3", "--epochs", "100", *TINY],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world 2" in r.stdout
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 6
    assert load_checkpoint(out / "model.safetensors").info["world_size"] == 2


def test_snapshots_keep_the_model_at_each_multiple(data, tmp_path):
    out = tmp_path / "snap"
    train(["--data", str(data), "--out", str(out), *TINY, "--max-steps", "4", "--epochs", "5",
           "--snapshot-every", "2"])
    a, b = load_checkpoint(out / "model-step2.safetensors"), load_checkpoint(out / "model-step4.safetensors")
    assert a.info["step"] == 2 and b.info["step"] == 4
    final = load_checkpoint(out / "model.safetensors")
    for k, v in final.model.state_dict().items():   # the last snapshot is the final model
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=0, atol=0)
    assert any((a.model.state_dict()[k] != v).any() for k, v in final.model.state_dict().items())


def test_stop_after_keeps_the_schedule_and_resumes_to_the_same_run(data, tmp_path):
    args = ["--data", str(data), "--max-steps", "12", "--ckpt-every", "5", "--epochs", "100", "--seed", "7", *TINY]
    ref_dir, part_dir = tmp_path / "ref", tmp_path / "part"
    train(args + ["--out", str(ref_dir), "--snapshot-every", "6"])
    stopped = train(args + ["--out", str(part_dir), "--stop-after", "6"])
    assert stopped["step"] == 6
    lr_ref = [json.loads(x)["lr"] for x in (ref_dir / "metrics.jsonl").read_text().splitlines() if '"lr"' in x]
    lr_part = [json.loads(x)["lr"] for x in (part_dir / "metrics.jsonl").read_text().splitlines() if '"lr"' in x]
    assert lr_part == lr_ref[:6]   # the 12-step schedule, not a 6-step one
    from lewm_fast.checkpoint import load_checkpoint
    a, b = load_checkpoint(ref_dir / "model-step6.safetensors"), load_checkpoint(part_dir / "model.safetensors")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), f"stopped run differs from the full run's step 6 at {k}"
    assert train(args + ["--out", str(part_dir), "--resume"])["step"] == 12
    x = torch.load(ref_dir / "last.pt", weights_only=True)["model"]
    y = torch.load(part_dir / "last.pt", weights_only=True)["model"]
    for k in x:
        assert torch.equal(x[k], y[k]), f"resumed run diverged at {k}"


def test_validation_batches_are_a_fixed_shuffled_sample(monkeypatch):
    # unshuffled validation batches would be consecutive clips of one episode (SIGReg of such a batch is not
    # comparable to training's); the order is shuffled, and the same at every evaluation (epochs compare)
    from types import SimpleNamespace

    from lewm_fast import train as tr

    seen = []

    def fake_loss(model, pixels, action, sigreg, weight, generator=None, history=None):
        seen.append(pixels.flatten().tolist())
        return {"loss": torch.tensor(0.0), "pred_loss": torch.tensor(0.0), "sigreg": torch.tensor(0.0)}

    monkeypatch.setattr(tr, "lewm_loss", fake_loss)
    val = [{"pixels": torch.tensor([float(i)]), "action": torch.zeros(1)} for i in range(64)]
    args = SimpleNamespace(batch_size=8, sigreg_weight=1.0, history=None)
    for _ in range(2):
        tr.evaluate(torch.nn.Identity(), val, None, args, "cpu", {"device_type": "cpu", "enabled": False})
    first, again = seen[:8], seen[8:]
    assert first == again and sorted(sum(first, [])) == [float(i) for i in range(64)]
    assert first[0] != [float(i) for i in range(8)]


def test_multi_step_loss_is_the_planners_rollout_error():
    """--rollout-steps K: the extra K-1 targets are what LeWM.rollout (the planner's autoregressive rollout, an
    independent writing) predicts from the first H frames; one step is exactly the single-step loss."""
    from lewm_fast.model import LeWM, LeWMConfig
    from lewm_fast.sigreg import SIGReg
    from lewm_fast.train import lewm_loss
    torch.manual_seed(0)
    cfg = LeWMConfig.tiny(num_frames=3)
    model = LeWM(cfg).eval()
    sigreg = SIGReg(num_proj=16)
    B, H, K = 4, 3, 3
    px = torch.rand(B, H + K, 3, cfg.image_size, cfg.image_size)
    act = torch.randn(B, H + K, cfg.action_dim)
    with torch.no_grad():
        got = lewm_loss(model, px, act, sigreg, generator=torch.Generator().manual_seed(1), history=H)
        emb = model.encode(px)
        teacher = model.predict(emb[:, :H], model.embed_actions(act)[:, :H])
        roll = model.rollout(act[:, None, H - 1:H + K - 1], emb=emb[:, :H], action_history=act[:, :H - 1])[:, 0]
        want = torch.stack([torch.nn.functional.mse_loss(teacher, emb[:, 1:H + 1])]
                           + [torch.nn.functional.mse_loss(roll[:, k], emb[:, k]) for k in range(H + 1, H + K)]).mean()
        assert torch.allclose(roll[:, H], teacher[:, -1], atol=1e-6)   # the rollout's first step is the teacher's
        assert float(got["pred_loss"]) == pytest.approx(float(want), rel=1e-5)
        one = lewm_loss(model, px[:, :H + 1], act[:, :H + 1], sigreg, generator=torch.Generator().manual_seed(1))
        single = torch.nn.functional.mse_loss(model.predict(emb[:, :H], model.embed_actions(act)[:, :H]), emb[:, 1:H + 1])
        assert float(one["pred_loss"]) == pytest.approx(float(single), rel=1e-6)
    with pytest.raises(ValueError, match="history 3 needs clips of more than 3 frames"):
        lewm_loss(model, px[:, :3], act[:, :3], sigreg, history=3)


def test_rollout_steps_lengthen_the_clips(data, tmp_path):
    out = tmp_path / "run"
    train(["--data", str(data), "--out", str(out), "--max-steps", "3", "--epochs", "1", "--rollout-steps", "3",
           "--history", "2", *TINY])
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["args"]["rollout_steps"] == 3 and state["step"] == 3
    with pytest.raises(SystemExit, match="rollout-steps"):
        train(["--data", str(data), "--out", str(out), "--max-steps", "3", "--epochs", "1", "--rollout-steps", "2",
               "--history", "2", "--resume", *TINY])


def test_target_grad_scales_only_the_gradient_through_the_targets():
    """--target-grad g: the loss value is the paper's; the encoder's gradient is the context path's gradient plus
    g times the target path's (checked against two hand-split backward passes: targets detached, context detached)."""
    from lewm_fast.model import LeWM, LeWMConfig
    from lewm_fast.sigreg import SIGReg
    from lewm_fast.train import lewm_loss
    torch.manual_seed(0)
    cfg = LeWMConfig.tiny(num_frames=3)
    model = LeWM(cfg).eval()
    B, H = 4, 3
    px = torch.rand(B, H + 1, 3, cfg.image_size, cfg.image_size)
    act = torch.randn(B, H + 1, cfg.action_dim)
    w = model.encoder.patch_embed.weight if hasattr(model.encoder, "patch_embed") else next(model.encoder.parameters())

    def grad_of(loss):
        model.zero_grad()
        loss.backward()
        return w.grad.clone()

    def split(detach_targets):
        emb = model.encode(px)
        ctx, tgt = (emb, emb.detach()) if detach_targets else (emb.detach(), emb)
        pred = model.predict(ctx[:, :H], model.embed_actions(act)[:, :H])
        return torch.nn.functional.mse_loss(pred, tgt[:, 1:H + 1])

    ctx_grad, tgt_grad = grad_of(split(True)), grad_of(split(False))
    for g in (1.0, 0.5, 0.0):
        terms = lewm_loss(model, px, act, SIGReg(num_proj=16), sigreg_weight=0.0, target_grad=g)
        assert float(terms["pred_loss"].detach()) == pytest.approx(float(split(True).detach()), rel=1e-6)
        torch.testing.assert_close(grad_of(terms["loss"]), ctx_grad + g * tgt_grad, rtol=1e-4, atol=1e-7)
    assert tgt_grad.abs().sum() > 0 and ctx_grad.abs().sum() > 0


def test_target_grad_is_checked_and_kept_on_resume(data, tmp_path):
    with pytest.raises(SystemExit, match="--target-grad"):
        train(["--data", str(data), "--out", str(tmp_path / "bad"), *TINY, "--target-grad", "1.5", "--max-steps", "1"])
    out = tmp_path / "run"
    train(["--data", str(data), "--out", str(out), *TINY, "--target-grad", "0", "--max-steps", "4", "--stop-after", "2"])
    with pytest.raises(SystemExit, match="--target-grad 1.0 differs"):
        train(["--data", str(data), "--out", str(out), *TINY, "--target-grad", "1", "--max-steps", "4", "--resume"])


def test_sigreg_bank_is_a_fifo_of_the_last_embeddings():
    from lewm_fast.train import SigregBank
    bank = SigregBank(5)
    bank.push(torch.arange(6.0).view(3, 2))
    bank.push(torch.arange(6.0, 12.0).view(3, 2))
    torch.testing.assert_close(bank.rows, torch.arange(2.0, 12.0).view(5, 2))


def test_sigreg_bank_resumes_exactly(data, tmp_path):
    """--sigreg-bank M: the bank travels in last.pt, so a stopped and resumed run equals an unbroken one."""
    args = [*TINY, "--sigreg-bank", "40", "--max-steps", "6", "--epochs", "1"]
    train(["--data", str(data), "--out", str(tmp_path / "full"), *args])
    train(["--data", str(data), "--out", str(tmp_path / "broken"), *args, "--stop-after", "3"])
    train(["--data", str(data), "--out", str(tmp_path / "broken"), *args, "--resume"])
    full, broken = (torch.load(tmp_path / d / "last.pt", weights_only=False) for d in ("full", "broken"))
    assert full["sigreg_bank"].shape == (40, full["config"]["embed_dim"])
    torch.testing.assert_close(broken["sigreg_bank"], full["sigreg_bank"])
    for k, v in full["model"].items():
        torch.testing.assert_close(broken["model"][k], v, msg=k)
    with pytest.raises(SystemExit, match="--sigreg-bank must be >= 0"):
        train(["--data", str(data), "--out", str(tmp_path / "bad"), *TINY, "--sigreg-bank", "-1"])


def test_inverse_dynamics_term_is_the_heads_action_error():
    """--idm-weight w / --bc-weight v: loss = the paper's loss + w * MSE(idm(z_k-1, z_k, z_k+1), action block k)
    + v * MSE(bc(z_k-1, z_k), action block k), k = 1 .. T-2."""
    from lewm_fast.model import LeWM, LeWMConfig
    from lewm_fast.sigreg import SIGReg
    from lewm_fast.train import ActionHead, lewm_loss
    torch.manual_seed(0)
    cfg = LeWMConfig.tiny(num_frames=3)
    model = LeWM(cfg).eval()
    idm, bc = ActionHead(cfg.embed_dim, cfg.action_dim, 3, hidden=16), ActionHead(cfg.embed_dim, cfg.action_dim, 2, hidden=16)
    px = torch.rand(4, 4, 3, cfg.image_size, cfg.image_size)
    act = torch.randn(4, 4, cfg.action_dim)
    with torch.no_grad():
        base = lewm_loss(model, px, act, SIGReg(num_proj=16), generator=torch.Generator().manual_seed(1))
        got = lewm_loss(model, px, act, SIGReg(num_proj=16), generator=torch.Generator().manual_seed(1),
                        heads={"idm": (idm, 0.5), "bc": (bc, 2.0)})
        emb = model.encode(px)
        want = torch.stack([torch.nn.functional.mse_loss(idm.net(torch.cat([emb[:, k - 1], emb[:, k], emb[:, k + 1]], -1)),
                                                         act[:, k]) for k in (1, 2)]).mean()
        want_bc = torch.stack([torch.nn.functional.mse_loss(bc.net(torch.cat([emb[:, k - 1], emb[:, k]], -1)), act[:, k])
                               for k in (1, 2)]).mean()
    assert float(got["idm_loss"]) == pytest.approx(float(want), rel=1e-5)
    assert float(got["bc_loss"]) == pytest.approx(float(want_bc), rel=1e-5)
    assert float(got["loss"]) == pytest.approx(float(base["loss"]) + 0.5 * float(want) + 2.0 * float(want_bc), rel=1e-5)


def _check_heads_resume_exactly(data, tmp_path, args, heads):
    """A run with training-only heads: stopped at step 3 and resumed == unbroken (model and each head's weights),
    every logged step has each head's loss, and the model file loads strictly (no head weights in it)."""
    train(["--data", str(data), "--out", str(tmp_path / "full"), *args])
    train(["--data", str(data), "--out", str(tmp_path / "broken"), *args, "--stop-after", "3"])
    train(["--data", str(data), "--out", str(tmp_path / "broken"), *args, "--resume"])
    full, broken = (torch.load(tmp_path / d / "last.pt", weights_only=False) for d in ("full", "broken"))
    for part in (*heads, "model"):
        for k, v in full[part].items():
            torch.testing.assert_close(broken[part][k], v, msg=f"{part}.{k}")
    rows = [json.loads(ln) for ln in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(f"{h}_loss" in r for r in rows if "loss" in r for h in heads)
    load_checkpoint(tmp_path / "full" / "model.safetensors")     # strict load: no head weights in the model file
    return full


def test_inverse_dynamics_head_resumes_and_stays_out_of_the_checkpoint(data, tmp_path):
    _check_heads_resume_exactly(data, tmp_path, [*TINY, "--idm-weight", "1", "--bc-weight", "0.5", "--max-steps", "6",
                                                 "--epochs", "1"], ("idm", "bc"))


def test_reconstruction_term_is_the_decoders_pixel_error():
    """--recon-weight w: loss = the paper's loss + w * MSE(decoder(z_k), frame k as the encoder sees it,
    block-averaged to the decoder's size), over every frame of the clip; checked against a loop by hand."""
    from lewm_fast.model import LeWM, LeWMConfig
    from lewm_fast.sigreg import SIGReg
    from lewm_fast.train import FrameDecoder, lewm_loss
    torch.manual_seed(0)
    cfg = LeWMConfig.tiny(num_frames=3)
    model = LeWM(cfg).eval()
    dec = FrameDecoder(cfg.embed_dim, size=16)
    px = torch.randint(0, 256, (2, 3, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    act = torch.randn(2, 3, cfg.action_dim)
    with torch.no_grad():
        base = lewm_loss(model, px, act, SIGReg(num_proj=16), generator=torch.Generator().manual_seed(1))
        got = lewm_loss(model, px, act, SIGReg(num_proj=16), generator=torch.Generator().manual_seed(1),
                        heads={"recon": (dec, 3.0)})
        emb = model.encode(px)
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        cell = cfg.image_size // 16
        errs = []
        for b in range(2):
            for t in range(3):
                frame = (px[b, t].float() / 255 - mean[:, None, None]) / std[:, None, None]
                target = frame.reshape(3, 16, cell, 16, cell).mean(dim=(2, 4))   # block means by hand
                errs.append(((dec(emb[b, t][None])[0] - target) ** 2).mean())
        want = torch.stack(errs).mean()
    assert dec(emb).shape == (2, 3, 3, 16, 16)
    assert float(got["recon_loss"]) == pytest.approx(float(want), rel=1e-5)
    assert float(got["loss"]) == pytest.approx(float(base["loss"]) + 3.0 * float(want), rel=1e-5)


def test_reconstruction_decoder_resumes_stays_out_of_the_checkpoint_and_checks_its_size(data, tmp_path):
    args = [*TINY, "--recon-weight", "2", "--recon-size", "16", "--history", "1", "--max-steps", "6", "--epochs", "1"]
    full = _check_heads_resume_exactly(data, tmp_path, args, ("recon",))
    assert full["idm"] is None
    with pytest.raises(SystemExit, match="--recon-size must be a positive multiple of 8"):
        train(["--data", str(data), "--out", str(tmp_path / "bad"), *TINY, "--recon-weight", "1", "--recon-size", "20"])
    with pytest.raises(SystemExit, match="--recon-size 24 differs from the checkpoint's 16"):
        train(["--data", str(data), "--out", str(tmp_path / "full"), *args[:-6], "--recon-size", "24", "--resume"])


def test_state_targets_are_the_probes_targets_standardised():
    """StateTargets: z-scored dataset state -> lewm_fast.probe's targets (PushT: agent/block x, y and the block
    angle as sin, cos), standardised with the training states' statistics; checked against the formulas."""
    from lewm_fast.train import StateTargets
    rng = np.random.default_rng(0)
    raw = np.column_stack([rng.uniform(0, 512, (200, 4)), rng.uniform(0, 2 * np.pi, 200), rng.normal(0, 5, (200, 2))])
    stats = {"mean": raw.mean(0), "std": raw.std(0)}
    tgt = StateTargets("pusht", stats, raw)
    assert tgt.names == ["agent_x", "agent_y", "block_x", "block_y", "block_angle_sin", "block_angle_cos"]
    z = torch.from_numpy((raw - stats["mean"]) / stats["std"]).float().view(50, 4, 7)
    got = tgt(z).view(200, 6).double().numpy()
    want = np.column_stack([raw[:, :4], np.sin(raw[:, 4]), np.cos(raw[:, 4])])
    want = (want - want.mean(0)) / want.std(0)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_state_term_is_the_heads_state_error_and_needs_a_state_column(data, tmp_path):
    from lewm_fast.model import LeWM, LeWMConfig
    from lewm_fast.sigreg import SIGReg
    from lewm_fast.train import lewm_loss
    torch.manual_seed(0)
    cfg = LeWMConfig.tiny(num_frames=3)
    model = LeWM(cfg).eval()
    head = torch.nn.Linear(cfg.embed_dim, 5)
    px, act, state = torch.rand(2, 3, 3, cfg.image_size, cfg.image_size), torch.randn(2, 3, cfg.action_dim), torch.randn(2, 3, 5)
    with torch.no_grad():
        base = lewm_loss(model, px, act, SIGReg(num_proj=16), generator=torch.Generator().manual_seed(1))
        got = lewm_loss(model, px, act, SIGReg(num_proj=16), generator=torch.Generator().manual_seed(1),
                        heads={"state": (head, 0.5)}, state=state)
        want = ((model.encode(px) @ head.weight.T + head.bias - state) ** 2).mean()
    assert float(got["state_loss"]) == pytest.approx(float(want), rel=1e-5)
    assert float(got["loss"]) == pytest.approx(float(base["loss"]) + 0.5 * float(want), rel=1e-5)
    with pytest.raises(ValueError, match="state targets"):
        lewm_loss(model, px, act, SIGReg(num_proj=16), heads={"state": (head, 0.5)})

    args = [*TINY, "--state-weight", "1", "--max-steps", "6", "--epochs", "1"]
    _check_heads_resume_exactly(data, tmp_path, args, ("state",))

    from lewm_fast.data import HDF5Writer
    from helpers import moving_square_episode
    bare = tmp_path / "nostate.h5"
    with HDF5Writer(bare, metadata={"env": "synthetic"}) as w:
        for i in range(4):
            ep = moving_square_episode(np.random.default_rng(i))
            w.write_episode({"pixels": ep["pixels"], "action": ep["action"]})
    with pytest.raises(SystemExit, match="--state-weight needs a `state` column"):
        train(["--data", str(bare), "--out", str(tmp_path / "bad"), *args])


def test_resume_compares_flags_a_checkpoint_predates_with_their_defaults():
    """An argument missing from an older checkpoint's args means its run used the flag's default: giving another
    value is refused like any changed run argument; leaving it alone resumes with the default."""
    from lewm_fast.train import check_resume
    args = build_parser().parse_args(["--data", "d.h5", "--idm-weight", "1"])
    saved = {k: v for k, v in vars(build_parser().parse_args(["--data", "d.h5"])).items() if k != "idm_weight"}
    with pytest.raises(SystemExit, match="--idm-weight 1.0 differs from the checkpoint's 0.0"):
        check_resume(args, saved, {"data", "idm_weight"})
    plain = build_parser().parse_args(["--data", "d.h5"])
    assert check_resume(plain, saved, {"data"}) == [] and plain.idm_weight == 0.0


def test_action_heads_need_three_frame_clips(data, tmp_path):
    with pytest.raises(SystemExit, match="--idm-weight need clips of at least 3 frames"):
        train(["--data", str(data), "--out", str(tmp_path / "r"), *TINY, "--idm-weight", "1", "--history", "1",
               "--max-steps", "1"])


def test_colour_jitter_maps_each_frame_by_its_own_affine_colour_map():
    """--colour-jitter s: every frame's pixels go through one affine map of RGB (recovered here by least squares
    from the unclipped pixels), and different frames through different maps; s = 0 leaves frames as they are."""
    from lewm_fast.train import colour_jitter
    g = torch.Generator().manual_seed(0)
    # mid-range values so that few pixels clip
    frames = torch.randint(90, 166, (2, 3, 3, 6, 6), generator=g, dtype=torch.uint8)
    frames[0, 1] = frames[0, 0]                                   # two identical frames in one clip
    out = colour_jitter(frames, 0.2, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == frames.shape
    maps = []
    for b in range(2):
        for t in range(3):
            x = frames[b, t].reshape(3, -1).T.double() / 255
            y = out[b, t].reshape(3, -1).T.double() / 255
            keep = ((y > 0) & (y < 1)).all(1)
            assert keep.sum() > 20
            design = torch.cat([x[keep], torch.ones(int(keep.sum()), 1, dtype=torch.float64)], 1)
            coef = torch.linalg.lstsq(design, y[keep]).solution
            resid = (design @ coef - y[keep]).abs().max()
            assert resid < 1.5 / 255, f"frame {b},{t} is not one affine colour map (residual {float(resid) * 255:.2f} levels)"
            maps.append(coef)
    assert (maps[0] - maps[1]).abs().max() > 0.05                 # identical frames got different maps
    torch.testing.assert_close(colour_jitter(frames, 0.2, torch.Generator().manual_seed(1)), out)
    assert torch.equal(colour_jitter(frames, 0.0), frames)


def test_colour_jitter_trains_on_jittered_frames_and_validates_on_recorded_ones(data, tmp_path):
    """LossModule applies the jitter before the paper's loss (same random draws -> the same loss as lewm_loss on
    the jittered frames); validation (lewm_loss) sees the recorded frames; the flag is checked and kept on resume."""
    from lewm_fast.model import LeWM, LeWMConfig
    from lewm_fast.sigreg import SIGReg
    from lewm_fast.train import LossModule, colour_jitter, lewm_loss
    torch.manual_seed(0)
    cfg = LeWMConfig(image_size=32, patch_size=8, embed_dim=32, enc_depth=1, enc_heads=2, enc_mlp_dim=64,
                     proj_hidden_dim=64, pred_depth=1, pred_heads=2, pred_dim_head=8, pred_mlp_dim=64)
    model, sigreg = LeWM(cfg).eval(), SIGReg(num_proj=16)
    px = torch.randint(0, 256, (4, 4, 3, 32, 32), dtype=torch.uint8)
    act = torch.randn(4, 4, cfg.action_dim)
    got = LossModule(model, sigreg, 0.09, colour_jitter=0.3)(px, act, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    want = lewm_loss(model, colour_jitter(px, 0.3, gen), act, sigreg, 0.09, gen)
    plain = lewm_loss(model, px, act, sigreg, 0.09, torch.Generator().manual_seed(5))
    assert float(got["loss"]) == pytest.approx(float(want["loss"]), rel=1e-6)
    assert abs(float(got["pred_loss"]) - float(plain["pred_loss"])) > 1e-4
    with pytest.raises(SystemExit, match="--colour-jitter"):
        train(["--data", str(data), "--out", str(tmp_path / "bad"), *TINY, "--colour-jitter", "-0.1", "--max-steps", "1"])
    out = tmp_path / "run"
    train(["--data", str(data), "--out", str(out), *TINY, "--colour-jitter", "0.3", "--max-steps", "4", "--stop-after", "2"])
    with pytest.raises(SystemExit, match="--colour-jitter 0.0 differs"):
        train(["--data", str(data), "--out", str(out), *TINY, "--colour-jitter", "0", "--max-steps", "4", "--resume"])
    train(["--data", str(data), "--out", str(out), *TINY, "--max-steps", "4", "--resume"])
    assert torch.load(out / "last.pt", weights_only=False)["args"]["colour_jitter"] == 0.3


def test_init_starts_from_a_checkpoints_weights_config_and_normalisation(data, tmp_path):
    """--init CKPT: the run starts from CKPT's weights (a 1e-12 learning rate leaves them as they were), takes
    its config (another preset's layer sizes) and action normalisation, records where it came from, and refuses
    --preset / --config and unreadable checkpoints."""
    base = [*TINY[2:], "--epochs", "1"]                       # TINY without --preset
    train(["--data", str(data), "--out", str(tmp_path / "a"), *TINY, "--max-steps", "3", "--epochs", "1"])
    a = load_checkpoint(tmp_path / "a" / "model.safetensors")
    train(["--data", str(data), "--out", str(tmp_path / "b"), *base, "--init", str(tmp_path / "a" / "model.safetensors"),
           "--max-steps", "2", "--lr", "1e-12", "--weight-decay", "0"])
    b = load_checkpoint(tmp_path / "b" / "model.safetensors")
    assert b.config == a.config
    got = dict(b.model.named_parameters())      # (BatchNorm's running statistics move with any training step)
    for k, v in a.model.named_parameters():
        torch.testing.assert_close(got[k], v, atol=1e-6, rtol=0, msg=k)
    for col, s in a.stats.items():
        for k, v in s.items():
            torch.testing.assert_close(b.stats[col][k], v)
    assert b.info["init"] == {"checkpoint": str(tmp_path / "a" / "model.safetensors"), "step": 3}
    assert b.info["preset"] == "tiny"
    with pytest.raises(SystemExit, match="drop --preset"):
        train(["--data", str(data), "--out", str(tmp_path / "c"), *TINY, "--init", str(tmp_path / "a" / "model.safetensors")])
    with pytest.raises(SystemExit, match="--init"):
        train(["--data", str(data), "--out", str(tmp_path / "d"), *base, "--init", str(tmp_path / "missing.safetensors")])
