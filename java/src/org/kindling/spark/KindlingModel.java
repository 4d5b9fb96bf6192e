package org.kindling.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.ObjectInputStream;
import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.UUID;
import java.util.concurrent.ConcurrentLinkedQueue;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.SparkContext;

/**
 * A trained Kindling network on the JVM: the bytes of its HDF5 checkpoint
 * (the file {@code kindling train} writes) and its training history, the
 * same model as Python's {@code kindling_spark.KindlingModel}.
 *
 * <p>Serializable, so {@code sc.broadcast(model)} ships it to executors; the
 * native networks are transient and built lazily in each JVM, one per
 * concurrent caller (a kd_net is not thread-safe), and freed by
 * {@link #close()} (or by a Cleaner when the model is garbage).
 *
 * <pre>
 * KindlingModel model = KindlingModel.fromCheckpoint("model.h5");
 * double[][] probs = model.predict(x);              // on this JVM
 * Broadcast&lt;KindlingModel&gt; bc = sc.broadcast(model, tag);
 * rdd.mapPartitions(rows -&gt; bc.value().predict(rows)) // in the executors
 * model.save(sc, "hdfs:///models/m1");               // Python's directory layout
 * KindlingModel.load(sc, "hdfs:///models/m1");
 * </pre>
 *
 * <p>Saved layout (exactly Python's KindlingModelWriter's, so either side
 * reads the other's): {@code <path>/metadata/part-00000} (one line of JSON
 * whose "kindling" section names the format, the checkpoint file, its size
 * and sha256, the input shape, the classes and the history),
 * {@code <path>/metadata/_SUCCESS} and {@code <path>/data/model.h5}.
 */
public class KindlingModel implements Serializable, AutoCloseable {
    private static final long serialVersionUID = 1L;
    public static final String FORMAT = "kindling-spark-model";
    public static final int FORMAT_VERSION = 1;
    public static final String CHECKPOINT_FILE = "data/model.h5";
    public static final String METADATA_FILE = "metadata/part-00000";
    /** The checkpoint's history columns, in the record's order (kindling_jni.c). */
    static final String[] HISTORY_FIELDS = {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
        "seconds", "learning_rate", "val_loss", "val_accuracy"};
    private static final ObjectMapper JSON = new ObjectMapper();

    private final byte[] checkpoint;
    private final String historyJson;
    private final int[] inputShape;
    private final int numClasses;
    private final String specJson;
    private String uid;
    private String featuresCol = "features";
    private String labelCol = "label";
    private String probabilityCol = "probability";
    private String predictionCol = "prediction";
    private int predictBatchSize = 256;
    private transient ConcurrentLinkedQueue<NativeNet> idle;
    private transient List<NativeNet> all;

    /**
     * A model of a checkpoint's bytes, checked now (on the driver): bytes that
     * are not a Kindling checkpoint throw KindlingException naming the problem.
     */
    public KindlingModel(byte[] checkpoint) {
        this(checkpoint, null);
    }

    KindlingModel(byte[] checkpoint, String historyJson) {
        if (checkpoint == null) {
            throw new IllegalArgumentException("KindlingModel needs the bytes of a checkpoint (or use KindlingModel.fromCheckpoint(path))");
        }
        this.checkpoint = checkpoint.clone();
        this.uid = "KindlingModel_" + UUID.randomUUID().toString().replace("-", "").substring(20);
        init();
        NativeNet net = take();
        try {
            inputShape = net.inputShape.clone();
            numClasses = net.numClasses;
            specJson = net.specJson;
            this.historyJson = historyJson != null ? historyJson : historyJsonOf(net.history);
        } finally {
            give(net);
        }
    }

    /** Wrap a checkpoint file written by {@code kindling train} (a local path). */
    public static KindlingModel fromCheckpoint(String path) throws IOException {
        byte[] bytes = Files.readAllBytes(Paths.get(path));
        try {
            return new KindlingModel(bytes);
        } catch (KindlingException e) {
            throw new KindlingException(e.code(), e.status(), e.getMessage().replace("the checkpoint (" + bytes.length + " bytes)", path));
        }
    }

