/// When the final `250` may be sent relative to the message reaching the disk (`--fsync`).
public enum FsyncPolicy: String, CaseIterable, Sendable {
    /// The `.eml` and its metadata are written and fsynced (and the directory entry too)
    /// before the `250`: a power loss loses nothing that was accepted.
    case always
    /// The files are written (into the OS page cache) before the `250`, and fsynced in the
    /// background within about 100 ms: a crash or `kill -9` of the sink loses nothing; a power
    /// loss may lose the last ~100 ms.
    case batch
    /// The `250` is sent once the message is in memory; a background writer puts it on disk
    /// and nothing is fsynced. A graceful shutdown (SIGTERM) still writes everything.
    case never
}
