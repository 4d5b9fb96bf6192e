package org.kindling.spark;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.ml.linalg.VectorUDT;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.NumericType;

/**
 * Training from Spark on the JVM, the seed's builder:
 *
 * <pre>
 * KindlingModel model = new Kindling().setNetwork("lenet").setDimension(1, 28, 28)
 *     .setNumEpoch(10).setBatchSize(128).setNumWorker(2).setNumServer(1)
 *     .setContext("cpu").setOptimizer("momentum", Map.of("lr", 0.01))
 *     .fit(rdd);            // RDD of LabeledPoint (mllib or ml), Tuple2 (label, features) or Row
 * new Kindling().setLabelName("label").setFeaturesName("features").fit(df);  // Dataset&lt;Row&gt;
 * </pre>
 *
 * One barrier stage of workers (+ servers) tasks, one MPI rank per task,
 * retried with --resume, exactly as the Python builder (kindling_spark
 * .Kindling) trains: the settings, their defaults and their checks are the
 * Python builder's own (the launcher's driver side runs as the child
 * process kindling_spark.jvm_driver; see Launcher), so a bad setting is an
 * IllegalArgumentException with the same message, before any Spark job.
 * Needs, where the driver and the executors run: Python with kindling_spark
 * (setPython, else KINDLING_PYTHON, else PYSPARK_PYTHON), the kindling CLI
 * and mpirun, as a PySpark fit does.
 */
public class Kindling {
    private final List<Object[]> calls = new ArrayList<>();
    private String labelName = "label";
    private String featuresName = "features";
    private String python;
    private Double timeout;
    private boolean threadsSet;
    private Consumer<String> onProgress;

    private Kindling call(String name, Object... args) {
        calls.add(new Object[] {name, Arrays.asList(args), Collections.emptyMap()});
        return this;
    }

    private static int atLeast(String name, int v, int min) {
        if (v < min) {
            throw new IllegalArgumentException(name + " must be an integer >= " + min + ", got " + v);
        }
        return v;
    }

    /** A preset ("mlp", "lenet"), JSON spec text, or a spec file path. */
    public Kindling setNetwork(String network) {
        if (network == null) {
            throw new IllegalArgumentException("setNetwork takes a preset name, JSON text or a file path, got null");
        }
        return call("setNetwork", network);
    }

    /** Per-sample input shape, e.g. (1, 28, 28) or (784). */
    public Kindling setDimension(int... shape) {
        if (shape.length < 1 || shape.length > 3) {
            throw new IllegalArgumentException("setDimension takes 1 to 3 dimensions, got " + Arrays.toString(shape));
        }
        for (int d : shape) {
            atLeast("each dimension", d, 1);
        }
        List<Integer> dims = new ArrayList<>();
        for (int d : shape) {
            dims.add(d);
        }
        calls.add(new Object[] {"setDimension", List.of(dims), Collections.emptyMap()});
        return this;
    }

    public Kindling setNumEpoch(int n) {
        return call("setNumEpoch", atLeast("numEpochs", n, 1));
    }

    /** Samples per worker per step (a step covers batch x workers). */
    public Kindling setBatchSize(int n) {
        return call("setBatchSize", atLeast("batchSize", n, 1));
    }

    public Kindling setNumWorker(int n) {
        return call("setNumWorker", atLeast("numWorkers", n, 1));
    }

    /** Parameter-server ranks (async mode; 0 switches to sync allreduce). */
    public Kindling setNumServer(int n) {
        return call("setNumServer", atLeast("numServers", n, 0));
    }

    /** "async" (parameter servers) or "sync" (allreduce, no servers). */
    public Kindling setMode(String mode) {
        return call("setMode", mode);
    }

    public Kindling setMaxStaleness(int k) {
        return call("setMaxStaleness", atLeast("maxStaleness", k, -1));
    }

    /** "cpu" or "gpu" (each worker rank on the GPU Spark gave its task). */
    public Kindling setContext(String context) {
        return call("setContext", context);
    }

    public Kindling setLabelName(String name) {
        labelName = name;
        return call("setLabelName", name);
    }

    public Kindling setFeaturesName(String name) {
        featuresName = name;
        return call("setFeaturesName", name);
    }

    /** sgd, momentum, adam or adamw; settings: lr, momentum, nesterov, beta1, beta2, eps, weightDecay. */
    public Kindling setOptimizer(String name, Map<String, ?> settings) {
        calls.add(new Object[] {"setOptimizer", List.of(name), settings == null ? Collections.emptyMap() : new LinkedHashMap<>(settings)});
        return this;
    }