    private void init() {
        idle = new ConcurrentLinkedQueue<>();
        all = new ArrayList<>();
    }

    private void readObject(ObjectInputStream in) throws IOException, ClassNotFoundException {
        in.defaultReadObject();
        init(); // networks belong to one JVM: built again where the model lands
    }

    private NativeNet take() {
        NativeNet net = idle.poll();
        if (net != null) {
            return net;
        }
        net = new NativeNet(checkpoint, "the checkpoint (" + checkpoint.length + " bytes)");
        synchronized (all) {
            all.add(net);
        }
        return net;
    }

    private void give(NativeNet net) {
        idle.add(net);
    }

    /** Frees every native network of this model in this JVM (they are built again if it predicts later). */
    @Override
    public void close() {
        synchronized (all) {
            for (NativeNet n : all) {
                n.close();
            }
            all.clear();
            idle.clear();
        }
    }

    // ------------------------------------------------------------ describing
    public byte[] checkpoint() {
        return checkpoint.clone();
    }

    public int[] inputShape() {
        return inputShape.clone();
    }

    public int inputSize() {
        int s = 1;
        for (int d : inputShape) {
            s *= d;
        }
        return s;
    }

    public int numClasses() {
        return numClasses;
    }

    /** The fully resolved network spec as JSON text. */
    public String specJson() {
        return specJson;
    }

    /** Per-epoch records as a JSON array (epoch, train_loss, ...; null where not measured). */
    public String historyJson() {
        return historyJson;
    }

    public String uid() {
        return uid;
    }

    public int getPredictBatchSize() {
        return predictBatchSize;
    }

    public KindlingModel setPredictBatchSize(int n) {
        if (n < 1) {
            throw new IllegalArgumentException("predictBatchSize must be >= 1, got " + n);
        }
        predictBatchSize = n;
        return this;
    }

    public String getFeaturesCol() {
        return featuresCol;
    }

    public KindlingModel setFeaturesCol(String c) {
        featuresCol = c;
        return this;
    }

    public String getProbabilityCol() {
        return probabilityCol;
    }

    public String getPredictionCol() {
        return predictionCol;
    }

    @Override
    public String toString() {
        StringBuilder s = new StringBuilder();
        for (int d : inputShape) {
            s.append(s.length() > 0 ? "x" : "").append(d);
        }
        int epochs;
        try {
            epochs = JSON.readTree(historyJson).size();
        } catch (IOException e) {
            epochs = -1;
        }
        return "KindlingModel(uid=" + uid + ", input_shape=" + s + ", num_classes=" + numClasses + ", epochs=" + epochs + ")";
    }

    // ------------------------------------------------------------ predicting
    /** Class probabilities (n x numClasses) of n samples of inputSize() features each. */
    public double[][] predict(double[][] x) {
        int size = inputSize();
        float[] flat = new float[Math.multiplyExact(x.length, size)];
        for (int i = 0; i < x.length; i++) {
            double[] row = x[i];
            if (row == null || row.length != size) {
                throw new IllegalArgumentException(badRow(i, row == null ? -1 : row.length));
            }
            for (int j = 0; j < size; j++) {
                flat[i * size + j] = (float) row[j];
            }
        }
        float[] p = predictFlat(flat, x.length);
        double[][] out = new double[x.length][numClasses];
        for (int i = 0; i < x.length; i++) {
            for (int c = 0; c < numClasses; c++) {
                out[i][c] = p[i * numClasses + c];
            }
        }
        return out;
    }

    /** The most probable class of each sample. */
    public int[] predictClasses(double[][] x) {
        return argmax(predict(x));
    }

    /**
     * Class probabilities of each row, in batches of predictBatchSize, lazily
     * (for mapPartitions). A row is an org.apache.spark.ml.linalg.Vector, an
     * org.apache.spark.mllib.linalg.Vector, a double[] or a float[].
     */
    public Iterator<double[]> predict(Iterator<?> rows) {
        return new BatchIterator(rows);
    }

    /** The most probable class of each row (see {@link #predict(Iterator)}). */
    public Iterator<Integer> predictClasses(Iterator<?> rows) {
        Iterator<double[]> probs = predict(rows);
        return new Iterator<Integer>() {
            @Override
            public boolean hasNext() {
                return probs.hasNext();
            }

            @Override
            public Integer next() {
                return argmax(probs.next());
            }
        };
    }

