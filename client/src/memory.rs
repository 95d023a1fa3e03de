//! The client process's memory. glibc gives threads that allocate at the same time arenas
//! of their own (up to eight per core) and keeps what each frees for reuse there; batches
//! handed between the runtime's threads and librdkafka's made the resident memory grow with
//! every batch (42 MB after 100,000 events on Apache Kafka). Two arenas keep it near the
//! working set (33 MB). Blocks of 1 MiB and more (whole answers) are mapped apart and
//! given back when freed: kept in an arena, each left a hole that smaller blocks split.

/// Blocks at least this big get a mapping of their own.
const MMAP_THRESHOLD: usize = 1024 * 1024;

/// Caps glibc's malloc arenas at two and maps large blocks apart (Linux with glibc;
/// elsewhere there is nothing to tune). Call first in `main`, before other threads start.
pub fn tune_malloc() {
    shared::memory::tune_malloc(MMAP_THRESHOLD);
}
