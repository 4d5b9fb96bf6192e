package org.kindling.spark;

/**
 * A failed libkindling call: {@link #status()} is the kd_status identifier
 * (for example "KD_ERR_FORMAT"), {@link #code()} its number, and the message
 * is the library's own (kd_last_error), prefixed by what was being done.
 * The Python side raises native.KindlingError for the same failures.
 */
public class KindlingException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final int code;
    private final String status;

    public KindlingException(int code, String status, String message) {
        super(message);
        this.code = code;
        this.status = status;
    }

    public int code() {
        return code;
    }

    public String status() {
        return status;
    }
}