    /** Scala's form: {@code rdd.mapPartitions(rows => bc.value.predict(rows))}. */
    public scala.collection.Iterator<double[]> predict(scala.collection.Iterator<?> rows) {
        return scala.jdk.javaapi.CollectionConverters.asScala(predict(scala.jdk.javaapi.CollectionConverters.asJava(rows)));
    }

    float[] predictFlat(float[] flat, int n) {
        NativeNet net = take();
        try {
            return net.predict(flat, n, predictBatchSize);
        } finally {
            give(net);
        }
    }

    static int argmax(double[] p) {
        int best = 0;
        for (int c = 1; c < p.length; c++) {
            if (p[c] > p[best]) {
                best = c;
            }
        }
        return best;
    }

    static int[] argmax(double[][] p) {
        int[] out = new int[p.length];
        for (int i = 0; i < p.length; i++) {
            out[i] = argmax(p[i]);
        }
        return out;
    }

    private String badRow(long i, int features) {
        StringBuilder shape = new StringBuilder();
        for (int d : inputShape) {
            shape.append(shape.length() > 0 ? "x" : "").append(d);
        }
        return "KindlingModel.predict: sample " + i + " has " + (features < 0 ? "no features (null)" : features + " features")
                + "; the model expects " + inputSize() + " (input shape " + shape + ")";
    }

    /** Copies one row's features into dst at off, checking its length. */
    private void copyRow(Object row, float[] dst, int off, long index) {
        int size = inputSize();
        if (row instanceof org.apache.spark.ml.linalg.Vector) {
            org.apache.spark.ml.linalg.Vector v = (org.apache.spark.ml.linalg.Vector) row;
            if (v.size() != size) {
                throw new IllegalArgumentException(badRow(index, v.size()));
            }
            double[] a = v.toArray();
            for (int j = 0; j < size; j++) {
                dst[off + j] = (float) a[j];
            }
        } else if (row instanceof org.apache.spark.mllib.linalg.Vector) {
            copyRow(((org.apache.spark.mllib.linalg.Vector) row).asML(), dst, off, index);
        } else if (row instanceof double[]) {
            double[] a = (double[]) row;
            if (a.length != size) {
                throw new IllegalArgumentException(badRow(index, a.length));
            }
            for (int j = 0; j < size; j++) {
                dst[off + j] = (float) a[j];
            }
        } else if (row instanceof float[]) {
            float[] a = (float[]) row;
            if (a.length != size) {
                throw new IllegalArgumentException(badRow(index, a.length));
            }
            System.arraycopy(a, 0, dst, off, size);
        } else {
            throw new IllegalArgumentException("KindlingModel.predict: row " + index + " is a "
                    + (row == null ? "null" : row.getClass().getName())
                    + "; expected an ml or mllib Vector, a double[] or a float[]");
        }
    }

    private final class BatchIterator implements Iterator<double[]> {
        private final Iterator<?> rows;
        private float[] probs;
        private int count;
        private int next;
        private long seen;

        BatchIterator(Iterator<?> rows) {
            this.rows = rows;
        }

        @Override
        public boolean hasNext() {
            if (next < count) {
                return true;
            }
            if (!rows.hasNext()) {
                return false;
            }
            int size = inputSize();
            float[] x = new float[predictBatchSize * size];
            int n = 0;
            while (n < predictBatchSize && rows.hasNext()) {
                copyRow(rows.next(), x, n * size, seen++);
                n++;
            }
            probs = predictFlat(n == predictBatchSize ? x : java.util.Arrays.copyOf(x, n * size), n);
            count = n;
            next = 0;
            return n > 0;
        }

        @Override
        public double[] next() {
            if (!hasNext()) {
                throw new NoSuchElementException();
            }
            double[] out = new double[numClasses];
            for (int c = 0; c < numClasses; c++) {
                out[c] = probs[next * numClasses + c];
            }
            next++;
            return out;
        }
    }

