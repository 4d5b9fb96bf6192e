package org.kindling.spark;

import java.io.File;
import java.io.IOException;
import java.lang.ref.Cleaner;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;

/**
 * One libkindling network (a kd_net) rebuilt from checkpoint bytes, through
 * the JNI library libkindling_jni.so. Not thread-safe (the forward pass keeps
 * its buffers in the network): KindlingModel keeps one per concurrent caller.
 * close() frees it at once; a Cleaner frees one that was forgotten.
 *
 * <p>The JNI library is found at, first hit wins (every path tried is in the
 * error when none is): the system property kindling.jni.library, the
 * environment variable KINDLING_JNI_LIB (either must name an existing file),
 * the directory of the jar this class came from (build/ holds kindling.jar,
 * libkindling_jni.so and libkindling.so together), then java.library.path.
 */
final class NativeNet implements AutoCloseable {
    static final String JNI_NAME = "libkindling_jni.so";
    private static final Cleaner CLEANER = Cleaner.create();
    private static volatile boolean loaded;

    // ------------------------------------------------------------- natives
    static native String version();

    static native void setThreads(int n);

    private static native long load(String checkpointPath, Object[] historyOut);

    private static native void free(long handle);

    private static native String specJson(long handle);

    private static native int[] inputShape(long handle);

    private static native int numClasses(long handle);

    private static native void predict(long handle, float[] x, int n, int batch, float[] probs);

    // ------------------------------------------------------------- loading
    static synchronized void loadLibrary() {
        if (loaded) {
            return;
        }
        List<String> tried = new ArrayList<>();
        String named = System.getProperty("kindling.jni.library");
        String namedBy = "-Dkindling.jni.library";
        if (named == null || named.isEmpty()) {
            named = System.getenv("KINDLING_JNI_LIB");
            namedBy = "KINDLING_JNI_LIB";
        }
        if (named != null && !named.isEmpty()) {
            if (!new File(named).isFile()) {
                throw new UnsatisfiedLinkError(namedBy + "=" + named + " does not exist (unset it to search the usual places)");
            }
            System.load(new File(named).getAbsolutePath());
            loaded = true;
            return;
        }
        try {
            Path jar = Paths.get(NativeNet.class.getProtectionDomain().getCodeSource().getLocation().toURI());
            Path beside = (Files.isDirectory(jar) ? jar : jar.getParent()).resolve(JNI_NAME);
            tried.add(beside.toString());
            if (Files.isRegularFile(beside)) {
                System.load(beside.toAbsolutePath().toString());
                loaded = true;
                return;
            }
        } catch (URISyntaxException | NullPointerException | SecurityException | java.nio.file.FileSystemNotFoundException e) {
            tried.add("(the jar's directory: " + e + ")");
        }
        try {
            System.loadLibrary("kindling_jni");
            loaded = true;
        } catch (UnsatisfiedLinkError e) {
            tried.add("java.library.path (" + System.getProperty("java.library.path") + ")");
            UnsatisfiedLinkError err = new UnsatisfiedLinkError(JNI_NAME + " not found; tried " + String.join(", ", tried)
                    + ". Build it (cmake --build build), keep it beside kindling.jar, or set KINDLING_JNI_LIB"
                    + " (on executors: spark.executorEnv.KINDLING_JNI_LIB).");
            err.initCause(e);
            throw err;
        }
    }

    // ------------------------------------------------------------ instances
    /** Owns the handle; the Cleaner's action, so it must not refer to the NativeNet. */
    private static final class Handle implements Runnable {
        private long ptr;

        Handle(long ptr) {
            this.ptr = ptr;
        }

        @Override
        public synchronized void run() {
            if (ptr != 0) {
                free(ptr);
                ptr = 0;
            }
        }
    }

    private final Handle handle;
    private final Cleaner.Cleanable cleanable;
    final int[] inputShape;
    final int inputSize;
    final int numClasses;
    final String specJson;
    /** Epoch records, 9 doubles each (see kindling_jni.c), NaN where not measured. */
    final double[] history;

    /**
     * The network of a checkpoint's bytes. The library reads files, so the
     * bytes pass through a private temporary file, removed at once; errors
     * name {@code name} (where the bytes came from) instead.
     */
    NativeNet(byte[] checkpoint, String name) {
        loadLibrary();
        Path tmp = null;
        long ptr;
        Object[] hist = new Object[1];
        try {
            tmp = Files.createTempFile("kindling-model-", ".h5");
            Files.write(tmp, checkpoint);
            try {
                ptr = load(tmp.toString(), hist);
            } catch (KindlingException e) {
                throw new KindlingException(e.code(), e.status(), e.getMessage().replace(tmp.toString(), name));
            }
        } catch (IOException e) {
            throw new java.io.UncheckedIOException("kindling: cannot write the checkpoint to a temporary file: " + e.getMessage(), e);
        } finally {
            if (tmp != null) {
                try {
                    Files.deleteIfExists(tmp);
                } catch (IOException ignored) {
                    // a leftover temporary file is harmless; the error that matters is already thrown
                }
            }
        }
        handle = new Handle(ptr);
        cleanable = CLEANER.register(this, handle);
        inputShape = inputShape(ptr);
        int size = 1;
        for (int d : inputShape) {
            size *= d;
        }
        inputSize = size;
        numClasses = numClasses(ptr);
        specJson = specJson(ptr);
        history = (double[]) hist[0];
    }

    /** Probabilities of n samples (n * inputSize floats) as n * numClasses floats. */
    float[] predict(float[] x, int n, int batch) {
        float[] out = new float[n * numClasses];
        synchronized (handle) {
            predict(handle.ptr, x, n, batch, out); // ptr 0 (closed): IllegalStateException from the JNI side
        }
        return out;
    }

    @Override
    public void close() {
        cleanable.clean();
    }
}
