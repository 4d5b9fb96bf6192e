package org.kindling.spark;

import java.io.File;
import java.io.IOException;
import java.io.OutputStream;
import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.resource.ResourceInformation;

/**
 * The task role of a JVM fit: what each barrier task of an attempt does.
 * It spools its partition's rows (SpoolWriter, the format of io/spool.c),
 * then runs the launcher's task body, kindling_spark.jvm_task (the same
 * task.barrier_task a PySpark fit runs: rendezvous, host grouping, keeper,
 * orted, mpirun), as a child process: the attempt's job spec (with the job's
 * secret) through its stdin, never a file. The child's stdin stays open
 * while the task runs; when the task ends, fails or is killed (its thread
 * interrupted), the child is killed and its stdin closes, and the child's
 * keepers end every process it started: no orphans. Returns the child's
 * record (pickled; the driver-side launcher reads it).
 */
final class BarrierTask extends scala.runtime.AbstractFunction1<scala.collection.Iterator<Rows.Block>, scala.collection.Iterator<byte[]>>
        implements Serializable {
    private static final long serialVersionUID = 1L;
    private final String jobB64;
    private final String spoolDir;
    private final int servers;
    private final int size;
    private final String python;
    private final Map<String, String> env;

    BarrierTask(String jobB64, String spoolDir, int servers, int size, String python, Map<String, String> env) {
        this.jobB64 = jobB64;
        this.spoolDir = spoolDir;
        this.servers = servers;
        this.size = size;
        this.python = python;
        this.env = env;
    }

    @Override
    public scala.collection.Iterator<byte[]> apply(scala.collection.Iterator<Rows.Block> blocks) {
        BarrierTaskContext ctx = BarrierTaskContext.get();
        int t = ctx.partitionId();
        int tasks = ctx.getTaskInfos().length;
        Path spool = Paths.get(spoolDir, "jvm-task-" + t + ".spool");
        Path result = Paths.get(System.getProperty("java.io.tmpdir"), "kindling-task-" + t + "-" + UUID.randomUUID() + ".pkl");
        Map<String, Object> info = new LinkedHashMap<>();
        info.put("task", t);
        info.put("tasks", tasks);
        info.put("result", result.toString());
        Process p = null;
        try {
            if (t >= servers) {
                Files.createDirectories(spool.getParent());
                String error = null;
                try (SpoolWriter w = new SpoolWriter(spool, size)) {
                    while (blocks.hasNext()) {
                        Rows.Block b = blocks.next();
                        if (b.error != null) {
                            error = b.error;
                            break;
                        }
                        for (int i = 0; i < b.labels.length; i++) {
                            w.append(b.features, i * size, b.labels[i]);
                        }
                    }
                    if (error == null) {
                        w.commit();
                        info.put("spool", spool.toString());
                        info.put("rows", w.count());
                    }
                }
                info.put("error", error);
            } else {
                while (blocks.hasNext()) {
                    blocks.next();
                }
            }
            scala.Option<ResourceInformation> gpu = ctx.resources().get("gpu");
            if (gpu.isDefined() && gpu.get().addresses().length > 0) {
                info.put("gpus", gpu.get().addresses());
            }
            ProcessBuilder pb = new ProcessBuilder(python, "-m", "kindling_spark.jvm_task");
            pb.environment().putAll(env);
            pb.redirectOutput(ProcessBuilder.Redirect.INHERIT).redirectError(ProcessBuilder.Redirect.INHERIT);
            p = pb.start();
            OutputStream in = p.getOutputStream();
            in.write((jobB64 + "\n").getBytes(StandardCharsets.US_ASCII));
            in.write((Launcher.JSON.writeValueAsString(info) + "\n").getBytes(StandardCharsets.UTF_8));
            in.flush(); // stdin stays open until the task ends: its EOF ends the child
            int rc = p.waitFor();
            if (rc != 0 || !Files.isRegularFile(result)) {
                throw new IllegalStateException("kindling: task " + t + ": " + python + " -m kindling_spark.jvm_task exited with status "
                        + rc + " (its error is in this executor's stderr)");
            }
            byte[] record = Files.readAllBytes(result);
            return scala.jdk.javaapi.CollectionConverters.asScala(Collections.singletonList(record).iterator());
        } catch (IOException e) {
            throw new java.io.UncheckedIOException("kindling: task " + t + ": " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("kindling: task " + t + " was interrupted (the stage was cancelled or failed)", e);
        } finally {
            if (p != null) {
                kill(p);
            }
            try {
                Files.deleteIfExists(result);
                Files.deleteIfExists(spool); // renamed away by the child when it got that far
            } catch (IOException ignored) {
                // the driver removes the spool directory after the fit
            }
        }
    }

    /** Ends the child and its tree: SIGKILL to the child closes its end of every keeper's pipe. */
    static void kill(Process p) {
        try {
            p.getOutputStream().close();
        } catch (IOException ignored) {
            // already closed
        }
        if (p.isAlive()) {
            List<ProcessHandle> kids = p.descendants().collect(java.util.stream.Collectors.toList());
            p.destroyForcibly();
            try {
                p.waitFor(10, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            kids.forEach(ProcessHandle::destroyForcibly); // the keepers do this too; belt and braces
        }
    }

    static String python(String chosen) {
        if (chosen != null && !chosen.isEmpty()) {
            return chosen;
        }
        for (String var : new String[] {"KINDLING_PYTHON", "PYSPARK_PYTHON"}) {
            String v = System.getenv(var);
            if (v != null && !v.isEmpty()) {
                return v;
            }
        }
        return new File("/usr/bin/python3").canExecute() ? "/usr/bin/python3" : "python3";
    }
}
