//! The priority archival runs at: its threads take only cores nothing else wants, and the disk
//! at the lowest best-effort I/O priority, so that archiving does not take throughput from
//! producers and plugins. Retention (background archival) and `sluice archive run` both start
//! their work with [`spawn_low_priority`].

/// The nice value taken where `SCHED_IDLE` is refused: the lowest priority there is.
const NICE_LOWEST: libc::c_int = 19;
/// `ioprio_set`'s `which` for one thread (a process id, which a thread id also is).
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
/// Where the class sits in an I/O priority value (`IOPRIO_CLASS_SHIFT`).
const IOPRIO_CLASS_SHIFT: u32 = 13;
/// The best-effort I/O scheduling class (`IOPRIO_CLASS_BE`).
const IOPRIO_CLASS_BEST_EFFORT: libc::c_long = 2;
/// The lowest level within a class (levels run 0, highest, to 7).
const IOPRIO_LEVEL_LOWEST: libc::c_long = 7;
/// Best-effort class, lowest level.
const IOPRIO_BEST_EFFORT_LOWEST: libc::c_long =
    (IOPRIO_CLASS_BEST_EFFORT << IOPRIO_CLASS_SHIFT) | IOPRIO_LEVEL_LOWEST;

/// Runs `work` on a thread of its own at low CPU and I/O priority, so that archiving does
/// not take throughput from producers and plugins.
pub fn spawn_low_priority(name: &str, work: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_this_threads_priority();
            work();
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the archival thread");
    }
}

/// The calling thread (and the encoding threads it starts, which inherit it) runs only when
/// a core would otherwise be idle, at the lowest best-effort I/O priority.
///
/// Why `SCHED_IDLE` rather than a nice value: even at nice 10, archival still took a large
/// share of durable producers' throughput; `SCHED_IDLE` runs only when a core is idle, so
/// CPU-bound plugins keep theirs (archival then waits for them). The archival rate limit
/// (`archive/pace.rs`) covers what remains; docs/architecture.md (Archive) has the figures.
/// The I/O priority only counts under a disk scheduler that honours it (not `none`, common
/// on virtual disks). When the cores are saturated archival waits; retention keeps a segment
/// until its file is written, so nothing is lost, the log only grows.
fn lower_this_threads_priority() {
    // SAFETY: plain syscalls on the calling thread's id; failure only leaves the priority.
    unsafe {
        let tid = libc::gettid();
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE_LOWEST);
        }
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid as libc::c_long,
            IOPRIO_BEST_EFFORT_LOWEST,
        );
    }
}
