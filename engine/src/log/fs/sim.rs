//! A simulated disk for the log's power-loss tests: files and directories in memory, each
//! keeping what a completed fsync made durable apart from what was only written since.
//!
//! Every operation that changes the disk is counted, and the power can be cut at any one of
//! them: that operation and every later one fail. [`SimDisk::after_power_loss`] then makes
//! the disk a real one could hold after the cut: everything synced, plus a random choice of
//! the later changes. An unsynced write is kept whole, lost, torn (each [`SECTOR_BYTES`]
//! sector of it there or not, so a prefix, a suffix or a mix of new and old sectors), or
//! left as zeros (the file grew, the data never arrived); a length change is kept or lost;
//! a directory entry created, renamed or removed since its directory's last fsync is each
//! there or not, independently, in the order they were made. A directory that is not
//! there takes everything below it along, synced or not. [`SimDisk::after_process_crash`]
//! is `kill -9` instead: the page cache, and with it every write, synced or not, survives.

use parking_lot::{Condvar, Mutex};
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread::ThreadId;

/// A torn write keeps or loses whole sectors of this size, aligned in the file.
pub const SECTOR_BYTES: u64 = 512;

/// A kind of operation that changes the disk, to tell where the power went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    MakeDir,
    Create,
    Write,
    SetLen,
    SyncFile,
    SyncDir,
    SyncFileSystem,
    Rename,
    Remove,
    /// A durable write elsewhere (the test's stand-in for the archive).
    External,
}

/// Where the power went out: at an operation, or (`kind` None) after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub operation: u64,
    pub kind: Option<OpKind>,
    /// What the test said it was doing then.
    pub phase: &'static str,
}

type Ino = usize;
const ROOT: Ino = 0;

#[derive(Clone)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Clone, Default)]
struct FileNode {
    /// What a reader sees: every write so far.
    current: Vec<u8>,
    /// What the last completed fsync made durable.
    synced: Vec<u8>,
    /// Changes since that fsync, in order.
    unsynced: Vec<FileOp>,
}

#[derive(Clone)]
enum FileOp {
    Write { at: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Default)]
struct DirNode {
    current: BTreeMap<OsString, Ino>,
    synced: BTreeMap<OsString, Ino>,
    unsynced: Vec<DirOp>,
}

#[derive(Clone)]
enum DirOp {
    Link(OsString, Ino),
    Unlink(OsString),
    Rename(OsString, OsString),
}

struct State {
    nodes: Vec<Node>,
    /// The phase and kind of every operation so far, in order.
    history: Vec<(&'static str, OpKind)>,
    cut_at: Option<u64>,
    cut: Option<Cut>,
    phase: &'static str,
    /// File syncs of threads other than this one wait (see [`SimDisk::hold_syncs`]).
    syncs_held_for: Option<ThreadId>,
    /// File syncs waiting for the hold to end.
    syncs_waiting: usize,
}

pub struct SimDisk {
    state: Mutex<State>,
    /// Signalled when a held sync starts waiting and when the hold ends.
    syncs: Condvar,
}

/// An open file of a [`SimDisk`]; it keeps working after its name is removed, like a file
/// descriptor.
pub struct SimFile {
    disk: Arc<SimDisk>,
    ino: Ino,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

/// The names along an absolute path.
fn names(path: &Path) -> impl Iterator<Item = io::Result<&OsStr>> {
    path.components()
        .filter_map(move |component| match component {
            Component::RootDir | Component::CurDir => None,
            Component::Normal(name) => Some(Ok(name)),
            _ => Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a plain absolute path", path.display()),
            ))),
        })
}

fn write_at(image: &mut Vec<u8>, at: u64, data: &[u8]) {
    let (at, end) = (at as usize, at as usize + data.len());
    if image.len() < end {
        image.resize(end, 0);
    }
    image[at..end].copy_from_slice(data);
}

