package org.kindling.spark;

/**
 * A fit that failed: {@link #kind()} is the launcher's error class, as the
 * Python side raises it: "DataError" (a bad row or column: fix the data),
 * "NotEnoughSlotsError" (the cluster cannot run the barrier stage),
 * "TrainingError" (every attempt failed; the ranks' last lines are in the
 * message), "TrainingCancelled" or "KindlingSparkError".
 */
public class KindlingSparkException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final String kind;

    public KindlingSparkException(String kind, String message) {
        super(message);
        this.kind = kind;
    }

    public KindlingSparkException(String kind, String message, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    public String kind() {
        return kind;
    }
}
