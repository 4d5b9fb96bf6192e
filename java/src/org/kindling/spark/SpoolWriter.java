package org.kindling.spark;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.zip.CRC32;

/**
 * Writes a spool file, the row format a barrier task hands to its rank,
 * byte for byte as io/spool.c and kindling_spark/spool.py define it:
 * a 64-byte header (magic "KDSPOOL1", version 1, shape rank and dims, flags
 * bit 0 = labels, u64 count, u64 CRC32 of the payload), then the float32
 * features, then the int32 labels, all little-endian. Labels go to a side
 * file while rows stream in; the file is written under a temporary name,
 * fsynced and renamed, so its name only ever holds a complete file.
 */
final class SpoolWriter implements AutoCloseable {
    private static final int HEADER_BYTES = 64;
    private final Path path;
    private final Path tmp;
    private final Path labelsTmp;
    private final int size;
    private final FileChannel out;
    private final OutputStream labels;
    private final CRC32 crc = new CRC32();
    private final ByteBuffer row;
    private long count;
    private boolean done;

    SpoolWriter(Path path, int size) throws IOException {
        this.path = path;
        this.size = size;
        this.tmp = path.resolveSibling(path.getFileName() + ".tmp-" + ProcessHandle.current().pid());
        this.labelsTmp = path.resolveSibling(path.getFileName() + ".labels-" + ProcessHandle.current().pid());
        this.out = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE);
        this.labels = new BufferedOutputStream(Files.newOutputStream(labelsTmp), 1 << 16);
        this.out.position(HEADER_BYTES);
        this.row = ByteBuffer.allocate(size * 4).order(ByteOrder.LITTLE_ENDIAN);
    }

    void append(float[] x, int off, int label) throws IOException {
        row.clear();
        for (int j = 0; j < size; j++) {
            row.putFloat(x[off + j]);
        }
        row.flip();
        crc.update(row.array(), 0, size * 4);
        while (row.hasRemaining()) {
            out.write(row);
        }
        labels.write(new byte[] {(byte) label, (byte) (label >>> 8), (byte) (label >>> 16), (byte) (label >>> 24)});
        count++;
    }

    long count() {
        return count;
    }

    /** Finishes the file (labels, header, fsync, rename). */
    void commit() throws IOException {
        labels.close();
        byte[] buf = new byte[1 << 16];
        try (java.io.InputStream in = Files.newInputStream(labelsTmp)) {
            int n;
            while ((n = in.read(buf)) > 0) {
                crc.update(buf, 0, n);
                ByteBuffer b = ByteBuffer.wrap(buf, 0, n);
                while (b.hasRemaining()) {
                    out.write(b);
                }
            }
        }
        ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        h.put("KDSPOOL1".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        h.putInt(1).putInt(1).putInt(size).putInt(0).putInt(0); // version, rank 1, dims
        h.putInt(1); // flags: labels
        h.putLong(count).putLong(crc.getValue());
        h.position(HEADER_BYTES).flip();
        out.position(0);
        while (h.hasRemaining()) {
            out.write(h);
        }
        out.force(true);
        out.close();
        Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        Files.deleteIfExists(labelsTmp);
        done = true;
    }

    @Override
    public void close() throws IOException {
        if (!done) {
            labels.close();
            out.close();
            Files.deleteIfExists(tmp);
            Files.deleteIfExists(labelsTmp);
        }
    }
}