    public Kindling setOptimizer(String name) {
        return setOptimizer(name, null);
    }

    public Kindling setLearningRate(double lr) {
        return call("setLearningRate", lr);
    }

    /** constant, step or cosine. */
    public Kindling setSchedule(String name) {
        return call("setSchedule", name);
    }

    public Kindling setSeed(long seed) {
        if (seed < 0) {
            throw new IllegalArgumentException("seed must be an integer >= 0, got " + seed);
        }
        return call("setSeed", seed);
    }

    /** BLAS threads per rank (default spark.task.cpus). */
    public Kindling setThreadsPerRank(int n) {
        threadsSet = true;
        return call("setThreadsPerRank", atLeast("threadsPerRank", n, 1));
    }

    public Kindling setMaxRetries(int n) {
        return call("setMaxRetries", atLeast("maxRetries", n, 0));
    }

    /** Where the job's checkpoint lives (shared storage across hosts for a retry to resume). */
    public Kindling setCheckpointDir(String path) {
        return call("setCheckpointDir", path);
    }

    public Kindling setCheckpointEvery(int steps) {
        return call("setCheckpointEvery", atLeast("checkpointEvery", steps, 0));
    }

    public Kindling setMpiArgs(List<String> args) {
        calls.add(new Object[] {"setMpiArgs", List.of(new ArrayList<>(args)), Collections.emptyMap()});
        return this;
    }

    /** Local directory (same path on every host) for the partitions' spool files. */
    public Kindling setSpoolDir(String path) {
        return call("setSpoolDir", path);
    }

    /** Kill an attempt that runs longer than this many seconds. */
    public Kindling setTimeout(double seconds) {
        timeout = seconds;
        return this;
    }

    /** Called with every output line of the ranks, as it arrives (on the driver). */
    public Kindling setProgressCallback(Consumer<String> fn) {
        onProgress = fn;
        return this;
    }

    /** The Python with kindling_spark on the driver and the executors (default KINDLING_PYTHON, PYSPARK_PYTHON, python3). */
    public Kindling setPython(String path) {
        python = path;
        return this;
    }

    // ------------------------------------------------------------------ fit
    /** Train on an RDD of LabeledPoints (mllib or ml), Tuple2 (label, features) or Rows (label, features). */
    public KindlingModel fit(RDD<?> data) {
        return train(data.sparkContext(), data);
    }

    public KindlingModel fit(JavaRDD<?> data) {
        return fit(data.rdd());
    }

    /** Train on a DataFrame's label (numeric) and features (vector or array of numbers) columns. */
    public KindlingModel fit(Dataset<Row> df) {
        List<String> names = Arrays.asList(df.columns());
        for (String name : new String[] {labelName, featuresName}) {
            if (!names.contains(name)) {
                throw new KindlingSparkException("DataError", "kindling: column '" + name + "' is not in the DataFrame (columns: "
                        + String.join(", ", names) + ")");
            }
        }
        DataType ltype = df.schema().apply(labelName).dataType();
        DataType ftype = df.schema().apply(featuresName).dataType();
        if (!(ltype instanceof NumericType)) {
            throw new KindlingSparkException("DataError", "kindling: label column '" + labelName + "' has type "
                    + ltype.simpleString() + "; labels must be numeric class indices 0..classes-1");
        }
        if (!(ftype instanceof VectorUDT || ftype instanceof org.apache.spark.mllib.linalg.VectorUDT
                || (ftype instanceof ArrayType && ((ArrayType) ftype).elementType() instanceof NumericType))) {
            throw new KindlingSparkException("DataError", "kindling: features column '" + featuresName + "' has type "
                    + ftype.simpleString() + "; expected a vector or an array of numbers");
        }
        Dataset<Row> two = df.select(functions.col(labelName).cast("double"), functions.col(featuresName));
        return train(df.sparkSession().sparkContext(), two.rdd());
    }

    private KindlingModel train(org.apache.spark.SparkContext sc, RDD<?> rows) {
        List<Object[]> all = new ArrayList<>(calls);
        if (!threadsSet) {
            all.add(new Object[] {"setThreadsPerRank", List.of(Math.max(1, Integer.parseInt(sc.getConf().get("spark.task.cpus", "1")))),
                Collections.emptyMap()});
        }
        try {
            byte[] ckpt = Launcher.fit(sc, rows, all, python, timeout, onProgress);
            return new KindlingModel(ckpt).setFeaturesCol(featuresName);
        } catch (IOException e) {
            throw new UncheckedIOException("kindling: " + e.getMessage(), e);
        }
    }
}
