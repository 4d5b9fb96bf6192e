"""Kindling's optimizers and schedules against torch.optim.

Drives kd_optim through ctypes from the same initial vector and the same
random gradients as a torch.optim optimizer (SGD with momentum / nesterov /
weight decay, Adam with weight decay, AdamW), with StepLR and
CosineAnnealingLR stepped once after every optimizer step, and requires
the parameters, the learning rate and the optimizer state to agree.

Finds the library through kdlib (KD_LIB, else beside KD_CLI, else
<repo>/build/libkindling.so); skips (with the reason) when it is missing.
"""
import ctypes

import numpy as np
import pytest
# kdlib (on sys.path via conftest.py) locates the library and declares its
# functions with the one mirror of kindling.h; conftest's `kd` fixture skips
# with kdlib's reason when the library is missing.
from kdlib import (F32P, KD_OPT_ADAM, KD_OPT_ADAMW, KD_OPT_MOMENTUM, KD_OPT_SGD, KD_SCHED_CONSTANT,
                   KD_SCHED_COSINE, KD_SCHED_STEP)

torch = pytest.importorskip("torch")

STEPS = 10
N = 37  # not a multiple of the SIMD width: vector body and scalar tail
TOL = 1e-5


@pytest.fixture(scope="module")
def lib(kd):
    return kd.load()  # every function is declared by the mirror (kindling_spark/capi.py)


def _ok(lib, status, what):
    assert status == 0, f"{what}: status {status}: {lib.kd_last_error().decode()}"


# (id, kindling settings, torch optimizer factory, torch state keys per slot)
OPTIMIZERS = [
    ("sgd", dict(kind=KD_OPT_SGD, lr=0.1),
     lambda p: torch.optim.SGD([p], lr=0.1), []),
    ("sgd_wd", dict(kind=KD_OPT_SGD, lr=0.1, weight_decay=0.05),
     lambda p: torch.optim.SGD([p], lr=0.1, weight_decay=0.05), []),
    ("momentum", dict(kind=KD_OPT_MOMENTUM, lr=0.05, momentum=0.9),
     lambda p: torch.optim.SGD([p], lr=0.05, momentum=0.9), ["momentum_buffer"]),
    ("momentum_wd", dict(kind=KD_OPT_MOMENTUM, lr=0.05, momentum=0.7, weight_decay=0.01),
     lambda p: torch.optim.SGD([p], lr=0.05, momentum=0.7, weight_decay=0.01), ["momentum_buffer"]),
    ("nesterov", dict(kind=KD_OPT_MOMENTUM, lr=0.05, momentum=0.9, nesterov=1, weight_decay=0.01),
     lambda p: torch.optim.SGD([p], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
     ["momentum_buffer"]),
    ("adam", dict(kind=KD_OPT_ADAM, lr=0.01),
     lambda p: torch.optim.Adam([p], lr=0.01), ["exp_avg", "exp_avg_sq"]),
    ("adam_wd", dict(kind=KD_OPT_ADAM, lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
     lambda p: torch.optim.Adam([p], lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
     ["exp_avg", "exp_avg_sq"]),
    ("adamw", dict(kind=KD_OPT_ADAMW, lr=0.01, weight_decay=0.1),
     lambda p: torch.optim.AdamW([p], lr=0.01, weight_decay=0.1), ["exp_avg", "exp_avg_sq"]),
]

# (id, kindling settings, torch scheduler factory or None)
SCHEDULES = [
    ("constant", dict(schedule=KD_SCHED_CONSTANT), None),
    ("step", dict(schedule=KD_SCHED_STEP, step_size=3, gamma=0.5),
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    # total_steps = STEPS: torch's cosine is periodic past T_max, Kindling's
    # stays at lr_min, so the comparison stays within one half period.
    ("cosine", dict(schedule=KD_SCHED_COSINE, total_steps=STEPS, lr_min=0.001),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS, eta_min=0.001)),
    # Warmup over W steps: lr * (t + 1) / W is LinearLR from 1/W over W - 1
    # steps; then the schedule counts from the warmup's end (the cosine over
    # the remaining STEPS - W steps).
    ("warmup_constant", dict(schedule=KD_SCHED_CONSTANT, warmup_steps=3), lambda o: _warmup(o, 3, None)),
    ("warmup_step", dict(schedule=KD_SCHED_STEP, step_size=3, gamma=0.5, warmup_steps=3),
     lambda o: _warmup(o, 3, torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5))),
    ("warmup_cosine", dict(schedule=KD_SCHED_COSINE, total_steps=STEPS, lr_min=0.001, warmup_steps=3),
     lambda o: _warmup(o, 3, torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS - 3, eta_min=0.001))),
]


def _warmup(opt, w, after):
    """torch's linear warmup over w steps followed by `after` (None: constant)."""
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / w, end_factor=1.0, total_iters=w - 1)
    after = after or torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, after], milestones=[w])


