"""The one way this package writes a file that others may read at any
moment (a spool a rank is about to open, a saved model, the agent's
table): into a temporary sibling, flushed and fsynced, renamed over the
target, then the directory fsynced. A reader sees the old file or the
whole new one, never a part; a crash leaves at worst a temporary named
"<path>.tmp-<pid>-<random>"."""
import os
import uuid


def fsync_dir(path):
    """Make a rename in path's directory durable (skipped where the file
    system cannot sync a directory)."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path):
    """A sibling name no other writer of `path` uses."""
    return f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class AtomicFile:
    """A new version of `path`, written through `.file` (seekable), that
    replaces `path` on commit() and vanishes on abort(). As a context
    manager it commits when the block ends normally, else aborts."""

    def __init__(self, path, mode="wb"):
        self.path = os.fspath(path)
        self.tmp = temporary_name(self.path)
        self.file = open(self.tmp, mode)

    def commit(self):
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.path)

    def abort(self):
        self.file.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


def write_atomic(path, data):
    """Replace path's content with data (bytes or str) atomically."""
    with AtomicFile(path, "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w") as f:
        f.write(data)


def write_synced(path, data):
    """Write a new file and fsync it: for the files of a directory that is
    itself renamed into place afterwards (a saved model)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
