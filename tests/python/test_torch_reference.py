"""Kindling against PyTorch (CPU, float32) on real Fashion-MNIST batches.

For the mlp and lenet presets the same architecture is built in PyTorch and
given Kindling's initial weights (the layouts are PyTorch's: dense [out, in],
conv2d [out_c, in_c, kh, kw]). Then, on batches of 16 training images:
  - forward probabilities vs softmax(logits), the loss vs F.cross_entropy,
  - every gradient after backward vs param.grad,
  - every weight after 1 and after 3 optimizer steps (a new batch each step)
    for SGD, momentum (plain, Nesterov, with weight decay), Adam and AdamW,
  - kd_train itself (shuffle off) against the same steps in PyTorch.
Every comparison is a max absolute difference within 1e-4.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the torch reference tests need it")
nn = torch.nn
F = torch.nn.functional

TOL = 1e-4
BATCH = 16


def torch_model(preset):
    if preset == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                             nn.Linear(64, 10))
    if preset == "lenet":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.Tanh(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.Tanh(), nn.Linear(500, 10))
    raise ValueError(preset)


TORCH_TYPE = {"flatten": nn.Flatten, "dense": nn.Linear, "relu": nn.ReLU, "tanh": nn.Tanh,
              "conv2d": nn.Conv2d, "maxpool": nn.MaxPool2d}


def paired_layers(net, model):
    """(kindling layer info, torch module) for every layer with parameters,
    after checking that both are the same sequence of layers."""
    infos = net.layers()
    types = [i.type.decode() for i in infos]
    assert types[-1] == "softmax", "the torch model ends with logits; Kindling's last layer should be softmax"
    assert len(types) - 1 == len(model), f"Kindling layers {types} vs torch {model}"
    for t, m in zip(types, model):
        assert isinstance(m, TORCH_TYPE[t]), f"Kindling {t} vs torch {m}"
    pairs = []
    for info, m in zip(infos, model):
        if info.weight_count:
            w, b = net.weight(info)
            assert tuple(m.weight.shape) == w.shape, f"{info.name.decode()}: {w.shape} vs {tuple(m.weight.shape)}"
            assert (b is None) == (m.bias is None)
            pairs.append((info, m))
    return pairs


def build_pair(kd, preset, seed=7):
    net = kd.Net(preset, seed)
    model = torch_model(preset)
    pairs = paired_layers(net, model)
    with torch.no_grad():
        for info, m in pairs:
            w, b = net.weight(info)
            m.weight.copy_(torch.from_numpy(w.copy()))
            if b is not None:
                m.bias.copy_(torch.from_numpy(b.copy()))
    return net, model, pairs


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def compare_tensors(net, pairs, what, buf_of_net, tensor_of):
    """Largest differences per parameter, failing with all names that miss."""
    bad = []
    for info, m in pairs:
        w, b = net.weight(info, buf_of_net())
        for name, mine, ref in (("weight", w, tensor_of(m.weight)), ("bias", b, tensor_of(m.bias) if b is not None else None)):
            if mine is None:
                continue
            d = max_diff(mine, ref.detach().numpy())
            if not d <= TOL:
                bad.append(f"{info.name.decode()}.{name}: max |diff| {d:.3g}")
    assert not bad, f"{what} differ from PyTorch beyond {TOL}: " + "; ".join(bad)


def batch(fashion, k):
    x, y = fashion
    return x[k * BATCH:(k + 1) * BATCH], y[k * BATCH:(k + 1) * BATCH]


@pytest.mark.parametrize("preset", ["mlp", "lenet"])
def test_forward_loss_and_gradients(kd, fashion, preset):
    net, model, pairs = build_pair(kd, preset)
    x, y = batch(fashion, 0)

    net.forward(x, training=1)
    probs = net.output()
    loss, correct = net.loss(y)
    net.backward(y)

    logits = model(torch.from_numpy(x))
    ref_loss = F.cross_entropy(logits, torch.from_numpy(y).long())
    ref_loss.backward()
    ref_probs = torch.softmax(logits, dim=1).detach().numpy()

    assert probs.shape == (BATCH, 10)
    assert max_diff(probs, ref_probs) <= TOL
    assert abs(loss - ref_loss.item()) <= TOL
    # The prediction count is from the same probabilities (no near-ties in practice).
    assert correct == int((ref_probs.argmax(1) == y).sum())
    compare_tensors(net, pairs, "gradients", net.grads, lambda t: t.grad)

    # Inference mode gives the same probabilities for these layers.
    assert max_diff(net.predict(x), ref_probs) <= TOL


OPTIMIZERS = {
    "sgd": (dict(kind=0, lr=0.1, momentum=0.0), lambda p: torch.optim.SGD(p, lr=0.1)),
    "momentum": (dict(kind=1, lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "nesterov": (dict(kind=1, lr=0.05, momentum=0.9, nesterov=1),
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "momentum_wd": (dict(kind=1, lr=0.05, momentum=0.9, weight_decay=5e-3),
                    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-3)),
    "adam": (dict(kind=2, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8),
             lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)),
    "adamw": (dict(kind=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.05),
              lambda p: torch.optim.AdamW(p, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("preset", ["mlp", "lenet"])
def test_optimizer_steps(kd, fashion, preset, opt_name):
    net, model, pairs = build_pair(kd, preset)
    fields, make_torch_opt = OPTIMIZERS[opt_name]
    opt = kd.Optim(kd.optim_config(**fields), net.count)
    topt = make_torch_opt(model.parameters())

    for step in range(1, 4):
        x, y = batch(fashion, step)  # a new batch for every step
        net.forward(x, training=1)
        net.backward(y)
        opt.step_net(net)

        topt.zero_grad()
        F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y).long()).backward()
        topt.step()

        if step in (1, 3):
            compare_tensors(net, pairs, f"{opt_name} weights after {step} step(s)", net.params, lambda t: t)
    assert opt.steps() == 3
    # The run really moved the weights (so the comparison is not of two untouched copies).
    fresh = kd.Net(preset, 7)
    assert max_diff(fresh.params(), net.params()) > 10 * TOL


def test_kd_train_matches_torch(kd, fashion):
    """kd_train with shuffle off walks the data in order: 3 steps of 16."""
    net, model, pairs = build_pair(kd, "mlp")
    x, y = fashion[0][:3 * BATCH], fashion[1][:3 * BATCH]
    ds = kd.KdDataset(x, y, (1, 28, 28))
    opt = kd.Optim(kd.optim_config(kd.KD_OPT_MOMENTUM, lr=0.05, momentum=0.9), net.count)
    history = kd.train(net, opt, ds, epochs=1, batch_size=BATCH, shuffle=0, seed=3)

    topt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses, hits = [], 0
    for k in range(3):
        xb, yb = batch((x, y), k)
        topt.zero_grad()
        logits = model(torch.from_numpy(xb))
        loss = F.cross_entropy(logits, torch.from_numpy(yb).long())
        loss.backward()
        topt.step()
        losses.append(loss.item())
        hits += int((logits.argmax(1).numpy() == yb).sum())

    assert opt.steps() == 3
    assert len(history) == 1 and history[0]["epoch"] == 1
    assert abs(history[0]["train_loss"] - np.mean(losses)) <= TOL
    # Allow one near-tie argmax to go the other way.
    assert abs(history[0]["train_accuracy"] - hits / len(y)) <= 1.0 / len(y) + 1e-12
    compare_tensors(net, pairs, "weights after kd_train", net.params, lambda t: t)

