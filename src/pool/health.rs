//! Whether a pool's files are still where openers find them, and the keepalive.

use super::*;

/// Removes the System V segment a boot record names (`key << 32 | id`), if that id
/// still belongs to that key (never another pool's segment).
pub(crate) fn remove_sysv(arg: u64) {
    let (key, id) = ((arg >> 32) as u32 as i32, arg as u32 as i32);
    if matches!(sys::sysv::stat(id), Ok(st) if st.key == key) {
        let _ = sys::sysv::remove(id);
    }
}

/// Every `every`, while the pool handle lives: refreshes the access and change times
/// of the pool's files (for cleaners that go by age), and notes in the handle when
/// they were unlinked or replaced (`Pool::health` says it at any time; the keepalive
/// prints one warning to stderr when it first sees it).
pub(super) fn start_keepalive(inner: &Arc<Inner>, every: Duration) {
    let weak = Arc::downgrade(inner);
    let every = every.max(Duration::from_millis(10));
    let _ = std::thread::Builder::new()
        .name("shmval-keepalive".into())
        .spawn(move || {
            let mut warned = false;
            loop {
                std::thread::sleep(every);
                let Some(inner) = weak.upgrade() else { return };
                let pool = Pool { inner };
                let h = pool.health();
                if h.is_ok() {
                    let dir = &pool.inner.seg.dir;
                    for n in [pool.inner.name.clone(), boot_name(&pool.inner.name)] {
                        sys::touch(dir, &n);
                    }
                } else if !warned {
                    warned = true;
                    eprintln!(
                        "shmval: pool {:?} in {}: its files were removed or replaced under \
                         this process ({h:?}); it goes on working here, but no new process \
                         can open it (a cleaner? systemd's RemoveIPC=yes at logout?)",
                        pool.inner.name,
                        pool.inner.seg.dir.display()
                    );
                }
            }
        });
}

impl Inner {
    /// Where the main segment stands (see [`Pool::health`]).
    pub(super) fn main_state(&self) -> FileState {
        match &self.seg.main_kind {
            MainKind::File(id) => match sys::path_id(&self.seg.dir, &self.name) {
                None => FileState::Unlinked,
                Some(x) if x == *id => FileState::Linked,
                Some(_) => FileState::Replaced,
            },
            MainKind::SysV { key, id } => match sys::sysv::get(*key) {
                Ok(x) if x == *id => match sys::sysv::stat(*id) {
                    Ok(st) if st.removed => FileState::Unlinked,
                    _ => FileState::Linked,
                },
                Ok(_) => FileState::Replaced,
                Err(_) => FileState::Unlinked,
            },
            // Anonymous: nothing can unlink it.
            MainKind::Memfd(_) => FileState::Linked,
        }
    }
}

impl Pool {
    /// Whether the pool's two files are still at their names (a cleaner — OpenBSD's
    /// daily(8), systemd's `RemoveIPC=yes` at logout, a stray `rm` — may unlink
    /// them under running processes, which go on working in their mappings while
    /// no new process can open the pool, and a restart would make a new, empty one).
    /// Two `lstat` calls: cheap enough to call every second (see
    /// [`PoolOptions::keepalive`], which does, and refreshes the files' times too).
    pub fn health(&self) -> Health {
        let dir = &self.inner.seg.dir;
        let boot = if matches!(self.inner.seg.main_kind, MainKind::Memfd(_)) {
            FileState::Linked
        } else {
            match sys::path_id(dir, &boot_name(&self.inner.name)) {
                None => FileState::Unlinked,
                Some(x) if x == self.inner.seg.boot_id => FileState::Linked,
                Some(_) => FileState::Replaced,
            }
        };
        Health {
            main: self.inner.main_state(),
            boot,
        }
    }
}

/// Where one of the pool's files stands ([`Pool::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FileState {
    /// At its name, the file this handle mapped.
    Linked,
    /// Gone from the directory (the mapping still works; new opens fail).
    Unlinked,
    /// Its name now leads to another file (a new pool made under the name).
    Replaced,
}

/// Whether the pool's files are still where openers find them ([`Pool::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// The main segment.
    pub main: FileState,
    /// The boot segment.
    pub boot: FileState,
}

impl Health {
    /// Both files are at their names.
    pub fn is_ok(&self) -> bool {
        self.main == FileState::Linked && self.boot == FileState::Linked
    }
}
