package org.kindling.spark.examples;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.zip.GZIPInputStream;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.mllib.linalg.Vectors;
import org.apache.spark.mllib.regression.LabeledPoint;
import org.kindling.spark.Kindling;
import org.kindling.spark.KindlingModel;

/**
 * The seed's ClassificationExample on the JVM: Fashion-MNIST as an RDD of
 * LabeledPoints, trained with Kindling's MLP or LeNet in one barrier stage
 * (2 workers + 1 parameter server by default), saved, loaded back, and the
 * test set predicted in the executors through a broadcast model.
 *
 * <pre>
 * spark-submit --master 'local[3]' --class org.kindling.spark.examples.ClassificationExample \
 *     build/kindling.jar --network lenet --epochs 4 --model /tmp/fmnist-lenet
 * </pre>
 *
 * Options: --data DIR (the IDX .gz files; default KD_FASHION_MNIST_DIR or
 * /usr/share/datasets/fashion-mnist), --network mlp|lenet|JSON, --epochs N,
 * --batch-size N, --workers N, --servers N (0: sync allreduce),
 * --train-limit N / --test-limit N (the first N samples), --model PATH
 * (where to save; default a temporary directory), --min-accuracy A (exit
 * status 1 below it, for tests), --master M (when not run by spark-submit).
 */
public final class ClassificationExample {
    private ClassificationExample() {
    }

    static byte[] readIdx(String path) throws IOException {
        try (InputStream raw = Files.newInputStream(Paths.get(path));
             InputStream in = path.endsWith(".gz") ? new GZIPInputStream(raw, 1 << 16) : raw) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            in.transferTo(out);
            byte[] b = out.toByteArray();
            if (b.length < 4 || b[0] != 0 || b[1] != 0 || b[2] != 8) {
                throw new IOException(path + ": not an unsigned-byte IDX file");
            }
            return b;
        }
    }

    /** The first `limit` samples of a split ("train" or "t10k") as LabeledPoints (pixels scaled to [0, 1]). */
    static List<LabeledPoint> load(String dir, String split, int limit) throws IOException {
        byte[] images = readIdx(dir + "/" + split + "-images-idx3-ubyte.gz");
        byte[] labels = readIdx(dir + "/" + split + "-labels-idx1-ubyte.gz");
        int n = Math.min(java.nio.ByteBuffer.wrap(images, 4, 4).getInt(), java.nio.ByteBuffer.wrap(labels, 4, 4).getInt());
        int rows = java.nio.ByteBuffer.wrap(images, 8, 4).getInt();
        int cols = java.nio.ByteBuffer.wrap(images, 12, 4).getInt();
        int size = rows * cols;
        if (limit > 0) {
            n = Math.min(n, limit);
        }
        List<LabeledPoint> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            double[] x = new double[size];
            for (int j = 0; j < size; j++) {
                x[j] = (images[16 + i * size + j] & 0xff) / 255.0;
            }
            out.add(new LabeledPoint(labels[8 + i] & 0xff, Vectors.dense(x)));
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        String data = System.getenv().getOrDefault("KD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist");
        String network = "mlp";
        String modelPath = null;
        String master = null;
        int epochs = 4;
        int batch = 64;
        int workers = 2;
        int servers = 1;
        int trainLimit = 0;
        int testLimit = 0;
        double minAccuracy = -1;
        for (int i = 0; i < args.length; i++) {
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (args[i]) {
                case "--data": data = v; i++; break;
                case "--network": network = v; i++; break;
                case "--model": modelPath = v; i++; break;
                case "--master": master = v; i++; break;
                case "--epochs": epochs = Integer.parseInt(v); i++; break;
                case "--batch-size": batch = Integer.parseInt(v); i++; break;
                case "--workers": workers = Integer.parseInt(v); i++; break;
                case "--servers": servers = Integer.parseInt(v); i++; break;
                case "--train-limit": trainLimit = Integer.parseInt(v); i++; break;
                case "--test-limit": testLimit = Integer.parseInt(v); i++; break;
                case "--min-accuracy": minAccuracy = Double.parseDouble(v); i++; break;
                default:
                    System.err.println("ClassificationExample: unknown option " + args[i] + " (see the class's documentation)");
                    System.exit(2);
            }
        }
        SparkConf conf = new SparkConf().setAppName("kindling-classification-example");
        if (master != null) {
            conf.setMaster(master);
        } else if (!conf.contains("spark.master")) {
            conf.setMaster("local[" + (workers + servers) + "]");
        }
        try (JavaSparkContext jsc = new JavaSparkContext(conf)) {
            jsc.setLogLevel("WARN");
            List<LabeledPoint> train = load(data, "train", trainLimit);
            List<LabeledPoint> test = load(data, "t10k", testLimit);
            JavaRDD<LabeledPoint> trainRdd = jsc.parallelize(train, workers);
            long t0 = System.nanoTime();
            KindlingModel model = new Kindling().setNetwork(network).setDimension(1, 28, 28).setNumEpoch(epochs)
                    .setBatchSize(batch).setNumWorker(workers).setNumServer(servers).setContext("cpu")
                    .setProgressCallback(line -> System.out.println("  " + line))
                    .fit(trainRdd);
            System.out.printf("trained %s on %d samples in %.1f s: %s%n", network, train.size(), (System.nanoTime() - t0) / 1e9, model);
            if (modelPath == null) {
                modelPath = Files.createTempDirectory("kindling-example-").resolve("model").toString();
            }
            model.save(jsc.sc(), modelPath, true);
            KindlingModel loaded = KindlingModel.load(jsc.sc(), modelPath);
            Broadcast<KindlingModel> bc = jsc.broadcast(loaded);
            JavaRDD<LabeledPoint> testRdd = jsc.parallelize(test, workers);
            long correct = testRdd.mapPartitions(points -> {
                List<LabeledPoint> rows = new ArrayList<>();
                points.forEachRemaining(rows::add);
                Iterator<Integer> classes = bc.value().predictClasses(rows.stream().map(LabeledPoint::features).iterator());
                List<Integer> hits = new ArrayList<>();
                for (LabeledPoint p : rows) {
                    hits.add(classes.next() == (int) p.label() ? 1 : 0);
                }
                return hits.iterator();
            }).filter(h -> h == 1).count();
            double accuracy = (double) correct / test.size();
            System.out.printf("saved to %s; loaded model: test accuracy %.4f (%d/%d)%n", modelPath, accuracy, correct, test.size());
            bc.destroy();
            model.close();
            loaded.close();
            if (minAccuracy >= 0 && accuracy < minAccuracy) {
                System.err.printf("ClassificationExample: test accuracy %.4f is below --min-accuracy %.4f%n", accuracy, minAccuracy);
                System.exit(1);
            }
        }
    }
}
