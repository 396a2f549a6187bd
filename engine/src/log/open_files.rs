//! The open-file budget: every segment keeps its file open, so the number of segment files
//! the log may hold open is bounded by the process's open-file limit, less what the rest of
//! the engine needs (connections, stores, archive files, compiled code). Topic creation and
//! growth are refused past it, before any file is opened, so that no request can take the
//! engine to EMFILE.

/// File descriptors kept for everything but segments.
pub const OPEN_FILES_RESERVED: u64 = 256;

/// Raises the soft open-file limit to the hard one (as most servers do at start) and returns
/// the soft limit then in force; None if it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some(limit.rlim_cur)
}

/// Segment files the log may keep open under an open-file limit of `limit`.
pub fn segment_budget(limit: u64) -> u64 {
    limit.saturating_sub(OPEN_FILES_RESERVED)
}
