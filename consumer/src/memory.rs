//! The pod process's memory. Records are made on librdkafka's and the catch-up readers'
//! threads and freed on others: two glibc arenas instead of eight per core keep each
//! thread's freed memory from staying apart. Blocks of 128 KiB and more (librdkafka's fetch
//! responses, whole answers) are mapped apart and given back when freed: kept in the heap,
//! each left a hole that records split, and the pod grew well past its buffer.

/// Blocks at least this big get a mapping of their own.
const MMAP_THRESHOLD: usize = 128 * 1024;

/// Tunes malloc as above. Call first in `main`, before other threads start.
pub fn tune_malloc() {
    shared::memory::tune_malloc(MMAP_THRESHOLD);
}