    // ----------------------------------------------------------- persistence
    static String historyJsonOf(double[] h) {
        ArrayNode arr = JsonNodeFactory.instance.arrayNode();
        int n = h == null ? 0 : h.length / HISTORY_FIELDS.length;
        for (int i = 0; i < n; i++) {
            ObjectNode rec = arr.addObject();
            for (int f = 0; f < HISTORY_FIELDS.length; f++) {
                double v = h[i * HISTORY_FIELDS.length + f];
                if (f == 0) {
                    rec.put(HISTORY_FIELDS[f], (int) v);
                } else if (Double.isNaN(v) || Double.isInfinite(v)) {
                    rec.putNull(HISTORY_FIELDS[f]);
                } else {
                    rec.put(HISTORY_FIELDS[f], v);
                }
            }
        }
        return arr.toString();
    }

    /** Writes the model at path (any Hadoop file system); fails if something is there. */
    public void save(SparkContext sc, String path) throws IOException {
        save(sc, path, false);
    }

    /** Writes the model at path; overwrite replaces what is there (Python: write().overwrite().save(path)). */
    public void save(SparkContext sc, String path, boolean overwrite) throws IOException {
        save(sc.hadoopConfiguration(), path, overwrite);
    }

    public void save(Configuration conf, String path, boolean overwrite) throws IOException {
        ObjectNode meta = JSON.createObjectNode();
        meta.put("class", KindlingModel.class.getName());
        meta.put("timestamp", System.currentTimeMillis());
        meta.put("sparkVersion", org.apache.spark.package$.MODULE$.SPARK_VERSION());
        meta.put("uid", uid);
        meta.putObject("paramMap");
        ObjectNode defaults = meta.putObject("defaultParamMap");
        defaults.put("featuresCol", featuresCol);
        defaults.put("labelCol", labelCol);
        defaults.put("probabilityCol", probabilityCol);
        defaults.put("predictionCol", predictionCol);
        defaults.put("predictBatchSize", predictBatchSize);
        ObjectNode k = meta.putObject("kindling");
        k.put("format", FORMAT);
        k.put("formatVersion", FORMAT_VERSION);
        k.put("kindlingVersion", nativeVersion());
        k.put("checkpoint", CHECKPOINT_FILE);
        k.put("checkpointBytes", checkpoint.length);
        k.put("checkpointSha256", sha256(checkpoint));
        ArrayNode shape = k.putArray("inputShape");
        for (int d : inputShape) {
            shape.add(d);
        }
        k.put("numClasses", numClasses);
        k.set("history", JSON.readTree(historyJson));
        byte[] metaBytes = (JSON.writeValueAsString(meta) + "\n").getBytes(StandardCharsets.UTF_8);

        Path root = new Path(path);
        FileSystem fs = fileSystem(root, conf);
        Path tmp = new Path(path.replaceAll("/+$", "") + ".tmp-" + ProcessHandle.current().pid() + "-"
                + UUID.randomUUID().toString().substring(0, 8));
        boolean done = false;
        try {
            write(fs, new Path(tmp, METADATA_FILE), metaBytes);
            write(fs, new Path(tmp, "metadata/_SUCCESS"), new byte[0]);
            write(fs, new Path(tmp, CHECKPOINT_FILE), checkpoint);
            if (fs.exists(root)) {
                if (!overwrite) {
                    throw new org.apache.hadoop.fs.FileAlreadyExistsException(
                            "Path " + path + " already exists. To overwrite it, use model.save(sc, path, true)");
                }
                fs.delete(root, true);
            }
            if (!fs.rename(tmp, root)) {
                throw new IOException(path + ": cannot rename " + tmp + " into place");
            }
            done = true;
        } finally {
            if (!done) {
                fs.delete(tmp, true);
            }
        }
    }

    /** Reads a model saved by {@link #save} or by Python's KindlingModel.write().save(path). */
    public static KindlingModel load(SparkContext sc, String path) throws IOException {
        return load(sc.hadoopConfiguration(), path);
    }

