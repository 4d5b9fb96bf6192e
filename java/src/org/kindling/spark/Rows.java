package org.kindling.spark;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.apache.spark.Partitioner;
import org.apache.spark.sql.Row;
import scala.Tuple2;

/**
 * The data role of a JVM fit (kindling_spark.data's for the JVM): each input
 * row read as (label, features), checked, and cut into blocks keyed by the
 * barrier task (rank) that trains on them: partitions 0..S-1 are the
 * servers' (empty), S+w worker w's. With W input partitions, partition w
 * goes whole and in order to worker w; otherwise rows are dealt round-robin.
 * A bad row becomes one error block for worker 0, which the task reports as
 * a DataError (an exception here would look like a lost task and be retried).
 */
final class Rows {
    static final int BLOCK_ROWS = 4096;

    private Rows() {
    }

    /** Rows of one rank: labels and flat float32 features, or an error. */
    static final class Block implements Serializable {
        private static final long serialVersionUID = 1L;
        final int[] labels;
        final float[] features;
        final String error;

        Block(int[] labels, float[] features, String error) {
            this.labels = labels;
            this.features = features;
            this.error = error;
        }
    }

    /** Partition k holds key k: the rank's rows. */
    static final class RankPartitioner extends Partitioner {
        private static final long serialVersionUID = 1L;
        private final int ranks;

        RankPartitioner(int ranks) {
            this.ranks = ranks;
        }

        @Override
        public int numPartitions() {
            return ranks;
        }

        @Override
        public int getPartition(Object key) {
            return (Integer) key;
        }
    }

    /** The map side: mapPartitionsWithIndex's function. */
    static final class MakeBlocks implements org.apache.spark.api.java.function.Function2<Integer, Iterator<Object>, Iterator<Tuple2<Integer, Block>>> {
        private static final long serialVersionUID = 1L;
        private final int servers;
        private final int workers;
        private final int size;
        private final int classes;
        private final boolean same;

        MakeBlocks(int servers, int workers, int size, int classes, int inputPartitions) {
            this.servers = servers;
            this.workers = workers;
            this.size = size;
            this.classes = classes;
            this.same = inputPartitions == workers;
        }

        @Override
        public Iterator<Tuple2<Integer, Block>> call(Integer index, Iterator<Object> rows) {
            List<Tuple2<Integer, Block>> out = new ArrayList<>();
            int[][] labels = new int[workers][BLOCK_ROWS];
            float[][] feats = new float[workers][BLOCK_ROWS * size];
            int[] fill = new int[workers];
            long i = 0;
            double[] x = new double[size];
            while (rows.hasNext()) {
                Object row = rows.next();
                int label;
                try {
                    label = read(row, x);
                } catch (IllegalArgumentException e) {
                    out.clear();
                    out.add(new Tuple2<>(servers, new Block(null, null, "input partition " + index + ", row " + i + ": " + e.getMessage())));
                    return out.iterator();
                }
                int w = same ? index : (int) ((index + i) % workers);
                int k = fill[w];
                labels[w][k] = label;
                for (int j = 0; j < size; j++) {
                    feats[w][k * size + j] = (float) x[j];
                }
                if (++fill[w] == BLOCK_ROWS) {
                    out.add(new Tuple2<>(servers + w, new Block(labels[w].clone(), feats[w].clone(), null)));
                    fill[w] = 0;
                }
                i++;
            }
            for (int w = 0; w < workers; w++) {
                if (fill[w] > 0) {
                    out.add(new Tuple2<>(servers + w, new Block(java.util.Arrays.copyOf(labels[w], fill[w]),
                            java.util.Arrays.copyOf(feats[w], fill[w] * size), null)));
                }
            }
            return out.iterator();
        }

        /** The row's label (checked) and its features into x (checked). */
        private int read(Object row, double[] x) {
            Object label;
            Object features;
            if (row instanceof org.apache.spark.mllib.regression.LabeledPoint) {
                org.apache.spark.mllib.regression.LabeledPoint p = (org.apache.spark.mllib.regression.LabeledPoint) row;
                label = p.label();
                features = p.features();
            } else if (row instanceof org.apache.spark.ml.feature.LabeledPoint) {
                org.apache.spark.ml.feature.LabeledPoint p = (org.apache.spark.ml.feature.LabeledPoint) row;
                label = p.label();
                features = p.features();
            } else if (row instanceof Tuple2) {
                label = ((Tuple2<?, ?>) row)._1();
                features = ((Tuple2<?, ?>) row)._2();
            } else if (row instanceof Row) {
                Row r = (Row) row;
                if (r.size() != 2) {
                    throw new IllegalArgumentException("a Row of " + r.size() + " fields; expected (label, features)");
                }
                label = r.get(0);
                features = r.get(1);
            } else {
                throw new IllegalArgumentException("a " + (row == null ? "null" : row.getClass().getName())
                        + "; expected a LabeledPoint, a Tuple2 (label, features) or a Row (label, features)");
            }
            features(features, x);
            return label(label);
        }

        private int label(Object value) {
            if (value == null) {
                throw new IllegalArgumentException("label is null");
            }
            if (!(value instanceof Number)) {
                throw new IllegalArgumentException("label " + value + " is not a number");
            }
            double v = ((Number) value).doubleValue();
            if (!Double.isFinite(v) || v != Math.rint(v) || v < 0 || v >= classes) {
                throw new IllegalArgumentException("label " + value + " is not a class of the network (whole numbers 0.."
                        + (classes - 1) + ")");
            }
            return (int) v;
        }

        private void features(Object value, double[] x) {
            if (value == null) {
                throw new IllegalArgumentException("features are null");
            }
            double[] a;
            if (value instanceof org.apache.spark.ml.linalg.Vector) {
                a = ((org.apache.spark.ml.linalg.Vector) value).toArray();
            } else if (value instanceof org.apache.spark.mllib.linalg.Vector) {
                a = ((org.apache.spark.mllib.linalg.Vector) value).toArray();
            } else if (value instanceof double[]) {
                a = (double[]) value;
            } else if (value instanceof float[]) {
                float[] f = (float[]) value;
                a = new double[f.length];
                for (int j = 0; j < f.length; j++) {
                    a[j] = f[j];
                }
            } else if (value instanceof scala.collection.Seq) {
                scala.collection.Seq<?> s = (scala.collection.Seq<?>) value;
                a = new double[s.size()];
                for (int j = 0; j < a.length; j++) {
                    Object e = s.apply(j);
                    if (e == null) {
                        throw new IllegalArgumentException("features have a null element (feature " + j + ")");
                    }
                    if (!(e instanceof Number)) {
                        throw new IllegalArgumentException("features are not numbers (" + e + ")");
                    }
                    a[j] = ((Number) e).doubleValue();
                }
            } else {
                throw new IllegalArgumentException("features are not numbers (" + value.getClass().getName() + ")");
            }
            if (a.length != size) {
                throw new IllegalArgumentException(a.length + " features, expected " + size + " (the network's input size)");
            }
            for (int j = 0; j < size; j++) {
                if (!Double.isFinite(a[j]) || Math.abs(a[j]) > Float.MAX_VALUE) {
                    throw new IllegalArgumentException("feature " + j + " is " + a[j] + "; features must be finite");
                }
                x[j] = a[j];
            }
        }
    }
}
