"""A model's training history: one record per epoch, as the checkpoint
stores it (epoch, train_loss, train_accuracy, val_loss, val_accuracy,
test_loss, test_accuracy, seconds, learning_rate; None where an epoch has
no such figure). `KindlingModel.history` hands it out as a pandas
DataFrame where pandas is installed (a list of dicts otherwise), and
`KindlingModel.plot_history()` draws it with matplotlib, an optional
dependency (`pip install matplotlib`).
"""
import math

# The checkpoint's history columns, in its order (io/checkpoint.c).
COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
           "seconds", "learning_rate")


def _figure(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def records(history):
    """The history as a list of dicts with every column (None where not measured)."""
    out = []
    for h in history or ():
        rec = {c: _figure(h.get(c)) for c in COLUMNS}
        if rec["epoch"] is not None:
            rec["epoch"] = int(rec["epoch"])
        out.append(rec)
    return out


def as_frame(history):
    """A pandas DataFrame indexed by epoch (NaN where not measured), or the
    list of dicts when pandas is not installed."""
    recs = records(history)
    try:
        import pandas as pd
    except ImportError:
        return recs
    frame = pd.DataFrame.from_records(recs, columns=list(COLUMNS))
    for c in COLUMNS[1:]:
        frame[c] = frame[c].astype("float64")
    return frame.set_index("epoch")


def best_epoch(history, min_delta=0.0):
    """(epoch, monitored name, value) of the best epoch by the rule early
    stopping and keepBest use (kd_train_state_best): the validation loss,
    or the training loss when the last epoch has no validation figure; an
    epoch is better when below the best so far by more than min_delta.
    None for an empty history."""
    recs = records(history)
    if not recs:
        return None
    key = "val_loss" if recs[-1]["val_loss"] is not None else "train_loss"
    best = None
    for r in recs:
        v = r[key]
        if v is None or (key == "train_loss" and r["val_loss"] is not None):
            continue
        if best is None or v < best[2] - min_delta:
            best = (r["epoch"], key, v)
    return best


def plot(history, path=None, ax=None, title=None):
    """Loss and accuracy per epoch for the training, validation and test
    figures (the best epoch dashed), as `kindling plot` draws them. With
    `path` the figure is saved there (format from the extension: .png,
    .svg, .pdf); returns the matplotlib Figure. `ax`: a pair of Axes to
    draw into instead of a new figure."""
    try:
        import matplotlib
        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)  # no display needed to save a file
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_history needs matplotlib (pip install matplotlib); without it, "
                          "`kindling plot model.h5 -o curves.svg` draws the same curves") from None
    recs = records(history)
    if not recs:
        raise ValueError("the model has no training history to plot")
    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    else:
        fig = ax[0].figure
    colours = {"train": "#0072B2", "val": "#E69F00", "test": "#009E73"}
    names = {"train": "training", "val": "validation", "test": "test"}
    best = best_epoch(recs)
    for axis, figure, label in ((ax[0], "loss", "Loss"), (ax[1], "accuracy", "Accuracy")):
        for part in ("train", "val", "test"):
            pts = [(r["epoch"], r[f"{part}_{figure}"]) for r in recs if r[f"{part}_{figure}"] is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            style = dict(marker="o", markersize=6 if len(pts) == 1 else 3, linewidth=2)
            axis.plot(xs, ys, color=colours[part], label=names[part], **style)
            if len(pts) == 1:
                axis.annotate(f"{ys[0]:.4f}", (xs[0], ys[0]), textcoords="offset points", xytext=(-8, 8),
                              ha="right", color=colours[part], fontweight="bold")
        if best is not None:
            axis.axvline(best[0], color="#777777", linestyle="--", linewidth=1)
        axis.set_title(label, loc="left", fontweight="bold")
        axis.set_xlabel("epoch")
        axis.grid(True, color="#e6e6e6")
        axis.xaxis.get_major_locator().set_params(integer=True)
    ax[1].legend(loc="lower right", frameon=False)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontweight="bold")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