    public static KindlingModel load(Configuration conf, String path) throws IOException {
        Path root = new Path(path);
        FileSystem fs = fileSystem(root, conf);
        byte[] raw = read(fs, path, METADATA_FILE);
        JsonNode meta;
        JsonNode info;
        try {
            meta = JSON.readTree(new String(raw, StandardCharsets.UTF_8));
            info = meta == null ? null : meta.get("kindling");
            if (info == null || !info.isObject()) {
                throw new IOException("no \"kindling\" section");
            }
        } catch (IOException e) {
            throw new IllegalArgumentException(path + ": " + METADATA_FILE + " is not KindlingModel metadata (" + e.getMessage() + ")");
        }
        JsonNode format = info.get("format");
        JsonNode version = info.get("formatVersion");
        if (format == null || !FORMAT.equals(format.asText()) || version == null || !version.isInt()
                || version.asInt() != FORMAT_VERSION) {
            throw new IllegalArgumentException(path + ": unsupported model format " + repr(format) + " version " + repr(version)
                    + " (this package reads '" + FORMAT + "' " + FORMAT_VERSION + ")");
        }
        String ckptName = info.path("checkpoint").asText(CHECKPOINT_FILE);
        byte[] ckpt = read(fs, path, ckptName);
        String digest = sha256(ckpt);
        if (!info.path("checkpointBytes").canConvertToLong() || ckpt.length != info.path("checkpointBytes").asLong()
                || !digest.equals(info.path("checkpointSha256").asText())) {
            throw new IllegalArgumentException(path + ": " + ckptName + " is corrupt: " + ckpt.length + " bytes with sha256 "
                    + digest + ", the metadata says " + info.path("checkpointBytes").asText() + " bytes with sha256 "
                    + info.path("checkpointSha256").asText());
        }
        JsonNode hist = info.get("history");
        KindlingModel model = new KindlingModel(ckpt, hist != null && hist.isArray() ? hist.toString() : null);
        if (meta.hasNonNull("uid")) {
            model.uid = meta.get("uid").asText();
        }
        for (String section : new String[] {"defaultParamMap", "paramMap"}) {
            JsonNode params = meta.path(section);
            if (params.hasNonNull("featuresCol")) {
                model.featuresCol = params.get("featuresCol").asText();
            }
            if (params.hasNonNull("labelCol")) {
                model.labelCol = params.get("labelCol").asText();
            }
            if (params.hasNonNull("probabilityCol")) {
                model.probabilityCol = params.get("probabilityCol").asText();
            }
            if (params.hasNonNull("predictionCol")) {
                model.predictionCol = params.get("predictionCol").asText();
            }
            if (params.path("predictBatchSize").canConvertToInt() && params.get("predictBatchSize").asInt() >= 1) {
                model.predictBatchSize = params.get("predictBatchSize").asInt();
            }
        }
        return model;
    }

    /** A JSON value as Python's repr shows it in the same message. */
    private static String repr(JsonNode v) {
        return v == null || v.isNull() ? "None" : v.isTextual() ? "'" + v.asText() + "'" : v.toString();
    }

    /** The path's file system; the raw local one for local paths (no .crc files beside Python's layout). */
    private static FileSystem fileSystem(Path root, Configuration conf) throws IOException {
        FileSystem fs = root.getFileSystem(conf);
        if (fs instanceof LocalFileSystem) {
            fs = ((LocalFileSystem) fs).getRaw();
        }
        return fs;
    }

    private static void write(FileSystem fs, Path p, byte[] content) throws IOException {
        try (FSDataOutputStream out = fs.create(p, true)) {
            out.write(content);
            out.hsync();
        }
    }

    private static byte[] read(FileSystem fs, String path, String name) throws IOException {
        Path p = new Path(new Path(path), name);
        if (!fs.exists(p)) {
            throw new FileNotFoundException(path + ": no saved KindlingModel here (" + name + " is missing)");
        }
        try (org.apache.hadoop.fs.FSDataInputStream in = fs.open(p)) {
            return in.readAllBytes();
        }
    }

    static String sha256(byte[] b) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(b);
            StringBuilder s = new StringBuilder();
            for (byte x : d) {
                s.append(String.format("%02x", x & 0xff));
            }
            return s.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The version of libkindling in use. */
    public static String nativeVersion() {
        NativeNet.loadLibrary();
        return NativeNet.version();
    }
}
