//! `PoolOptions`: how to create or open a pool (used by `pool` and by the
//! create/open handshake in `segment`, which therefore need not know `Pool`).

use crate::sys;
use std::time::Duration;

/// How to create or open a pool.
///
/// # Examples
/// ```
/// use shmval::PoolOptions;
/// use std::time::Duration;
/// let o = PoolOptions::new().mode(0o640).timeout(Duration::from_secs(2)).remove_on_drop(true);
/// assert_eq!(o.get_mode(), 0o640);
/// ```
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub(crate) dir: Option<std::path::PathBuf>,
    pub(crate) mode: u32,
    pub(crate) fixed_base: Option<usize>,
    pub(crate) allow_foreign_owner: bool,
    pub(crate) remove_on_drop: bool,
    pub(crate) timeout: Duration,
    pub(crate) recover_on_open: bool,
    pub(crate) recreate_unfit: bool,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) backend: Backend,
    pub(crate) max_size: Option<u64>,
}

/// Where a pool's memory lives (its boot segment, small, always a file but for
/// `Memfd`: it carries the attach table and its liveness locks).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// POSIX shared memory: two files in `/dev/shm` (or `PoolOptions::dir`,
    /// `$SHMVAL_DIR`), what `shm_open` makes. The default.
    #[default]
    Posix,
    /// Two files in a chosen directory: a disk (the pool persists in the file), a
    /// hugetlbfs mount, another tmpfs. `PoolOptions::dir` is set to it.
    File(std::path::PathBuf),
    /// System V shared memory (`shmget`) for the main segment, under a key derived
    /// from the directory and name (visible to `ipcs`, removed with `ipcrm` or
    /// `shmval destroy`); the boot segment is a file in the directory.
    SysV,
    /// Anonymous memory files (`memfd_create`): no name in any directory (no
    /// cleaner can remove it), shared by passing the descriptors over a Unix socket
    /// (`Pool::send_to`, `Pool::receive`), sealed against shrinking so no process
    /// can truncate it under the others. Gone when the last process lets go.
    Memfd,
}

impl Backend {
    /// The backend's name as the `shmval` tool spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Posix => "posix",
            Backend::File(_) => "file",
            Backend::SysV => "sysv",
            Backend::Memfd => "memfd",
        }
    }
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            dir: None,
            mode: 0o600,
            fixed_base: None,
            allow_foreign_owner: false,
            remove_on_drop: false,
            timeout: Duration::ZERO,
            recover_on_open: true,
            recreate_unfit: false,
            keepalive: None,
            backend: Backend::Posix,
            max_size: None,
        }
    }
}

impl PoolOptions {
    /// Mode 0600, mapped anywhere, own segments only, kept on drop, no waiting.
    pub fn new() -> Self {
        Self::default()
    }
    /// The directory of the pool's two files: a tmpfs (`/dev/shm` by default, or
    /// `$SHMVAL_DIR` when set), another tmpfs (a container's own, a larger one), a
    /// hugetlbfs mount. Every process of a pool must name the same directory.
    pub fn dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }
    /// The directory that will be used: the one given, else `$SHMVAL_DIR`, else
    /// `/dev/shm`.
    pub fn get_dir(&self) -> std::path::PathBuf {
        self.dir.clone().unwrap_or_else(sys::default_dir)
    }
    /// Where the pool's memory lives ([`Backend`]; POSIX shared memory by default).
    /// `open` follows what the pool's boot segment records, whatever is set here.
    pub fn backend(mut self, backend: Backend) -> Self {
        if let Backend::File(d) = &backend {
            self.dir = Some(d.clone());
        }
        self.backend = backend;
        self
    }
    /// The backend that will be used by `create`.
    pub fn get_backend(&self) -> &Backend {
        &self.backend
    }
    /// Permission bits of both segments (applied with `fchmod`, so the umask does not
    /// change them).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }
    /// The mode that will be used.
    pub fn get_mode(&self) -> u32 {
        self.mode
    }
    /// Map the main segment at `addr` in the creator and in every opener
    /// (`MAP_FIXED_NOREPLACE`: a taken range is an error, nothing is overwritten).
    /// Correctness never depends on it; it helps debuggers and C code.
    pub fn fixed_base(mut self, addr: usize) -> Self {
        self.fixed_base = Some(addr);
        self
    }
    /// Open segments owned by another user (refused by default).
    pub fn allow_foreign_owner(mut self, yes: bool) -> Self {
        self.allow_foreign_owner = yes;
        self
    }
    /// Unlink both segments when the last handle of this process is dropped — if
    /// they are still this pool's: a newer pool made under the same name (after a
    /// cleaner or a restart replaced ours) is never removed.
    pub fn remove_on_drop(mut self, yes: bool) -> Self {
        self.remove_on_drop = yes;
        self
    }
    /// How long `open` waits for the pool to appear and become ready.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// After processes died attached, let an opener that finds the pool to itself
    /// free what the deaths left outside their reference ledgers (on by default;
    /// see `docs/PROTOCOLS.md`, "Recovery alone"). It walks every value once (the
    /// cost of `Pool::check`), and openers arriving meanwhile wait for it within
    /// their timeout. Off, the leftovers stay until `Pool::repair`.
    pub fn recover_on_open(mut self, yes: bool) -> Self {
        self.recover_on_open = yes;
        self
    }
    /// While the handle lives, every `every` (a second, say): refresh the access and
    /// modification times of the pool's files, for cleaners that remove files by age
    /// (tmpwatch, OpenBSD's daily(8) on `/tmp`), and warn once on stderr if they
    /// were removed or replaced under the pool ([`Pool::health`](crate::Pool::health)).
    /// One thread per handle that asks. Off by default.
    pub fn keepalive(mut self, every: Duration) -> Self {
        self.keepalive = Some(every);
        self
    }
    /// Let the pool grow as it fills, from the size given to `create` up to `max`
    /// bytes, while other processes are attached and working: every process
    /// reserves `max` bytes of address space for it (offsets and the base never
    /// change) and maps the part grown by another when it first meets an offset
    /// there. Growth extends the file with its storage (a full file system is
    /// [`AllocError::GrowFailed`](shmval_alloc::AllocError::GrowFailed), never a
    /// SIGBUS) by half the pool's size at least. Not with [`Backend::SysV`] (a
    /// System V segment has a fixed size): `create` says
    /// [`CreateError::GrowthUnsupported`](crate::CreateError::GrowthUnsupported).
    ///
    /// ```
    /// use shmval::{Pool, PoolOptions};
    /// # let name = format!("doc-grow-{}", std::process::id());
    /// let opts = PoolOptions::new().max_size(64 << 20).remove_on_drop(true);
    /// let pool = Pool::create_with(&name, 1 << 20, &opts)?;
    /// let big = pool.share(&shmval::Val::from(vec![0.5f64; 1 << 20]))?; // 8 MiB
    /// assert!(pool.size() > 8 << 20 && pool.max_size() == 64 << 20);
    /// # drop(big);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_size(mut self, max: u64) -> Self {
        self.max_size = Some(max);
        self
    }
    /// `Pool::open_or_create` (and the pipes' and broadcasts') replaces an existing
    /// pool it cannot reattach to — another layout version, corrupt, never
    /// finished, damaged by a crash — when no live process is attached to it. Off
    /// by default (the error is returned): the wipe loses the pool's values.
    pub fn recreate_unfit(mut self, yes: bool) -> Self {
        self.recreate_unfit = yes;
        self
    }
}
