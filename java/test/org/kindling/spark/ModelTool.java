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
            String kind = e instanceof KindlingSparkException ? " [" + ((KindlingSparkException) e).kind() + "]" : "";
            System.out.println("ERROR " + e.getClass().getName() + kind + ": " + String.valueOf(e.getMessage()).replace("\n", " | "));
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
            case "fit": {
                // X.f32 Y.i32 N NETWORK_JSON OUT_DIR KIND(rdd|df) SERVERS [badlabel|badopt|checkpointEvery=K]
                int n = Integer.parseInt(a[3]);
                String kind = a[6];
                int servers = Integer.parseInt(a[7]);
                String extra = a.length > 8 ? a[8] : "";
                ByteBuffer xb = ByteBuffer.wrap(Files.readAllBytes(Paths.get(a[1]))).order(ByteOrder.LITTLE_ENDIAN);
                ByteBuffer yb = ByteBuffer.wrap(Files.readAllBytes(Paths.get(a[2]))).order(ByteOrder.LITTLE_ENDIAN);
                int size = xb.capacity() / 4 / n;
                java.util.List<org.apache.spark.mllib.regression.LabeledPoint> pts = new java.util.ArrayList<>();
                java.util.List<org.apache.spark.sql.Row> rows = new java.util.ArrayList<>();
                for (int i = 0; i < n; i++) {
                    double[] x = new double[size];
                    for (int j = 0; j < size; j++) {
                        x[j] = xb.getFloat();
                    }
                    double y = yb.getInt();
                    if (extra.equals("badlabel") && i == 5) {
                        y = 7.5;
                    }
                    pts.add(new org.apache.spark.mllib.regression.LabeledPoint(y, org.apache.spark.mllib.linalg.Vectors.dense(x)));
                    rows.add(org.apache.spark.sql.RowFactory.create(y, org.apache.spark.ml.linalg.Vectors.dense(x)));
                }
                org.apache.spark.sql.SparkSession spark = org.apache.spark.sql.SparkSession.builder().master("local[" + (2 + servers) + "]")
                        .appName("kindling-java-fit").config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
                        .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate();
                try {
                    spark.sparkContext().setLogLevel("ERROR");
                    java.util.List<String> lines = java.util.Collections.synchronizedList(new java.util.ArrayList<>());
                    Kindling k = new Kindling().setNetwork(a[4]).setNumEpoch(6).setBatchSize(32).setNumWorker(2)
                            .setNumServer(servers).setSeed(7).setOptimizer("momentum", java.util.Map.of("lr", 0.01))
                            .setSchedule("constant").setProgressCallback(lines::add);
                    if (extra.equals("badopt")) {
                        k.setOptimizer("nope");
                    }
                    if (extra.startsWith("checkpointEvery=")) {
                        k.setCheckpointEvery(Integer.parseInt(extra.substring(16)));
                    }
                    KindlingModel m;
                    if (kind.equals("df")) {
                        org.apache.spark.sql.types.StructType schema = new org.apache.spark.sql.types.StructType()
                                .add("label", "double").add("features", new org.apache.spark.ml.linalg.VectorUDT());
                        m = k.fit(spark.createDataFrame(rows, schema).repartition(2));
                    } else {
                        m = k.fit(new org.apache.spark.api.java.JavaSparkContext(spark.sparkContext()).parallelize(pts, 2));
                    }
                    m.save(spark.sparkContext(), a[5]);
                    boolean resumed = false;
                    for (String line : lines) {
                        resumed |= line.contains("resuming from");
                    }
                    System.out.println("OK lines " + lines.size() + " resumed " + resumed + " " + m);
                } finally {
                    spark.stop();
                }
                break;
            }
            default:
                throw new IllegalArgumentException("unknown command " + a[0]);
        }
    }
}
