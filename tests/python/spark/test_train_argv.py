"""params.train_argv: validation, early stopping and the best copy reach the
ranks' `kindling train` command line (issue 14), on a first attempt and on
a resumed one."""
import pytest

from kindling_spark import params


def cfg(**kw):
    return params.TrainConfig(network="mlp", input_size=784, num_classes=10, mode="sync", **kw)


def flag(argv, name):
    assert argv.count(name) == 1, argv
    return argv[argv.index(name) + 1]


def test_defaults_add_no_validation_flags():
    argv = params.train_argv(cfg(), "mlp", "/s/part-%w.spool", "/c/job.h5")
    for name in ("--val-split", "--val-spool", "--patience", "--min-delta", "--keep-best"):
        assert name not in argv


@pytest.mark.parametrize("resume", [False, True])
def test_validation_and_early_stopping_flags(resume):
    c = cfg(val_split=0.2, patience=3, min_delta=0.01, keep_best="/driver/best.h5")
    argv = params.train_argv(c, "mlp", "/s/part-%w.spool", "/c/job.h5", resume=resume)
    assert flag(argv, "--val-split") == "0.2" and flag(argv, "--patience") == "3"
    assert flag(argv, "--min-delta") == "0.01"
    # The ranks keep the best copy beside the job's checkpoint; the driver copies it to keep_best.
    assert flag(argv, "--keep-best") == "/c/job-best.h5" == params.best_path("/c/job.h5")
    assert ("--resume" in argv) == resume and ("--net" in argv) != resume


def test_a_validation_set_replaces_the_split():
    argv = params.train_argv(cfg(val_split=0.2), "mlp", "/s/part-%w.spool", "/c/job.h5", val_pattern="/s/val-%w.spool")
    assert flag(argv, "--val-spool") == "/s/val-%w.spool" and "--val-split" not in argv


def test_min_delta_alone_is_left_out():
    # The CLI refuses --min-delta without --patience or --keep-best; the builder refuses it earlier.
    argv = params.train_argv(cfg(min_delta=0.5), "mlp", "/s/part-%w.spool", "/c/job.h5")
    assert "--min-delta" not in argv



def test_the_defaults_command_line():
    """The ranks take the CLI's learning rate (no --lr unless one is set) and
    the Spark default of synchronous rounds through the servers."""
    c = params.TrainConfig(network="mlp", input_size=784, num_classes=10)
    argv = params.train_argv(c, "mlp", "/s/part-%w.spool", "/c/job.h5")
    assert "--lr" not in argv and flag(argv, "--optimizer") == "adam" and flag(argv, "--schedule") == "cosine"
    assert flag(argv, "--dist") == "async" and flag(argv, "--max-staleness") == "0"
    assert flag(argv, "--epochs") == "10" and flag(argv, "--batch-size") == "64"
