package org.kindling.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.function.Consumer;
import org.apache.spark.SparkContext;
import org.apache.spark.api.java.JavaPairRDD;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.rdd.RDD;
import scala.reflect.ClassTag$;

/**
 * The driver role of a JVM fit. The launcher is not written twice: the
 * Python launcher's driver side runs as a child process,
 * kindling_spark.jvm_driver (the builder's checks, the job's id, secret
 * and hub, the attempts, retries with --resume), and asks this JVM, which
 * holds the SparkContext and the data, to run each attempt's barrier stage
 * (BarrierTask, one per rank, each running the Python task body). The line
 * protocol is in jvm_driver.py's docstring.
 */
final class Launcher {
    static final ObjectMapper JSON = new ObjectMapper();
    private static final String EOF = "\u0000EOF";

    private Launcher() {
    }

    static byte[] fit(SparkContext sc, RDD<?> rows, List<Object[]> calls, String python, Double timeout,
            Consumer<String> onLine) throws IOException {
        python = BarrierTask.python(python);
        Path ckpt = Files.createTempFile("kindling-fit-", ".h5");
        Map<String, Object> settings = new LinkedHashMap<>();
        settings.put("calls", calls);
        settings.put("host", sc.getConf().get("spark.driver.host", "127.0.0.1"));
        settings.put("master", sc.master());
        settings.put("checkpoint_out", ckpt.toString());
        settings.put("timeout", timeout);
        Map<String, String> env = childEnv();
        ProcessBuilder pb = new ProcessBuilder(python, "-m", "kindling_spark.jvm_driver");
        pb.environment().putAll(env);
        pb.redirectError(ProcessBuilder.Redirect.INHERIT);
        Process p;
        try {
            p = pb.start();
        } catch (IOException e) {
            throw new KindlingSparkException("KindlingSparkError", "kindling: cannot start " + python
                    + " -m kindling_spark.jvm_driver (" + e.getMessage() + "); set the Python with setPython, KINDLING_PYTHON or PYSPARK_PYTHON", e);
        }
        BlockingQueue<String> inbox = new LinkedBlockingQueue<>();
        Thread reader = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    if (line.startsWith("LINE ")) {
                        String text = JSON.readValue(line.substring(5), String.class);
                        if (onLine != null) {
                            onLine.accept(text);
                        }
                    } else {
                        inbox.add(line);
                    }
                }
            } catch (IOException ignored) {
                // the pipe broke: reported as EOF below
            } finally {
                inbox.add(EOF);
            }
        }, "kindling-jvm-driver-reader");
        reader.setDaemon(true);
        reader.start();
        OutputStream out = p.getOutputStream();
        try {
            send(out, JSON.writeValueAsString(settings));
            JavaRDD<Rows.Block> ranked = null;
            JsonNode config = null;
            while (true) {
                String msg = inbox.take();
                if (msg.equals(EOF)) {
                    int rc = p.waitFor();
                    throw new KindlingSparkException("KindlingSparkError", "kindling: " + python
                            + " -m kindling_spark.jvm_driver ended (status " + rc + ") without a result; its error is above on stderr"
                            + " (is kindling_spark importable there? pip install ./spark-barrier or set PYTHONPATH)");
                }
                String kind = msg.contains(" ") ? msg.substring(0, msg.indexOf(' ')) : msg;
                String rest = msg.contains(" ") ? msg.substring(msg.indexOf(' ') + 1) : "";
                switch (kind) {
                    case "CONFIG":
                        config = JSON.readTree(rest);
                        break;
                    case "SLOTS":
                        send(out, "SLOTS " + slots(sc));
                        break;
                    case "STAGE": {
                        JsonNode stage = JSON.readTree(rest);
                        if (ranked == null) {
                            ranked = rank(rows, config);
                        }
                        send(out, runStage(ranked, stage, config, python, env));
                        break;
                    }
                    case "DONE":
                        return Files.readAllBytes(ckpt);
                    case "ERROR": {
                        JsonNode e = JSON.readTree(rest);
                        String type = e.path("type").asText();
                        String text = e.path("message").asText();
                        if (type.equals("ValueError") || type.equals("TypeError")) {
                            throw new IllegalArgumentException(text);
                        }
                        throw new KindlingSparkException(type, text);
                    }
                    default:
                        throw new KindlingSparkException("KindlingSparkError", "kindling: unexpected message from jvm_driver: " + msg);
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new KindlingSparkException("TrainingCancelled", "kindling: the fit was interrupted", e);
        } finally {
            BarrierTask.kill(p); // its finally blocks ran on DONE/ERROR; on any other way out its stdin EOF cancels it
            Files.deleteIfExists(ckpt);
        }
    }

    private static void send(OutputStream out, String line) throws IOException {
        out.write((line + "\n").getBytes(StandardCharsets.UTF_8));
        out.flush();
    }

    /** The environment of the Python children: kindling_spark importable from this jar's checkout when it is one. */
    static Map<String, String> childEnv() {
        Map<String, String> env = new LinkedHashMap<>();
        String extra = System.getenv("KINDLING_SPARK_PYTHONPATH");
        if (extra != null && !extra.isEmpty()) {
            String old = System.getenv("PYTHONPATH");
            env.put("PYTHONPATH", extra + (old == null || old.isEmpty() ? "" : ":" + old));
        }
        return env;
    }

    static int slots(SparkContext sc) {
        try {
            return sc.maxNumConcurrentTasks(sc.resourceProfileManager().defaultResourceProfile());
        } catch (RuntimeException e) {
            int cpus = Integer.parseInt(sc.getConf().get("spark.task.cpus", "1"));
            return sc.defaultParallelism() / Math.max(1, cpus);
        }
    }

    /** The rows as one partition per rank (Rows.MakeBlocks). */
    @SuppressWarnings("unchecked")
    private static JavaRDD<Rows.Block> rank(RDD<?> rows, JsonNode config) {
        int servers = config.get("server_ranks").asInt();
        int workers = config.get("workers").asInt();
        JavaRDD<Object> input = (JavaRDD<Object>) rows.toJavaRDD();
        JavaRDD<scala.Tuple2<Integer, Rows.Block>> keyed = input.mapPartitionsWithIndex(
                new Rows.MakeBlocks(servers, workers, config.get("input_size").asInt(), config.get("num_classes").asInt(),
                        input.getNumPartitions()), false);
        return JavaPairRDD.fromJavaRDD(keyed).partitionBy(new Rows.RankPartitioner(servers + workers)).values();
    }

    /** One attempt's barrier stage; the reply line for jvm_driver. */
    private static String runStage(JavaRDD<Rows.Block> ranked, JsonNode stage, JsonNode config, String python,
            Map<String, String> env) throws IOException {
        BarrierTask task = new BarrierTask(stage.get("job").asText(), stage.get("spool_dir").asText(),
                config.get("server_ranks").asInt(), config.get("input_size").asInt(), python, env);
        try {
            RDD<byte[]> out = ranked.rdd().barrier().mapPartitions(task, false, ClassTag$.MODULE$.apply(byte[].class));
            List<String> results = new ArrayList<>();
            for (byte[] r : out.toJavaRDD().collect()) {
                results.add(Base64.getEncoder().encodeToString(r));
            }
            return "RESULTS " + JSON.writeValueAsString(results);
        } catch (Exception e) { // SparkException (a task or executor failed, or the job was cancelled)
            StringBuilder text = new StringBuilder(String.valueOf(e.getMessage()));
            for (Throwable c = e.getCause(); c != null; c = c.getCause()) {
                text.append("\nCaused by: ").append(c);
            }
            return "FAILED " + JSON.writeValueAsString(text.toString());
        }
    }
}