impl FileNode {
    /// A file whose contents `image` are all synced.
    fn holding(image: Vec<u8>) -> Self {
        FileNode {
            current: image.clone(),
            synced: image,
            unsynced: Vec::new(),
        }
    }

    fn apply(&mut self, op: FileOp) {
        match &op {
            FileOp::Write { at, data } => write_at(&mut self.current, *at, data),
            FileOp::SetLen(len) => self.current.resize(*len as usize, 0),
        }
        self.unsynced.push(op);
    }

    fn sync(&mut self) {
        self.synced.clone_from(&self.current);
        self.unsynced.clear();
    }

    /// What the disk may hold of this file after a power cut.
    fn after_power_loss(&self, rng: &mut StdRng) -> Vec<u8> {
        let mut image = self.synced.clone();
        for op in &self.unsynced {
            match op {
                FileOp::SetLen(len) => {
                    if rng.random_bool(0.5) {
                        image.resize(*len as usize, 0);
                    }
                }
                FileOp::Write { at, data } => match rng.random_range(0..4) {
                    0 => {}
                    1 => write_at(&mut image, *at, data),
                    2 => {
                        let end = at + data.len() as u64;
                        let mut start = *at;
                        while start < end {
                            let sector_end = ((start / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
                            if rng.random_bool(0.5) {
                                let part = (start - at) as usize..(sector_end - at) as usize;
                                write_at(&mut image, start, &data[part]);
                            }
                            start = sector_end;
                        }
                    }
                    _ => {
                        let end = *at as usize + data.len();
                        if image.len() < end {
                            image.resize(end, 0);
                        }
                    }
                },
            }
        }
        image
    }
}

impl DirNode {
    /// A directory whose `entries` are all synced.
    fn holding(entries: BTreeMap<OsString, Ino>) -> Self {
        DirNode {
            current: entries.clone(),
            synced: entries,
            unsynced: Vec::new(),
        }
    }

    fn apply(&mut self, op: DirOp) {
        Self::replay(&mut self.current, &op);
        self.unsynced.push(op);
    }

    /// Applies `op` to `entries` if it still can (what it names may be gone).
    fn replay(entries: &mut BTreeMap<OsString, Ino>, op: &DirOp) {
        match op {
            DirOp::Link(name, ino) => {
                entries.insert(name.clone(), *ino);
            }
            DirOp::Unlink(name) => {
                entries.remove(name);
            }
            DirOp::Rename(from, to) => {
                if let Some(ino) = entries.remove(from) {
                    entries.insert(to.clone(), ino);
                }
            }
        }
    }

    fn sync(&mut self) {
        self.synced.clone_from(&self.current);
        self.unsynced.clear();
    }

    /// The entries the disk may hold after a power cut: each unsynced change there or not.
    fn after_power_loss(&self, rng: &mut StdRng) -> BTreeMap<OsString, Ino> {
        let mut entries = self.synced.clone();
        for op in &self.unsynced {
            if rng.random_bool(0.5) {
                Self::replay(&mut entries, op);
            }
        }
        entries
    }
}

impl State {
    /// Counts an operation that changes the disk; fails it, and every later one, once the
    /// power is out.
    fn operation(&mut self, kind: OpKind) -> io::Result<()> {
        if self.cut.is_none() {
            self.history.push((self.phase, kind));
            if self.cut_at == Some(self.operations()) {
                self.cut = Some(Cut {
                    operation: self.operations(),
                    kind: Some(kind),
                    phase: self.phase,
                });
            }
        }
        match self.cut {
            Some(_) => Err(power_lost()),
            None => Ok(()),
        }
    }

    fn cut_now(&mut self) {
        if self.cut.is_none() {
            self.cut = Some(Cut {
                operation: self.operations(),
                kind: None,
                phase: self.phase,
            });
        }
    }

    fn operations(&self) -> u64 {
        self.history.len() as u64
    }

    fn dir(&self, ino: Ino) -> io::Result<&DirNode> {
        match &self.nodes[ino] {
            Node::Dir(dir) => Ok(dir),
            Node::File(_) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> &mut DirNode {
        match &mut self.nodes[ino] {
            Node::Dir(dir) => dir,
            Node::File(_) => unreachable!("checked by the caller"),
        }
    }

    fn file(&self, ino: Ino) -> &FileNode {
        match &self.nodes[ino] {
            Node::File(file) => file,
            Node::Dir(_) => unreachable!("a SimFile names a file"),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> &mut FileNode {
        match &mut self.nodes[ino] {
            Node::File(file) => file,
            Node::Dir(_) => unreachable!("a SimFile names a file"),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let mut ino = ROOT;
        for name in names(path) {
            ino = *self
                .dir(ino)?
                .current
                .get(name?)
                .ok_or_else(|| not_found(path))?;
        }
        Ok(ino)
    }

    /// The directory holding `path` and the name of `path` in it.
    fn parent(&self, path: &Path) -> io::Result<(Ino, OsString)> {
        let name = path.file_name().ok_or_else(|| not_found(path))?;
        let dir = self.lookup(path.parent().ok_or_else(|| not_found(path))?)?;
        self.dir(dir)?;
        Ok((dir, name.to_owned()))
    }

    fn add(&mut self, dir: Ino, name: OsString, node: Node) -> Ino {
        self.nodes.push(node);
        let ino = self.nodes.len() - 1;
        self.dir_mut(dir).apply(DirOp::Link(name, ino));
        ino
    }

    fn create_file(&mut self, path: &Path) -> io::Result<Ino> {
        let (dir, name) = self.parent(path)?;
        if self.dir(dir)?.current.contains_key(&name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                path.display().to_string(),
            ));
        }
        self.operation(OpKind::Create)?;
        Ok(self.add(dir, name, Node::File(FileNode::default())))
    }

    fn open_file(&self, path: &Path) -> io::Result<Ino> {
        let ino = self.lookup(path)?;
        match self.nodes[ino] {
            Node::File(_) => Ok(ino),
            Node::Dir(_) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                path.display().to_string(),
            )),
        }
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        let ino = *self
            .dir(dir)?
            .current
            .get(&name)
            .ok_or_else(|| not_found(path))?;
        if let Node::Dir(children) = &self.nodes[ino] {
            let children: Vec<OsString> = children.current.keys().cloned().collect();
            for child in children {
                self.remove(&path.join(child))?;
            }
        }
        self.operation(OpKind::Remove)?;
        self.dir_mut(dir).apply(DirOp::Unlink(name));
        Ok(())
    }
}

impl SimDisk {
    /// A disk holding the directories `dirs` (and their parents), durably.
    pub fn new(dirs: &[&Path]) -> Arc<SimDisk> {
        let disk = SimDisk::from_nodes(vec![Node::Dir(DirNode::default())]);
        for dir in dirs {
            disk.create_dir_all(dir)
                .expect("a fresh disk takes any path");
        }
        let mut state = disk.state.lock();
        state.history.clear();
        for node in &mut state.nodes {
            match node {
                Node::File(file) => file.sync(),
                Node::Dir(dir) => dir.sync(),
            }
        }
        drop(state);
        disk
    }

    fn from_nodes(nodes: Vec<Node>) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            state: Mutex::new(State {
                nodes,
                history: Vec::new(),
                cut_at: None,
                cut: None,
                phase: "",
                syncs_held_for: None,
                syncs_waiting: 0,
            }),
            syncs: Condvar::new(),
        })
    }

