//! The client process's memory. glibc gives threads that allocate at the same time arenas
//! of their own (up to eight per core) and keeps what each frees for reuse there; batches
//! handed between the runtime's threads and librdkafka's made the resident memory grow with
//! every batch (42 MB after 100,000 events on Apache Kafka). Two arenas keep it near the
//! working set (33 MB).

/// Caps glibc's malloc arenas at two (Linux with glibc; elsewhere there is nothing to
/// cap). Call first in `main`, before other threads start.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only sets one of malloc's tunables, from the only thread there is.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
