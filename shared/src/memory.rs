//! glibc's malloc for a process whose records pass between the runtime's threads and
//! librdkafka's: two arenas, and large blocks mapped apart so that they go back to the
//! system when freed (Linux with glibc; elsewhere there is nothing to tune).

/// Caps glibc's malloc arenas at two and maps blocks of `mmap_threshold` bytes and more
/// apart. Call first in `main`, before other threads start.
pub fn tune_malloc(mmap_threshold: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only sets malloc's tunables, from the only thread there is.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(
            libc::M_MMAP_THRESHOLD,
            libc::c_int::try_from(mmap_threshold).unwrap_or(libc::c_int::MAX),
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = mmap_threshold;
}