    /// Cuts the power at the `operation`-th operation from now on (counting from 1).
    pub fn cut_power_at(&self, operation: u64) {
        let mut state = self.state.lock();
        state.cut_at = Some(state.operations() + operation);
    }

    /// Cuts the power now, if it is still on.
    pub fn cut_power_now(&self) {
        self.state.lock().cut_now();
    }

    /// Makes file syncs of every other thread (the flusher's) wait until
    /// [`SimDisk::release_syncs`], so that a test can put several appends into one group
    /// commit, the same way every run.
    pub fn hold_syncs(&self) {
        self.state.lock().syncs_held_for = Some(std::thread::current().id());
    }

    /// Waits until a held sync is waiting.
    pub fn wait_for_held_sync(&self) {
        let mut state = self.state.lock();
        while state.syncs_waiting == 0 {
            self.syncs.wait(&mut state);
        }
    }

    pub fn release_syncs(&self) {
        self.state.lock().syncs_held_for = None;
        self.syncs.notify_all();
    }

    /// Names what the test does from now on; a cut reports it.
    pub fn set_phase(&self, phase: &'static str) {
        self.state.lock().phase = phase;
    }

    /// Operations that changed the disk so far.
    pub fn operations(&self) -> u64 {
        self.state.lock().operations()
    }

