//! Disk space accounting for the whole log: bytes held by segments against `max_disk_bytes`,
//! and the file system's free space against `min_free_bytes`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::error::{DiskFull, LogError};

/// Within this many bytes of `min_free_bytes` (by the estimate), every append measures the
/// free space again instead of trusting the periodic measure.
const FREE_SPACE_RECHECK_BYTES: u64 = 64 << 20;

/// Disk space accounting: refuses appends past the configured limits so that the disk never
/// fills up under the log.
pub struct DiskUsage {
    dir: PathBuf,
    used: AtomicU64,
    max_bytes: Option<u64>,
    min_free_bytes: u64,
    low_on_space: AtomicBool,
    /// Free bytes as last measured, less what the log appended since: between two measures
    /// the log is the main writer, so this tracks the disk closely.
    free_estimate: AtomicU64,
}

impl DiskUsage {
    pub fn new(dir: PathBuf, max_bytes: Option<u64>, min_free_bytes: u64) -> DiskUsage {
        DiskUsage {
            dir,
            used: AtomicU64::new(0),
            max_bytes,
            min_free_bytes,
            low_on_space: AtomicBool::new(false),
            free_estimate: AtomicU64::new(u64::MAX),
        }
    }

    pub(super) fn add(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        let _ = self
            .free_estimate
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |free| {
                Some(free.saturating_sub(bytes))
            });
    }

    pub(super) fn sub(&self, bytes: u64) {
        self.used
            .fetch_sub(bytes.min(self.used()), Ordering::Relaxed);
    }

    /// Bytes held by segment files.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Re-reads the free space of the file system holding the data directory.
    pub fn refresh_free_space(&self) {
        if let Some(free) = free_bytes(&self.dir) {
            self.free_estimate.store(free, Ordering::Relaxed);
            let low = free < self.min_free_bytes;
            if low != self.low_on_space.swap(low, Ordering::Relaxed) {
                if low {
                    tracing::warn!(
                        free,
                        min_free_bytes = self.min_free_bytes,
                        "free disk space is low: refusing produce"
                    );
                } else {
                    tracing::info!(free, "free disk space recovered: accepting produce");
                }
            }
        }
    }

    pub(super) fn check(&self) -> Result<(), LogError> {
        if let Some(max) = self.max_bytes
            && self.used() >= max
        {
            return Err(DiskFull::AtLimit {
                used_bytes: self.used(),
                max_bytes: max,
            }
            .into());
        }
        // Close to the limit, measure at every append: a burst of produce between two
        // periodic measures must not run the disk full.
        let near_limit = self.min_free_bytes.saturating_add(FREE_SPACE_RECHECK_BYTES);
        if self.min_free_bytes > 0 && self.free_estimate.load(Ordering::Relaxed) < near_limit {
            self.refresh_free_space();
        }
        if self.low_on_space.load(Ordering::Relaxed) {
            return Err(DiskFull::LowFreeSpace {
                dir: self.dir.clone(),
                min_free_bytes: self.min_free_bytes,
            }
            .into());
        }
        Ok(())
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` is a plain C struct of integers, for which all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out-pointer for the call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}