def _config(lib, **fields):
    cfg = lib.kd_optim_config_default()
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg


def _run_pair(lib, opt_settings, make_torch_opt, sched_settings, make_sched, state_keys, seed):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(N).astype(np.float32)
    grads = [rng.standard_normal(N).astype(np.float32) * np.float32(1 + s) for s in range(STEPS)]

    cfg = _config(lib, **opt_settings, **sched_settings)
    _ok(lib, lib.kd_optim_config_validate(ctypes.byref(cfg)), "validate")
    handle = ctypes.c_void_p()
    _ok(lib, lib.kd_optim_create(ctypes.byref(cfg), N, ctypes.byref(handle)), "create")
    try:
        p = p0.copy()
        tp = torch.tensor(p0.copy(), requires_grad=True)
        topt = make_torch_opt(tp)
        sched = make_sched(topt) if make_sched else None
        for s, g in enumerate(grads):
            torch_lr = topt.param_groups[0]["lr"]
            kd_lr = lib.kd_optim_current_lr(handle)
            assert kd_lr == pytest.approx(torch_lr, rel=1e-9, abs=1e-15), f"lr before step {s}"
            gc = np.ascontiguousarray(g)
            _ok(lib, lib.kd_optim_step(handle, p.ctypes.data_as(F32P), gc.ctypes.data_as(F32P)), "step")
            tp.grad = torch.tensor(g.copy())
            topt.step()
            if sched:
                sched.step()
            diff = np.max(np.abs(p - tp.detach().numpy()))
            assert diff < TOL, f"parameters differ by {diff} after step {s + 1}"

        # The run must have moved the parameters, or agreement proves little.
        assert np.max(np.abs(p - p0)) > 1e-2

        count = ctypes.c_size_t()
        buf = lib.kd_optim_state(handle, ctypes.byref(count))
        assert lib.kd_optim_state_slots(handle) == len(state_keys)
        assert count.value == len(state_keys) * N
        tstate = topt.state[tp]
        for slot, key in enumerate(state_keys):
            ours = np.ctypeslib.as_array(buf, shape=(count.value,))[slot * N:(slot + 1) * N]
            theirs = tstate[key].numpy()
            diff = np.max(np.abs(ours - theirs))
            name = lib.kd_optim_state_slot_name(handle, slot).decode()
            assert diff < TOL, f"state '{name}' differs from torch '{key}' by {diff}"
    finally:
        lib.kd_optim_free(handle)


@pytest.mark.parametrize("sched_id, sched_settings, make_sched", SCHEDULES, ids=[s[0] for s in SCHEDULES])
@pytest.mark.parametrize("opt_id, opt_settings, make_torch_opt, state_keys", OPTIMIZERS,
                         ids=[o[0] for o in OPTIMIZERS])
def test_matches_torch(lib, opt_id, opt_settings, make_torch_opt, state_keys, sched_id, sched_settings,
                       make_sched):
    seed = 1000 * [o[0] for o in OPTIMIZERS].index(opt_id) + [s[0] for s in SCHEDULES].index(sched_id)
    _run_pair(lib, opt_settings, make_torch_opt, sched_settings, make_sched, state_keys, seed)


def test_struct_mirror_matches_defaults(lib):
    """The ctypes mirror reads the documented defaults, so its layout is right."""
    cfg = lib.kd_optim_config_default()
    assert (cfg.kind, cfg.lr, cfg.momentum, cfg.nesterov) == (KD_OPT_SGD, 0.01, 0.9, 0)
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (0.9, 0.999, 1e-8, 0.0)
    assert (cfg.schedule, cfg.step_size, cfg.gamma, cfg.total_steps, cfg.lr_min) == (
        KD_SCHED_CONSTANT, 0, 0.1, 0, 0.0)