    /// The phase and kind of each operation so far: the first is operation 1.
    pub fn history(&self) -> Vec<(&'static str, OpKind)> {
        self.state.lock().history.clone()
    }

    /// Where the power went out, if it did.
    pub fn cut(&self) -> Option<Cut> {
        self.state.lock().cut
    }

    /// Counts a durable write outside the log's files; fails once the power is out.
    pub fn external_operation(&self) -> io::Result<()> {
        self.state.lock().operation(OpKind::External)
    }

    /// The disk as it may be found after the power went out (it is cut now if it was still
    /// on): everything synced, and each later change there, torn, or not.
    pub fn after_power_loss(&self, rng: &mut StdRng) -> Arc<SimDisk> {
        self.after_the_cut(|node| match node {
            Node::File(file) => Node::File(FileNode::holding(file.after_power_loss(rng))),
            Node::Dir(dir) => Node::Dir(DirNode::holding(dir.after_power_loss(rng))),
        })
    }

    /// The disk after the harshest power cut (it is cut now if it was still on): what was
    /// synced, nothing else.
    pub fn synced_only(&self) -> Arc<SimDisk> {
        self.after_the_cut(|node| match node {
            Node::File(file) => Node::File(FileNode::holding(file.synced.clone())),
            Node::Dir(dir) => Node::Dir(DirNode::holding(dir.synced.clone())),
        })
    }

    /// A disk of what `survivor` says is left of each node once the power is cut (now, if it
    /// was still on).
    fn after_the_cut(&self, survivor: impl FnMut(&Node) -> Node) -> Arc<SimDisk> {
        let mut state = self.state.lock();
        state.cut_now();
        SimDisk::from_nodes(state.nodes.iter().map(survivor).collect())
    }

    /// The disk as the next process finds it after this one was killed: every write is
    /// there (the kernel still holds it), and what was not synced is still not.
    pub fn after_process_crash(&self) -> Arc<SimDisk> {
        self.cut_power_now();
        self.snapshot()
    }

