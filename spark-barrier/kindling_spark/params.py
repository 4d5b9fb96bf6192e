"""Training settings: their defaults, declared once for the builder
(`Kindling`), the Estimator (`KindlingClassifier`) and the launcher's
`TrainConfig` (the same as `kindling train`, whichever way a run starts;
tests/python/spark/test_defaults.py checks them against the CLI), and the
`kindling train` command line they become."""
import dataclasses
import os

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
# Optimizer settings as the builder accepts them -> the CLI's flag names.
OPTIMIZER_SETTINGS = {"lr": "lr", "learningRate": "lr", "learning_rate": "lr", "momentum": "momentum",
                      "nesterov": "nesterov", "beta1": "beta1", "beta2": "beta2", "eps": "eps",
                      "weightDecay": "weight_decay", "weight_decay": "weight_decay"}


@dataclasses.dataclass(frozen=True)
class Defaults:
    network: str = "mlp"
    epochs: int = 10              # mlp >= 0.885, lenet >= 0.91 on Fashion-MNIST (docs/benchmarks.md, "Defaults")
    batch_size: int = 64          # per worker, as `kindling train --batch-size`
    workers: int = 2
    servers: int = 1
    mode: str = "async"
    # async: synchronous rounds through the servers. Unbounded staleness (-1)
    # loses 1-1.5 points of accuracy with 2 workers on Fashion-MNIST
    # (docs/benchmarks.md, "Defaults").
    max_staleness: int = 0
    optimizer: str = "adam"       # at the CLI's learning rate (the ranks get no --lr unless one is set)
    schedule: str = "cosine"      # Adam with a cosine schedule trains both presets without tuning
    seed: int = 42
    threads: int = 0              # BLAS threads per rank; 0: spark.task.cpus
    max_retries: int = 2
    checkpoint_every: int = 0     # 0: per epoch only
    context: str = "cpu"
    slot_wait: float = 10.0       # seconds a cluster may take to offer enough task slots
    validation_fraction: float = 0.0  # held out of the training rows (seeded), as `kindling train --val-split`
    patience: int = 0             # early stopping: epochs without improvement (0: off), as --patience
    min_delta: float = 0.0        # an improvement must exceed this, as --min-delta


DEFAULTS = Defaults()


def default_optimizer():
    return {"optimizer": DEFAULTS.optimizer, "schedule": DEFAULTS.schedule}


@dataclasses.dataclass
class TrainConfig:
    """Everything the ranks' command line needs. `network` is a preset
    name or JSON spec text; optimizer holds the CLI's optimizer flags."""
    network: str
    input_size: int
    num_classes: int
    epochs: int = DEFAULTS.epochs
    batch_size: int = DEFAULTS.batch_size
    workers: int = DEFAULTS.workers
    servers: int = DEFAULTS.servers
    mode: str = DEFAULTS.mode
    max_staleness: int = DEFAULTS.max_staleness
    seed: int = DEFAULTS.seed
    threads: int = 1
    optimizer: dict = dataclasses.field(default_factory=default_optimizer)
    checkpoint_every: int = DEFAULTS.checkpoint_every
    checkpoint_dir: str = None
    max_retries: int = DEFAULTS.max_retries
    mpi_args: tuple = ()
    spool_root: str = None
    slot_wait: float = DEFAULTS.slot_wait
    context: str = DEFAULTS.context  # "gpu": workers train on a GPU (parameter servers stay on the CPU)
    val_split: float = DEFAULTS.validation_fraction
    patience: int = DEFAULTS.patience
    min_delta: float = DEFAULTS.min_delta
    keep_best: str = None         # the driver's path for the best epoch's checkpoint (the ranks write best_path)

    @property
    def ranks(self):
        return self.workers + self.server_ranks

    @property
    def server_ranks(self):
        return self.servers if self.mode == "async" else 0


_OPTIMIZER_FLAGS = ("optimizer", "lr", "momentum", "nesterov", "beta1", "beta2", "eps", "weight_decay",
                    "schedule", "step_size", "gamma", "lr_min")


def is_preset(network):
    return not network.lstrip().startswith("{")


def best_path(checkpoint):
    """Where the ranks keep the best epoch's checkpoint (--keep-best): beside
    the job's checkpoint, so a retried attempt finds it."""
    root, ext = os.path.splitext(checkpoint)
    return f"{root}-best{ext or '.h5'}"


def train_argv(cfg, net_arg, spool_pattern, checkpoint, resume=False, val_pattern=None):
    """The `kindling` arguments every rank runs (after the binary), also
    usable for a plain mpirun of the same job. On resume the network,
    optimizer, seed and batch come from the checkpoint; validation, early
    stopping and the best copy are given again (the checkpoint keeps the
    history they follow). `val_pattern`: the workers' validation spool
    files ("%w": the worker index), for a validation data set."""
    a = ["train", "--dist", cfg.mode]
    if cfg.mode == "async":
        a += ["--servers", str(cfg.servers), "--max-staleness", str(cfg.max_staleness)]
    a += ["--local-data", "--train-spool", spool_pattern, "--epochs", str(cfg.epochs),
          "--threads", str(cfg.threads), "--checkpoint", checkpoint]
    if cfg.checkpoint_every:
        a += ["--checkpoint-every", str(cfg.checkpoint_every)]
    if cfg.context != "cpu":
        a += ["--context", cfg.context]
    if val_pattern:
        a += ["--val-spool", val_pattern]
    elif cfg.val_split:
        a += ["--val-split", repr(float(cfg.val_split))]
    if cfg.patience:
        a += ["--patience", str(cfg.patience)]
    if cfg.keep_best:
        a += ["--keep-best", best_path(checkpoint)]
    if cfg.min_delta and (cfg.patience or cfg.keep_best):
        a += ["--min-delta", repr(float(cfg.min_delta))]
    if resume:
        return a + ["--resume", checkpoint]
    a += ["--net", net_arg, "--batch-size", str(cfg.batch_size), "--seed", str(cfg.seed)]
    for key in _OPTIMIZER_FLAGS:
        v = cfg.optimizer.get(key)
        if v is None or v is False:
            continue
        flag = "--" + key.replace("_", "-")
        a += [flag] if v is True else [flag, str(v)]
    return a
