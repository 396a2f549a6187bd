//! The log's file-system seam: every file and directory operation of the log (create, append,
//! read, truncate, fsync of a file or a directory, rename, remove, list) goes through [`Fs`]
//! and the [`FsFile`]s it opens; nothing else in `log/` but its tests calls `std::fs`.
//!
//! In production an `Fs` is `std::fs` and nothing more: `Fs` and `FsFile` are enums whose only
//! variant outside tests wraps the standard call, so each method compiles to the call it
//! wraps. Tests add a variant backed by `sim::SimDisk`, an in-memory disk that keeps what was
//! synced apart from what was only written, so that `log/power_loss/` can cut the power at
//! any operation and recover the log from what a real disk could then hold.

#[cfg(test)]
pub mod sim;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::Arc;

use super::LogError;

/// Where the log's files live: the operating system's file system, or in tests a simulated
/// disk.
#[derive(Clone, Default)]
pub enum Fs {
    #[default]
    Os,
    #[cfg(test)]
    Sim(Arc<sim::SimDisk>),
}

/// An open file of an [`Fs`].
pub enum FsFile {
    Os(File),
    #[cfg(test)]
    Sim(sim::SimFile),
}

impl Fs {
    /// Creates `path` and any missing parents. The new entries are durable only once their
    /// parent directories are synced.
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Os => std::fs::create_dir_all(path),
            #[cfg(test)]
            Fs::Sim(disk) => disk.create_dir_all(path),
        }
    }

    pub fn exists(&self, path: &Path) -> bool {
        match self {
            Fs::Os => path.exists(),
            #[cfg(test)]
            Fs::Sim(disk) => disk.exists(path),
        }
    }

    /// The paths of the entries of directory `path`, in no particular order.
    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        match self {
            Fs::Os => std::fs::read_dir(path)?
                .map(|entry| entry.map(|e| e.path()))
                .collect(),
            #[cfg(test)]
            Fs::Sim(disk) => disk.read_dir(path),
        }
    }

    /// Creates a file for reading and writing, failing if it exists.
    pub fn create_new(&self, path: &Path) -> io::Result<FsFile> {
        match self {
            Fs::Os => OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .map(FsFile::Os),
            #[cfg(test)]
            Fs::Sim(disk) => disk.create_new(path).map(FsFile::Sim),
        }
    }

    /// Creates a file for writing, or empties it if it exists.
    pub fn create(&self, path: &Path) -> io::Result<FsFile> {
        match self {
            Fs::Os => File::create(path).map(FsFile::Os),
            #[cfg(test)]
            Fs::Sim(disk) => disk.create(path).map(FsFile::Sim),
        }
    }

    /// Opens an existing file for reading and writing.
    pub fn open(&self, path: &Path) -> io::Result<FsFile> {
        match self {
            Fs::Os => OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map(FsFile::Os),
            #[cfg(test)]
            Fs::Sim(disk) => disk.open(path).map(FsFile::Sim),
        }
    }

    /// Opens a file for writing, creating it if it is missing and keeping its contents.
    pub fn open_or_create(&self, path: &Path) -> io::Result<FsFile> {
        match self {
            Fs::Os => File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map(FsFile::Os),
            #[cfg(test)]
            Fs::Sim(disk) => disk.open_or_create(path).map(FsFile::Sim),
        }
    }

    /// The whole contents of a file.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match self {
            Fs::Os => std::fs::read(path),
            #[cfg(test)]
            Fs::Sim(disk) => disk.read(path),
        }
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self {
            Fs::Os => std::fs::rename(from, to),
            #[cfg(test)]
            Fs::Sim(disk) => disk.rename(from, to),
        }
    }

    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Os => std::fs::remove_file(path),
            #[cfg(test)]
            Fs::Sim(disk) => disk.remove_file(path),
        }
    }

    pub fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Os => std::fs::remove_dir_all(path),
            #[cfg(test)]
            Fs::Sim(disk) => disk.remove_dir_all(path),
        }
    }

    /// Makes the entries of directory `dir` durable: files created, renamed or removed in it.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Fs::Os => File::open(dir)?.sync_all(),
            #[cfg(test)]
            Fs::Sim(disk) => disk.sync_dir(dir),
        }
    }

    /// Makes everything written to the file system holding `dir` durable, by anyone, file
    /// contents and directory entries alike (`syncfs`).
    pub fn sync_file_system(&self, dir: &Path) -> io::Result<()> {
        match self {
            Fs::Os => {
                use std::os::fd::AsRawFd;
                let dir = File::open(dir)?;
                // SAFETY: `dir` is an open descriptor for the duration of the call.
                match unsafe { libc::syncfs(dir.as_raw_fd()) } {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                }
            }
            #[cfg(test)]
            Fs::Sim(disk) => disk.sync_file_system(),
        }
    }

    /// Writes a small file so that a crash leaves either the old or the new content: to
    /// `<name>.tmp`, fsynced, renamed over `path`, and the directory fsynced.
    pub fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), LogError> {
        let tmp = path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let file = self.create(&tmp)?;
            file.write_all_at(bytes, 0)?;
            file.sync_all()?;
            self.rename(&tmp, path)?;
            self.sync_dir(path.parent().unwrap_or(Path::new(".")))
        };
        write().map_err(|e| LogError::io(path, e))
    }
}

impl FsFile {
    /// The file's length in bytes.
    pub fn size(&self) -> io::Result<u64> {
        match self {
            FsFile::Os(file) => Ok(file.metadata()?.len()),
            #[cfg(test)]
            FsFile::Sim(file) => Ok(file.size()),
        }
    }

    /// Reads from `position` into `buffer`; fewer bytes (0 at the end) than asked are no error.
    pub fn read_at(&self, buffer: &mut [u8], position: u64) -> io::Result<usize> {
        match self {
            FsFile::Os(file) => file.read_at(buffer, position),
            #[cfg(test)]
            FsFile::Sim(file) => Ok(file.read_at(buffer, position)),
        }
    }

    pub fn write_all_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        match self {
            FsFile::Os(file) => file.write_all_at(bytes, position),
            #[cfg(test)]
            FsFile::Sim(file) => file.write_all_at(bytes, position),
        }
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        match self {
            FsFile::Os(file) => file.set_len(len),
            #[cfg(test)]
            FsFile::Sim(file) => file.set_len(len),
        }
    }

    /// Makes the file's contents durable (`fdatasync`).
    pub fn sync_data(&self) -> io::Result<()> {
        match self {
            FsFile::Os(file) => file.sync_data(),
            #[cfg(test)]
            FsFile::Sim(file) => file.sync(),
        }
    }

    /// Makes the file's contents and metadata durable (`fsync`).
    pub fn sync_all(&self) -> io::Result<()> {
        match self {
            FsFile::Os(file) => file.sync_all(),
            #[cfg(test)]
            FsFile::Sim(file) => file.sync(),
        }
    }

    /// Takes an exclusive advisory lock, held until the file is closed; false if another
    /// holds it. A simulated disk has one process: its locks are always free.
    pub fn try_lock(&self) -> bool {
        match self {
            FsFile::Os(file) => file.try_lock().is_ok(),
            #[cfg(test)]
            FsFile::Sim(_) => true,
        }
    }
}