    /// An exact copy of the disk, synced and unsynced state alike, with the power on.
    pub fn snapshot(&self) -> Arc<SimDisk> {
        SimDisk::from_nodes(self.state.lock().nodes.clone())
    }

    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let mut dir = ROOT;
        for name in names(path) {
            let name = name?;
            dir = match state.dir(dir)?.current.get(name) {
                Some(&ino) => {
                    state.dir(ino)?;
                    ino
                }
                None => {
                    state.operation(OpKind::MakeDir)?;
                    state.add(dir, name.to_owned(), Node::Dir(DirNode::default()))
                }
            };
        }
        Ok(())
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.state.lock().lookup(path).is_ok()
    }

    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.state.lock();
        let dir = state.dir(state.lookup(path)?)?;
        Ok(dir.current.keys().map(|name| path.join(name)).collect())
    }

    pub fn create_new(self: &Arc<Self>, path: &Path) -> io::Result<SimFile> {
        let ino = self.state.lock().create_file(path)?;
        Ok(self.handle(ino))
    }

    /// Creates a file, or empties the one there.
    pub fn create(self: &Arc<Self>, path: &Path) -> io::Result<SimFile> {
        let mut state = self.state.lock();
        let ino = match state.open_file(path) {
            Ok(ino) => {
                state.operation(OpKind::SetLen)?;
                state.file_mut(ino).apply(FileOp::SetLen(0));
                ino
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => state.create_file(path)?,
            Err(e) => return Err(e),
        };
        drop(state);
        Ok(self.handle(ino))
    }

    pub fn open(self: &Arc<Self>, path: &Path) -> io::Result<SimFile> {
        let ino = self.state.lock().open_file(path)?;
        Ok(self.handle(ino))
    }

    pub fn open_or_create(self: &Arc<Self>, path: &Path) -> io::Result<SimFile> {
        let mut state = self.state.lock();
        let ino = match state.open_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => state.create_file(path)?,
            opened => opened?,
        };
        drop(state);
        Ok(self.handle(ino))
    }

    fn handle(self: &Arc<Self>, ino: Ino) -> SimFile {
        SimFile {
            disk: self.clone(),
            ino,
        }
    }

    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state.lock();
        let ino = state.open_file(path)?;
        Ok(state.file(ino).current.clone())
    }

    /// Renames within one directory (atomically, as the log relies on) or across two.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let (from_dir, from_name) = state.parent(from)?;
        let (to_dir, to_name) = state.parent(to)?;
        let ino = *state
            .dir(from_dir)?
            .current
            .get(&from_name)
            .ok_or_else(|| not_found(from))?;
        state.operation(OpKind::Rename)?;
        if from_dir == to_dir {
            state
                .dir_mut(from_dir)
                .apply(DirOp::Rename(from_name, to_name));
        } else {
            state.dir_mut(from_dir).apply(DirOp::Unlink(from_name));
            state.dir_mut(to_dir).apply(DirOp::Link(to_name, ino));
        }
        Ok(())
    }

    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.open_file(path)?;
        state.remove(path)
    }

    pub fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.dir(state.lookup(path)?)?;
        state.remove(path)
    }

    pub fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let ino = state.lookup(path)?;
        state.dir(ino)?;
        state.operation(OpKind::SyncDir)?;
        state.dir_mut(ino).sync();
        Ok(())
    }

    pub fn sync_file_system(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.operation(OpKind::SyncFileSystem)?;
        for node in &mut state.nodes {
            match node {
                Node::File(file) => file.sync(),
                Node::Dir(dir) => dir.sync(),
            }
        }
        Ok(())
    }
}

impl SimFile {
    pub fn size(&self) -> u64 {
        self.disk.state.lock().file(self.ino).current.len() as u64
    }

    pub fn read_at(&self, buffer: &mut [u8], position: u64) -> usize {
        let state = self.disk.state.lock();
        let current = &state.file(self.ino).current;
        let start = (position as usize).min(current.len());
        let read = buffer.len().min(current.len() - start);
        buffer[..read].copy_from_slice(&current[start..start + read]);
        read
    }

    pub fn write_all_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        let mut state = self.disk.state.lock();
        state.operation(OpKind::Write)?;
        state.file_mut(self.ino).apply(FileOp::Write {
            at: position,
            data: bytes.to_vec(),
        });
        Ok(())
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.disk.state.lock();
        state.operation(OpKind::SetLen)?;
        state.file_mut(self.ino).apply(FileOp::SetLen(len));
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        let mut state = self.disk.state.lock();
        let me = std::thread::current().id();
        while state.syncs_held_for.is_some_and(|holder| holder != me) {
            state.syncs_waiting += 1;
            self.disk.syncs.notify_all();
            self.disk.syncs.wait(&mut state);
            state.syncs_waiting -= 1;
        }
        state.operation(OpKind::SyncFile)?;
        state.file_mut(self.ino).sync();
        Ok(())
    }
}
