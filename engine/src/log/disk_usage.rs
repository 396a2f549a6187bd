//! Disk space accounting for the whole log: bytes held by segments against `max_disk_bytes`,
//! and the file system's free space against `min_free_bytes`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::error::{DiskFull, LogError};

/// Disk space accounting: refuses appends past the configured limits so that the disk never
/// fills up under the log.
pub struct DiskUsage {
    dir: PathBuf,
    used: AtomicU64,
    max_bytes: Option<u64>,
    min_free_bytes: u64,
    low_on_space: AtomicBool,
}

impl DiskUsage {
    pub fn new(dir: PathBuf, max_bytes: Option<u64>, min_free_bytes: u64) -> DiskUsage {
        DiskUsage {
            dir,
            used: AtomicU64::new(0),
            max_bytes,
            min_free_bytes,
            low_on_space: AtomicBool::new(false),
        }
    }

    pub(super) fn add(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
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
