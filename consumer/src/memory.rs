//! The pod process's memory. Records are made on librdkafka's and the catch-up readers'
//! threads and freed on others: two glibc arenas instead of eight per core keep each
//! thread's freed memory from staying apart. Blocks of 128 KiB and more (librdkafka's fetch
//! responses, whole answers) are mapped apart and given back when freed: kept in the heap,
//! each left a hole that records split, and the pod grew well past its buffer.

/// Blocks at least this big get a mapping of their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Caps glibc's malloc arenas at two and maps large blocks apart (Linux with glibc;
/// elsewhere there is nothing to tune). Call first in `main`, before other threads start.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only sets malloc's tunables, from the only thread there is.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
