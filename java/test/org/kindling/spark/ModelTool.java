package org.kindling.spark;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Paths;
import org.apache.hadoop.conf.Configuration;

/**
 * The Java side of tests/python/java (not part of kindling.jar): loads,
 * saves and runs models on the JVM so pytest can compare with Python.
 *
 *   predict DIR X.f32 N OUT.f64   probabilities of N float32 samples (little-endian) as float64
 *   fromckpt CKPT.h5 DIR          KindlingModel.fromCheckpoint, then save
 *   resave DIR OUT                load, then save
 *   describe DIR                  one line: toString and the history
 *   closed DIR                    predict after close(): networks are built again
 * A failure prints "ERROR <exception class>: <message>" and exits 1.
 */
public final class ModelTool {
    private ModelTool() {
    }

    public static void main(String[] args) throws Exception {
        try {
            run(args);
        } catch (Exception | UnsatisfiedLinkError e) {
            System.out.println("ERROR " + e.getClass().getName() + ": " + e.getMessage());
            System.exit(1);
        }
    }

    private static void run(String[] a) throws IOException {
        Configuration conf = new Configuration();
        switch (a[0]) {
            case "predict": {
                try (KindlingModel m = KindlingModel.load(conf, a[1])) {
                    int n = Integer.parseInt(a[3]);
                    int size = m.inputSize();
                    ByteBuffer in = ByteBuffer.wrap(Files.readAllBytes(Paths.get(a[2]))).order(ByteOrder.LITTLE_ENDIAN);
                    double[][] x = new double[n][size];
                    for (int i = 0; i < n; i++) {
                        for (int j = 0; j < size; j++) {
                            x[i][j] = in.getFloat();
                        }
                    }
                    double[][] p = m.predict(x);
                    int[] classes = m.predictClasses(x);
                    ByteBuffer out = ByteBuffer.allocate(n * m.numClasses() * 8).order(ByteOrder.LITTLE_ENDIAN);
                    for (int i = 0; i < n; i++) {
                        if (KindlingModel.argmax(p[i]) != classes[i]) {
                            throw new IllegalStateException("predictClasses disagrees with predict at " + i);
                        }
                        for (double v : p[i]) {
                            out.putDouble(v);
                        }
                    }
                    Files.write(Paths.get(a[4]), out.array());
                    System.out.println("OK " + m);
                }
                break;
            }
            case "fromckpt": {
                try (KindlingModel m = KindlingModel.fromCheckpoint(a[1])) {
                    m.save(conf, a[2], false);
                    System.out.println("OK " + m);
                }
                break;
            }
            case "resave": {
                try (KindlingModel m = KindlingModel.load(conf, a[1])) {
                    m.save(conf, a[2], a.length > 3 && a[3].equals("overwrite"));
                    System.out.println("OK " + m);
                }
                break;
            }
            case "describe": {
                try (KindlingModel m = KindlingModel.load(conf, a[1])) {
                    System.out.println("OK " + m + " " + m.historyJson());
                }
                break;
            }
            case "closed": {
                KindlingModel m = KindlingModel.load(conf, a[1]);
                double[][] x = new double[2][m.inputSize()];
                double[][] before = m.predict(x);
                m.close();
                m.close(); // twice is fine
                double[][] after = m.predict(x);
                m.close();
                System.out.println("OK " + (before[1][0] == after[1][0]));
                break;
            }
            case "spark": {
                // DIR X.f32 N URI: broadcast prediction in mapPartitions on local[2]
                // must equal the driver's, and save(sc, URI) / load(sc, URI) round trip.
                org.apache.spark.SparkConf sconf = new org.apache.spark.SparkConf().setMaster("local[2]")
                        .setAppName("kindling-java-model").set("spark.ui.enabled", "false")
                        .set("spark.driver.host", "127.0.0.1").set("spark.driver.bindAddress", "127.0.0.1");
                try (org.apache.spark.api.java.JavaSparkContext jsc = new org.apache.spark.api.java.JavaSparkContext(sconf)) {
                    jsc.setLogLevel("ERROR");
                    KindlingModel m = KindlingModel.load(jsc.sc(), a[1]);
                    int n = Integer.parseInt(a[3]);
                    ByteBuffer in = ByteBuffer.wrap(Files.readAllBytes(Paths.get(a[2]))).order(ByteOrder.LITTLE_ENDIAN);
                    java.util.List<org.apache.spark.ml.linalg.Vector> rows = new java.util.ArrayList<>();
                    double[][] x = new double[n][m.inputSize()];
                    for (int i = 0; i < n; i++) {
                        for (int j = 0; j < m.inputSize(); j++) {
                            x[i][j] = in.getFloat();
                        }
                        rows.add(org.apache.spark.ml.linalg.Vectors.dense(x[i]));
                    }
                    m.setPredictBatchSize(7); // several batches per partition, the last one short
                    org.apache.spark.broadcast.Broadcast<KindlingModel> bc = jsc.broadcast(m);
                    java.util.List<double[]> got = jsc.parallelize(rows, 3)
                            .mapPartitions(it -> bc.value().predict(it)).collect();
                    java.util.List<Integer> classes = jsc.parallelize(rows, 3)
                            .mapPartitions(it -> bc.value().predictClasses(it)).collect();
                    double[][] want = m.predict(x);
                    double worst = 0;
                    for (int i = 0; i < n; i++) {
                        if (classes.get(i) != KindlingModel.argmax(want[i])) {
                            throw new IllegalStateException("class of row " + i + " differs in the executors");
                        }
                        for (int c = 0; c < m.numClasses(); c++) {
                            worst = Math.max(worst, Math.abs(got.get(i)[c] - want[i][c]));
                        }
                    }
                    m.save(jsc.sc(), a[4]);
                    KindlingModel back = KindlingModel.load(jsc.sc(), a[4]);
                    if (!java.util.Arrays.equals(back.checkpoint(), m.checkpoint()) || !back.uid().equals(m.uid())) {
                        throw new IllegalStateException("save(sc)/load(sc) changed the model");
                    }
                    bc.destroy();
                    m.close();
                    back.close();
                    System.out.println("OK rows " + got.size() + " worst " + worst);
                }
                break;
            }
            default:
                throw new IllegalArgumentException("unknown command " + a[0]);
        }
    }
}
