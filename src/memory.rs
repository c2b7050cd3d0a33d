//! Process-wide memory settings of a faxd node.

/// Malloc arenas a faxd process keeps (glibc).
pub const MALLOC_ARENAS: i32 = 2;

/// Limits glibc's malloc arenas to [`MALLOC_ARENAS`], unless `MALLOC_ARENA_MAX` is set in the
/// environment (then glibc uses that). A node runs many threads (HTTP workers, the async
/// runtime, store readers, converters, the blocking pool); by default glibc may give each
/// thread an arena of its own, up to eight per core, and the free memory every arena keeps
/// makes the node's RSS grow with its thread count rather than with its work. Call once, at
/// the start of `main`, before any other thread exists.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator parameters; it is called before the
        // process starts other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}
