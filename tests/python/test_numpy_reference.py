"""Kindling's mlp preset against an independent float64 numpy implementation
(no PyTorch needed): forward probabilities, loss, every gradient, and the
weights after one SGD step, on a batch of 16 real Fashion-MNIST images.
Max absolute difference within 1e-4."""
import numpy as np

TOL = 1e-4
BATCH = 16
LR = 0.1


def dense_layers(net):
    """[(info, W, b)] of the mlp's dense layers (copies, float64), checking
    the preset's layer sequence on the way."""
    infos = net.layers()
    types = [i.type.decode() for i in infos]
    assert types == ["flatten", "dense", "relu", "dense", "relu", "dense", "softmax"], types
    out = []
    for info in infos:
        if info.type == b"dense":
            w, b = net.weight(info)
            out.append((info, w.astype(np.float64), b.astype(np.float64)))
    return out


def numpy_step(layers, x, y):
    """Forward, mean cross-entropy, backward and an SGD step in float64."""
    h = [x.reshape(len(x), -1).astype(np.float64)]  # inputs of each dense layer
    z = None
    for k, (_, W, b) in enumerate(layers):
        z = h[-1] @ W.T + b
        if k < len(layers) - 1:
            h.append(np.maximum(z, 0.0))
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(x)
    loss = -np.mean(np.log(p[np.arange(n), y]))

    dz = p.copy()
    dz[np.arange(n), y] -= 1.0
    dz /= n
    grads = [None] * len(layers)
    for k in range(len(layers) - 1, -1, -1):
        W = layers[k][1]
        grads[k] = (dz.T @ h[k], dz.sum(axis=0))
        if k:
            dz = (dz @ W) * (h[k] > 0)
    stepped = [(W - LR * gW, b - LR * gb) for (_, W, b), (gW, gb) in zip(layers, grads)]
    return p, loss, grads, stepped


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def test_mlp_matches_numpy(kd, fashion):
    x, y = fashion[0][:BATCH], fashion[1][:BATCH]
    net = kd.Net("mlp", 11)
    layers = dense_layers(net)
    p_ref, loss_ref, grads_ref, stepped_ref = numpy_step(layers, x, y)

    net.forward(x, training=1)
    assert max_diff(net.output(), p_ref) <= TOL
    loss, correct = net.loss(y)
    assert abs(loss - loss_ref) <= TOL
    assert correct == int((p_ref.argmax(1) == y).sum())

    net.backward(y)
    for (info, _, _), (gW, gb) in zip(layers, grads_ref):
        w, b = net.weight(info, net.grads())
        assert max_diff(w, gW) <= TOL, f"{info.name.decode()} weight gradient"
        assert max_diff(b, gb) <= TOL, f"{info.name.decode()} bias gradient"

    opt = kd.Optim(kd.optim_config(kd.KD_OPT_SGD, lr=LR, momentum=0.0), net.count)
    opt.step_net(net)
    moved = 0.0
    for (info, W0, _), (W1, b1) in zip(layers, stepped_ref):
        w, b = net.weight(info)
        assert max_diff(w, W1) <= TOL, f"{info.name.decode()} weight after one SGD step"
        assert max_diff(b, b1) <= TOL, f"{info.name.decode()} bias after one SGD step"
        moved = max(moved, max_diff(w, W0))
    assert moved > 10 * TOL  # the step changed something measurable


def test_backward_overwrites_gradients(kd, fashion):
    """Gradients are written, not accumulated: two backward passes on the
    same batch give the same numbers as one."""
    x, y = fashion[0][:BATCH], fashion[1][:BATCH]
    net = kd.Net("mlp", 11)
    net.forward(x, training=1)
    net.backward(y)
    first = net.grads().copy()
    net.forward(x, training=1)
    net.backward(y)
    assert np.any(first != 0)
    assert max_diff(net.grads(), first) == 0.0
