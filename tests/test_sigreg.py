import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lewm_fast.sigreg import SIGReg


def slow_sigreg(z: torch.Tensor, A: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> float:
    """Spec B written out in float64 with explicit loops over knots."""
    z, A = z.double(), A.double()
    x = z @ A                                                        # (T, N, P)
    step = t_max / (knots - 1)
    total = torch.zeros(x.shape[0], x.shape[2], dtype=torch.float64)
    for k in range(knots):
        t = k * step
        w = (step if k in (0, knots - 1) else 2 * step) * math.exp(-t * t / 2)
        err = (torch.cos(t * x).mean(1) - math.exp(-t * t / 2)) ** 2 + torch.sin(t * x).mean(1) ** 2
        total += w * err
    return float((total * z.shape[1]).mean())


def unit_columns(D, P, seed):
    A = torch.randn(D, P, generator=torch.Generator().manual_seed(seed))
    return A / A.norm(dim=0, keepdim=True)


def test_matches_formula():
    z = torch.randn(3, 64, 16, generator=torch.Generator().manual_seed(0)) * 1.3 + 0.2
    A = unit_columns(16, 128, 1)
    assert SIGReg(num_proj=128)(z, A).item() == pytest.approx(slow_sigreg(z, A), rel=1e-4)


def test_small_on_gaussian_large_on_collapsed():
    g = torch.Generator().manual_seed(0)
    sig = SIGReg()
    gauss = sig(torch.randn(4, 1024, 192, generator=g), generator=g).item()
    collapsed = sig(torch.randn(4, 1, 192, generator=g).expand(4, 1024, 192) * 0.01, generator=g).item()
    shifted = sig(torch.randn(4, 1024, 192, generator=g) * 0.2 + 1.0, generator=g).item()
    # For an i.i.d. N(0,1) sample, E[N err_k] = Var cos(t x) + Var sin(t x) = 1 - exp(-t_k^2), so the
    # expected statistic is sum_k w_k (1 - exp(-t_k^2)), whatever N is.
    t = torch.linspace(0, 3, 17, dtype=torch.float64)
    w = torch.full((17,), 2 * 3 / 16, dtype=torch.float64)
    w[0] = w[-1] = 3 / 16
    expected = float((w * torch.exp(-t**2 / 2) * (1 - torch.exp(-t**2))).sum())
    assert 0.8 * expected < gauss < 1.2 * expected
    assert collapsed > 100 * expected and shifted > 20 * expected


def test_matches_reference_package(reference):
    from stable_worldmodel.wm.loss import SIGReg as RefSIGReg

    z = torch.randn(4, 32, 24, generator=torch.Generator().manual_seed(3)) * 0.7
    torch.manual_seed(11)
    ref = RefSIGReg()(z).item()
    torch.manual_seed(11)   # same global-RNG draw of the projections
    ours = SIGReg()(z).item()
    assert ours == pytest.approx(ref, rel=1e-5)


def _ddp_worker(rank, world, init_file, z_full, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        n = z_full.shape[1] // world
        z = z_full[:, rank * n:(rank + 1) * n].clone().requires_grad_(True)
        # each rank seeds differently: the broadcast must make every rank use rank 0's projections
        gen = torch.Generator().manual_seed(100 + rank)
        loss = SIGReg(num_proj=64)(z, generator=gen)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": z.grad}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_data_parallel_equals_single_process_on_concatenated_batch():
    world = 2
    z_full = torch.randn(4, 48, 16, generator=torch.Generator().manual_seed(5))
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_ddp_worker, args=(world, os.path.join(d, "init"), z_full, d), nprocs=world, join=True)
        res = [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(world)]
    z = z_full.clone().requires_grad_(True)
    single = SIGReg(num_proj=64)(z, generator=torch.Generator().manual_seed(100))
    single.backward()
    for r in range(world):
        assert res[r]["loss"].item() == pytest.approx(single.item(), rel=1e-5)
        # autograd-aware all-reduce: each rank holds world x its share; DDP's averaging divides by world
        n = z_full.shape[1] // world
        torch.testing.assert_close(res[r]["grad"] / world, z.grad[:, r * n:(r + 1) * n], rtol=1e-4, atol=1e-7)


def test_bank_joins_every_time_steps_sample_without_gradient():
    """bank rows count as extra samples of each time step (the slow formula on the concatenation), and the
    gradient reaches only the current batch: equal to the concatenation's gradient on those rows."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 16, 8, generator=g)
    bank = torch.randn(40, 8, generator=g) * 0.5 + 0.3
    A = unit_columns(8, 32, 4)
    joined = torch.cat([z, bank.expand(3, 40, 8)], dim=1)
    zg = z.clone().requires_grad_(True)
    got = SIGReg(num_proj=32)(zg, A, bank=bank)
    assert got.item() == pytest.approx(slow_sigreg(joined, A), rel=1e-4)
    got.backward()
    jg = joined.clone().requires_grad_(True)
    SIGReg(num_proj=32)(jg, A).backward()
    torch.testing.assert_close(zg.grad, jg.grad[:, :16], rtol=1e-4, atol=1e-7)
    empty = SIGReg(num_proj=32)(z, A, bank=torch.zeros(0, 8))
    assert empty.item() == pytest.approx(slow_sigreg(z, A), rel=1e-4)
