"""One set of training defaults: the builder (Kindling), the pyspark.ml
Estimator (KindlingClassifier), the launcher's TrainConfig (params.DEFAULTS) and the
`kindling train` command line agree on epochs and batch size (they used to
be 10/128, 10/64 and 5/64)."""
import re
import subprocess

import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark)")

from kindling_spark import params  # noqa: E402
from kindling_spark.estimator import Kindling, KindlingClassifier  # noqa: E402


def cli_default(helptext, flag):
    m = re.search(rf"^\s+{re.escape(flag)} N\s.*\(default (\d+)\)", helptext, re.M)
    assert m, f"`kindling train --help` names no default for {flag}"
    return int(m.group(1))


def test_every_entry_point_has_the_same_defaults(cli):
    helptext = subprocess.run([cli, "train", "--help"], capture_output=True, text=True, check=True).stdout
    epochs, batch = cli_default(helptext, "--epochs"), cli_default(helptext, "--batch-size")
    builder = Kindling()
    clf = KindlingClassifier()
    cfg = params.TrainConfig(network="mlp", input_size=784, num_classes=10)
    assert (builder._epochs, builder._batch) == (epochs, batch)
    assert (clf.getOrDefault("numEpochs"), clf.getOrDefault("batchSize")) == (epochs, batch)
    assert (cfg.epochs, cfg.batch_size) == (epochs, batch)
    built = clf.builder()
    assert (built._epochs, built._batch) == (epochs, batch)


def test_the_optimizer_and_schedule_are_the_cli_defaults(cli):
    helptext = subprocess.run([cli, "train", "--help"], capture_output=True, text=True, check=True).stdout
    optimizer = re.search(r"^\s+--optimizer NAME\s.*\(default (\w+)\)", helptext, re.M)
    schedule = re.search(r"^\s+--schedule NAME\s.*\(default (\w+)\)", helptext, re.M)
    assert optimizer and schedule, "`kindling train --help` names no default optimizer or schedule"
    assert (params.DEFAULTS.optimizer, params.DEFAULTS.schedule) == (optimizer.group(1), schedule.group(1))
    clf = KindlingClassifier()
    assert (clf.getOrDefault("optimizer"), clf.getOrDefault("schedule")) == (optimizer.group(1), schedule.group(1))
    assert clf.getOrDefault("validationFraction") == 0 and clf.getOrDefault("patience") == 0
