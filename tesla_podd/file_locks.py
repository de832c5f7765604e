"""What to say when a file system refuses file locks (flock).

Locks keep parallel buffer jobs from training the same expert and from rewriting one manifest at once. NFS
without a lock daemon answers ENOLCK, Lustre mounted without `-o flock` ENOSYS, some FUSE file systems
EOPNOTSUPP: each would end in a traceback inside `fcntl.flock`."""

from __future__ import annotations

from pathlib import Path


def no_locks_message(folder: str | Path, exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    return (
        f"File locks do not work in {folder} ({reason}): its file system (NFS without a lock daemon, or Lustre "
        "mounted without `-o flock`) cannot keep two buffer jobs from writing the same expert. Put the expert "
        "buffers on a file system with locks: `paths.buffer_root=/path/on/a/local/or/locking/disk` (a node-local "
        "disk suits a single job), or ask the cluster admins for a mount with locks. Nothing was written."
    )
