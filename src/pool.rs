//! The `Pool` handle: a named pool of shared memory with its allocator.

use crate::error::{
    AllocError, CreateError, DestroyError, FreeError, OpenError, OpenOrCreateError,
};
use crate::liveness;
use crate::name::{boot_name, validate_name};
use crate::platform::{process_token, LinuxPlatform};
use crate::segment::boot::{self, state, BootHeader};
use crate::segment::open::{self, header, MainKind, Segments};
use crate::sys;
use crate::PoolOptions;
use shmval_alloc::{Heap, Offset, Stats};
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

mod health;
mod memfd;
mod restart;
mod slots;

pub(crate) use health::remove_sysv;
pub use health::{FileState, Health};
pub use restart::Recovery;

/// Why a process could not attach to a pool.
enum Attach {
    /// Every entry of the attach table belongs to a live process.
    Full,
    /// `fcntl` failed.
    Os(nix::errno::Errno),
}

/// Ids telling pools apart in this process (for the thread-local caches).
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

struct Inner {
    name: String,
    id: u64,
    seg: Segments,
    /// Set once the handle is attached: a handle that failed to attach removes
    /// nothing when it drops.
    remove_on_drop: std::sync::atomic::AtomicBool,
    /// Cache slots claimed by this process's threads, with the fork generation that
    /// claimed them (released when the pool drops; a forked child's copy of the list
    /// names its parent's slots, which it must not release).
    slots: Mutex<Vec<(u32, u32)>>,
    /// This process's view of its reference ledger in the pool.
    ledger: crate::ledger::Ledger,
    /// What this handle's open did alone on the pool after deaths, if it did.
    recovery: std::sync::OnceLock<Recovery>,
    /// This handle marked the pool as holding blocks of the user's own.
    user_blocks: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn boot(&self) -> &BootHeader {
        header(&self.seg.boot)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let slots = std::mem::take(&mut *self.slots.lock().unwrap_or_else(|e| e.into_inner()));
        let gen = crate::platform::fork_generation();
        for (s, g) in slots {
            if g == gen {
                // SAFETY: every handle is gone, so no thread of this process can be
                // using the slot (using it needs a handle).
                unsafe { self.seg.heap.release_slot(s) };
            }
        }
        // Detach: the entry and its liveness lock go (before the mappings do).
        liveness::unregister(self.id);
        if self.remove_on_drop.load(Relaxed) {
            self.remove_own();
        }
    }
}

impl Inner {
    /// Unlinks the pool's files if the names still lead to the files this handle
    /// mapped (its incarnation); a newer pool made under the same name after ours
    /// was removed or replaced (a cleaner, a restart) is left alone. Returns whether
    /// anything of ours was still there.
    fn remove_own(&self) -> bool {
        let dir = &self.seg.dir;
        let bname = boot_name(&self.name);
        let boot_ours = sys::path_id(dir, &bname) == Some(self.seg.boot_id);
        let main_ours = self.main_state() == FileState::Linked;
        if boot_ours {
            self.boot().state.store(state::CLOSING, Release);
        }
        // Main first: an opener that finds the boot segment but no main one says
        // "missing", while one that found neither just waits.
        if main_ours {
            match &self.seg.main_kind {
                MainKind::File(_) => {
                    let _ = sys::seg_unlink(dir, &self.name);
                }
                MainKind::SysV { id, .. } => {
                    let _ = sys::sysv::remove(*id);
                }
                MainKind::Memfd(_) => {}
            }
        }
        if boot_ours {
            let _ = sys::seg_unlink(dir, &bname);
        }
        boot_ours || main_ours
    }
}

/// A process's handle on a named shared-memory pool.
///
/// Cheap to clone (reference counted); the segments stay mapped while any clone,
/// or any value handed out from the pool, is alive.
///
/// # Examples
/// ```
/// use shmval::{Pool, PoolOptions};
/// use std::alloc::Layout;
/// let name = format!("doc-pool-{}", std::process::id());
/// let pool = Pool::create_with(&name, 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
/// let l = Layout::new::<u64>();
/// let off = pool.alloc(l)?;
/// assert!(pool.stats().in_use >= 8);
/// // SAFETY: `off` was allocated above with `l` and is freed once.
/// unsafe { pool.free(off, l)? };
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Drop for Pool {
    /// Every value handle holds a clone, so this runs at each handle's drop: one
    /// load and compare inline, the rest out of line.
    #[inline]
    fn drop(&mut self) {
        // The last handle of this open: no value, pipe or other handle of it is
        // left (each holds a clone; weak references, which the keepalive thread and
        // the thread caches keep, make none).
        if Arc::strong_count(&self.inner) == 1 {
            self.last_dropped();
        }
    }
}

impl Pool {
    #[cold]
    #[inline(never)]
    fn last_dropped(&self) {
        self.ledger_close();
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.name)
            .field("size", &self.size())
            .field("base", &self.base())
            .finish()
    }
}

impl Pool {
    /// Creates a pool of `size` bytes with default options (mode 0600).
    ///
    /// # Errors
    /// See [`CreateError`]: an invalid name or size, an existing pool, a full
    /// `/dev/shm` (`NoSpace`, reported now rather than as a SIGBUS later).
    pub fn create(name: &str, size: u64) -> Result<Pool, CreateError> {
        Self::create_with(name, size, &PoolOptions::default())
    }

    /// Creates a pool with options.
    ///
    /// # Errors
    /// As [`Pool::create`], plus `AddressInUse` for a taken fixed base.
    pub fn create_with(name: &str, size: u64, opts: &PoolOptions) -> Result<Pool, CreateError> {
        let seg = open::create(name, size, opts)?;
        Self::from_segments(name, seg, opts).map_err(|e| match e {
            Attach::Full => CreateError::Os {
                op: "attach",
                source: nix::errno::Errno::EUSERS.into(),
            },
            Attach::Os(errno) => CreateError::Os {
                op: "fcntl",
                source: errno.into(),
            },
        })
    }

    /// Opens an existing pool, waiting up to `timeout` for it to appear and become
    /// ready (a zero timeout does not wait).
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn open(name: &str, timeout: Duration) -> Result<Pool, OpenError> {
        Self::open_with(name, &PoolOptions::default().timeout(timeout))
    }

    /// Opens an existing pool with options (the wait is `opts.timeout`).
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn open_with(name: &str, opts: &PoolOptions) -> Result<Pool, OpenError> {
        let seg = open::open(name, opts)?;
        Self::from_segments(name, seg, opts).map_err(|e| match e {
            Attach::Full => OpenError::TooManyProcesses {
                name: name.to_owned(),
                max: boot::ATTACH_SLOTS,
            },
            Attach::Os(nix::errno::Errno::EBUSY) => OpenError::Repairing {
                name: name.to_owned(),
            },
            Attach::Os(errno) => OpenError::Os {
                op: "fcntl",
                source: errno.into(),
            },
        })
    }

    /// Removes both files of the pool `name` (in `$SHMVAL_DIR` or `/dev/shm`),
    /// whichever incarnation they are: the operator's removal by name. Processes
    /// that have it open keep their mappings until they drop them; new opens no
    /// longer find it. A process removing *its own* pool should use
    /// [`Pool::remove`], which leaves a newer pool of the same name alone.
    ///
    /// # Errors
    /// `NotFound` when neither segment exists.
    pub fn destroy(name: &str) -> Result<(), DestroyError> {
        Self::destroy_with(name, &PoolOptions::default())
    }

    /// [`Pool::destroy`] in the directory of `opts`.
    ///
    /// # Errors
    /// As [`Pool::destroy`].
    pub fn destroy_with(name: &str, opts: &PoolOptions) -> Result<(), DestroyError> {
        validate_name(name)?;
        let dir = opts.get_dir();
        let dir = dir.as_path();
        let bname = boot_name(name);
        if let Ok(fd) = sys::seg_open(dir, &bname) {
            if matches!(sys::file_info(&fd), Ok(i) if i.size == boot::BOOT_SIZE as u64 && i.regular)
            {
                if let Ok(m) = sys::Mapping::new(&fd, boot::BOOT_SIZE, None) {
                    let h = header(&m);
                    if h.magic.load(Relaxed) == boot::BOOT_MAGIC {
                        h.state.store(state::CLOSING, Release);
                        if h.backend.load(Relaxed) == boot::backend::SYSV {
                            remove_sysv(h.backend_arg.load(Relaxed));
                        }
                    }
                }
            }
        }
        let r1 = sys::seg_unlink(dir, name);
        let r2 = sys::seg_unlink(dir, &bname);
        match (r1, r2) {
            (Err(nix::errno::Errno::ENOENT), Err(nix::errno::Errno::ENOENT)) => {
                Err(DestroyError::NotFound {
                    name: name.to_owned(),
                })
            }
            (Err(e), _) | (_, Err(e)) if e != nix::errno::Errno::ENOENT => Err(DestroyError::Os {
                op: "unlink",
                source: e.into(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether a pool named `name` exists (its boot segment does) in `$SHMVAL_DIR`
    /// or `/dev/shm`.
    pub fn exists(name: &str) -> bool {
        validate_name(name).is_ok() && sys::default_dir().join(boot_name(name)).exists()
    }

    /// Removes this pool's files, if the names still lead to this incarnation (see
    /// [`PoolOptions::remove_on_drop`], which does the same when the last handle
    /// goes). Returns whether they did: `false` when they were removed already or
    /// replaced by a newer pool of the same name, which is left alone. Processes
    /// that have the pool open keep using it.
    pub fn remove(&self) -> bool {
        self.inner.remove_own()
    }

    /// The directory of the pool's files.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.seg.dir
    }

    /// Attaches this process (an entry of the attach table and its liveness lock,
    /// unless the creator holds one already), registers the attachment, and reclaims
    /// the cache slots of dead processes.
    fn from_segments(name: &str, mut seg: Segments, opts: &PoolOptions) -> Result<Pool, Attach> {
        let me = process_token();
        let claimed = seg.entry.take();
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            id: NEXT_POOL_ID.fetch_add(1, Relaxed),
            seg,
            remove_on_drop: std::sync::atomic::AtomicBool::new(false),
            slots: Mutex::new(Vec::new()),
            ledger: crate::ledger::Ledger::new(),
            recovery: std::sync::OnceLock::new(),
            user_blocks: std::sync::atomic::AtomicBool::new(false),
        });
        // A recovery alone (below) has the pool to itself for a moment: openers
        // wait for it, up to their timeout.
        let deadline = std::time::Instant::now() + opts.timeout;
        let attached = loop {
            // SAFETY: the boot mapping and descriptor live in `inner`, whose drop
            // unregisters before they are dropped.
            let r = unsafe {
                liveness::attach(
                    inner.id,
                    inner.boot(),
                    &inner.seg.boot_fd,
                    inner.seg.boot_id,
                    me,
                    claimed,
                )
            };
            match r {
                Err(nix::errno::Errno::EBUSY) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                r => break r,
            }
        };
        let shared = match attached {
            Ok(Some((_, shared))) => {
                inner.remove_on_drop.store(opts.remove_on_drop, Relaxed);
                shared
            }
            // Not registered: the drop finds nothing to give up.
            Ok(None) => return Err(Attach::Full),
            Err(errno) => return Err(Attach::Os(errno)),
        };
        let pool = Pool { inner };
        pool.reclaim_dead();
        if !shared && opts.recover_on_open {
            pool.recover_alone();
        }
        liveness::share(pool.inner.id);
        if let Some(every) = opts.keepalive {
            health::start_keepalive(&pool.inner, every);
        }
        Ok(pool)
    }

    pub(crate) fn ledger_cache(&self) -> &crate::ledger::Ledger {
        &self.inner.ledger
    }

    pub(crate) fn pool_id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn boot_header(&self) -> &BootHeader {
        self.inner.boot()
    }

    pub(crate) fn boot_fd(&self) -> &std::os::fd::OwnedFd {
        &self.inner.seg.boot_fd
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Bytes of the main segment now (a pool made with
    /// [`PoolOptions::max_size`] grows as it fills).
    pub fn size(&self) -> u64 {
        self.inner.seg.heap.len()
    }

    /// Most bytes the main segment may grow to: [`PoolOptions::max_size`], or
    /// its size for a pool that does not grow.
    pub fn max_size(&self) -> u64 {
        self.inner.seg.heap.max_len()
    }

    /// Where the main segment is mapped in this process.
    #[inline]
    pub fn base(&self) -> NonNull<u8> {
        self.inner.seg.main.ptr()
    }

    /// Allocator cache slots claimed now (one per thread that allocated from this
    /// pool, in any process; slot 0, the shared one, not counted).
    pub fn slots_in_use(&self) -> u32 {
        self.inner.seg.heap.slots_in_use()
    }

    /// Gives back what processes that are gone still held: the references their
    /// handles held (replaying their reference ledgers, see `docs/PROTOCOLS.md`),
    /// then the allocator cache slots of dead ones (their cached blocks go back to
    /// the pool). Online: the other processes go on working. Every open does it; a
    /// thread that finds no free slot reclaims slots. Idempotent, and safe when
    /// several processes do it at once (each ledger is replayed by one of them).
    pub fn reclaim_dead(&self) -> crate::Reclaimed {
        let refs = self.ledgers_reclaim();
        crate::Reclaimed {
            slots: self.inner.seg.heap.reclaim_dead(),
            ledgers: refs.ledgers,
            references: refs.references,
            objects: refs.objects,
            untracked: refs.untracked,
            dismantled: refs.dismantled,
        }
    }

    /// Internal (the benchmark and tests reach the allocator through it): the
    /// allocator over the main segment, lent for as long as this handle lives
    /// (it cannot be copied out of the handle and outlive the mapping):
    ///
    /// ```compile_fail
    /// # let name = format!("doc-heap-{}", std::process::id());
    /// let pool = shmval::Pool::create_with(&name, 1 << 20, &shmval::PoolOptions::new().remove_on_drop(true)).unwrap();
    /// let h = *pool.heap(); // error: cannot move out of a shared reference
    /// drop(pool);
    /// let _ = h.stats(); // would read unmapped memory
    /// ```
    #[doc(hidden)]
    pub fn heap(&self) -> &Heap<LinuxPlatform> {
        &self.inner.seg.heap
    }

    /// Allocates a block from the pool through this thread's cache slot: your own
    /// block, next to the values (refer to it from a user word, say). The first one
    /// marks the pool (`USER_BLOCKS` in the boot header, for good): from then on a
    /// recovery alone after deaths no longer frees blocks that hold no value and
    /// belong to none ([`PoolCheck::stray_blocks`](crate::PoolCheck)), which it
    /// cannot tell from yours.
    ///
    /// # Errors
    /// [`AllocError::Exhausted`] when the pool is full; never panics.
    #[inline(always)]
    pub fn alloc(&self, layout: Layout) -> Result<Offset, AllocError> {
        if !self.inner.user_blocks.load(Relaxed) {
            self.note_user_blocks();
        }
        let slot = self.thread_slot();
        // SAFETY: `thread_slot` returns a slot claimed by this thread for this pool,
        // or the shared slot 0.
        unsafe { self.inner.seg.heap.alloc_in(slot, layout) }
    }

    /// Marks the pool as holding blocks of the user's own (before the first one).
    #[cold]
    fn note_user_blocks(&self) {
        self.inner.boot().flags.fetch_or(
            boot::flags::USER_BLOCKS,
            std::sync::atomic::Ordering::SeqCst,
        );
        self.inner.user_blocks.store(true, Relaxed);
    }

    /// Whether a block of the user's own was ever allocated in the pool
    /// ([`Pool::alloc`]).
    pub(crate) fn had_user_blocks(&self) -> bool {
        self.inner
            .boot()
            .flags
            .load(std::sync::atomic::Ordering::SeqCst)
            & boot::flags::USER_BLOCKS
            != 0
    }

    /// Frees a block [`Pool::alloc`] handed out (in any process) back to the pool.
    ///
    /// # Safety
    /// `off` was allocated by [`Pool::alloc`] from this pool with `layout` and is not
    /// used afterwards by anyone.
    ///
    /// # Errors
    /// [`FreeError::Invalid`] when `off` is visibly not such a block.
    #[inline(always)]
    pub unsafe fn free(&self, off: Offset, layout: Layout) -> Result<(), FreeError> {
        let slot = self.thread_slot();
        // SAFETY: slot as in `alloc`; the block contract is forwarded to the caller.
        unsafe { self.inner.seg.heap.free_in(slot, off, layout) }
    }

    /// A block for shmval's own structures (values, ledgers), not counted as the
    /// user's.
    #[inline(always)]
    pub(crate) fn alloc_own(&self, layout: Layout) -> Result<Offset, AllocError> {
        let slot = self.thread_slot();
        // SAFETY: `thread_slot` returns a slot claimed by this thread for this pool,
        // or the shared slot 0.
        unsafe { self.inner.seg.heap.alloc_in(slot, layout) }
    }

    /// Frees a block of shmval's own.
    ///
    /// # Safety
    /// As [`Pool::free`], for a block [`Pool::alloc_own`] handed out.
    #[inline(always)]
    pub(crate) unsafe fn free_own(&self, off: Offset, layout: Layout) -> Result<(), FreeError> {
        let slot = self.thread_slot();
        // SAFETY: slot as in `alloc`; the block contract is forwarded to the caller.
        unsafe { self.inner.seg.heap.free_in(slot, off, layout) }
    }

    /// A pointer to `len` bytes at `off` in this process, if inside the arena.
    #[inline]
    pub fn resolve(&self, off: Offset, len: usize) -> Option<NonNull<u8>> {
        self.inner.seg.heap.resolve(off, len)
    }

    /// Checks the allocator's large-block heap (the blocks tile the arena, slab
    /// headers, the free bins, the counters: [`Heap::verify_large`]) and every value
    /// reachable from the pool's roots (the root table, the pipe
    /// and broadcast directories, the values pipes and broadcasts hold): each object
    /// validated as [`check_value`](crate::check_value) does, and each reference count
    /// compared with the references found. A count below them is a problem; a count
    /// above them is an object held elsewhere ([`PoolCheck::held`](crate::PoolCheck)):
    /// by handles of live processes, this one's included, or leaked by a dead one.
    /// Changes no value (it holds a reference to each object while it reads it, and
    /// takes the containers' locks one at a time); other processes and threads may
    /// go on working, which the counts then reflect as they were seen. What seems
    /// wrong at the moment the walk passes — a value moved from one container to
    /// another during the walk is found in both, a reference read before its object
    /// was freed names no object, a table still being built reads as malformed — is
    /// looked at again, up to 20 times apart, and reported only if it is wrong
    /// every time; leaks and unreachable objects only if up to 5 more walks find
    /// them too. Corruption stays put, a working process's moment does not.
    ///
    /// ```
    /// use shmval::{tab, Pool, PoolOptions};
    /// # let name = format!("doc-check-{}", std::process::id());
    /// let pool = Pool::create_with(&name, 1 << 20, &PoolOptions::new().remove_on_drop(true))?;
    /// let t = pool.share(&tab! { "a" => vec![1.0f64, 2.0] })?;
    /// pool.root()?.insert("t", &t)?; // the root holds one reference, `t` another
    /// let r = pool.check();
    /// assert!(r.is_ok(), "{r:?}");
    /// assert_eq!(r.objects, 3); // the root, the dict, the array
    /// assert_eq!((r.held.len(), r.held[0].kind, r.held[0].count, r.held[0].found), (1, "dict", 2, 1));
    /// drop(t);
    /// assert!(pool.check().held.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check(&self) -> crate::PoolCheck {
        crate::shm::check_pool(self, false)
    }

    /// Repairs reference counts. First what processes that are gone held comes back
    /// ([`Pool::reclaim_dead`]: their reference ledgers replayed, their cache slots
    /// reclaimed); then every object reachable from the roots whose count is still
    /// above the references found in the pool plus those this process's handles
    /// hold gets that count (the excess was leaked without a ledger word: a death
    /// between taking a reference and counting it); then every slab whose blocks are
    /// all free goes back to the arena (so a pool filled once with one size serves
    /// others again); then it checks again. Runs only when no other process is
    /// attached: it takes the pool's repair lock exclusive (attached processes hold
    /// it shared; openers are refused with [`OpenError::Repairing`] meanwhile).
    /// Objects no root and no ledger reaches are then freed (a sweep: what a death
    /// between two instructions leaked); blocks that hold no object are never
    /// touched (they may be your own [`Pool::alloc`] data).
    ///
    /// # Safety
    /// No handle of this process may refer into the pool: no `ShmVal`, `ShmTab`,
    /// `ShmList`, `ShmArr`, `ShmStr`, `Pipe`, `Broadcast`, `Subscriber`… of it, in
    /// any thread (their references would be counted as leaks and taken away, and
    /// their drops would then free objects still referenced). The `shmval repair`
    /// tool holds none.
    ///
    /// # Errors
    /// [`RepairError::Attached`](crate::RepairError::Attached) while other processes are attached; a failed lock
    /// call.
    pub unsafe fn repair(&self) -> Result<crate::RepairReport, crate::RepairError> {
        let fd = &self.inner.seg.boot_fd;
        let locked =
            sys::ofd_try_lock(fd, boot::REPAIR_LOCK).map_err(|e| crate::RepairError::Os {
                op: "fcntl",
                source: e.into(),
            })?;
        if !locked {
            let mut others = self.info().attached;
            others.retain(|&p| p != sys::getpid());
            return Err(crate::RepairError::Attached { pids: others });
        }
        fail_point!("pool.repair.locked");
        let reclaimed = self.reclaim_dead();
        let (fixed, swept, swept_bytes) = self.fix_alone();
        let (stray, stray_bytes) = crate::shm::sweep_stray(self);
        self.inner.boot().deaths.store(0, Relaxed);
        // SAFETY: alone (the repair lock), and the caller holds nothing (our contract).
        let slabs_returned = unsafe { self.inner.seg.heap.return_empty_slabs() };
        let after = crate::shm::check_pool(self, true);
        if after.is_ok() {
            self.inner
                .boot()
                .flags
                .fetch_and(!boot::flags::UNCHECKED, Relaxed);
        }
        // Back to shared: openers may attach again.
        let _ = sys::ofd_try_lock_shared(fd, boot::REPAIR_LOCK);
        Ok(crate::RepairReport {
            reclaimed,
            slabs_returned,
            fixed,
            swept,
            swept_bytes,
            stray,
            stray_bytes,
            after,
        })
    }

    /// Allocator statistics. `in_use` leaves out the processes' reference ledgers
    /// (in `bookkeeping`): bytes of values and of your own allocations only.
    pub fn stats(&self) -> Stats {
        let mut s = self.inner.seg.heap.stats();
        s.bookkeeping = self.ledger_bytes();
        s.in_use = s.in_use.saturating_sub(s.bookkeeping);
        s
    }

    /// One of the 8 words of the pool header reserved for the layers above the
    /// allocator. Words 0–3 are shmval's (0: the root table, 1: the pipe
    /// directory); words 4–7 are free for the application.
    pub fn user_word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        self.inner.seg.heap.user_word(i)
    }

    /// The pid of the live attached process whose token is `token` (thread bits
    /// ignored).
    pub(crate) fn pid_of_token(&self, token: u64) -> Option<u32> {
        let want = token & !shmval_alloc::THREAD_MASK;
        let b = self.inner.boot();
        let mine = liveness::entry_of(self.inner.id);
        b.attached.iter().enumerate().find_map(|(i, e)| {
            (want != 0
                && e.token.load(Relaxed) & !shmval_alloc::THREAD_MASK == want
                && liveness::entry_alive(&self.inner.seg.boot_fd, i, mine))
            .then(|| e.pid.load(Relaxed))
        })
    }

    /// What the boot segment says about the pool.
    pub fn info(&self) -> PoolInfo {
        let b = self.inner.boot();
        let pid = b.creator_pid.load(Relaxed);
        let mine = liveness::entry_of(self.inner.id);
        let entries = liveness::entries(b, &self.inner.seg.boot_fd, mine);
        let creator = b.creator_token.load(Relaxed);
        let our_ns = sys::pid_namespace() as u32;
        PoolInfo {
            name: self.inner.name.clone(),
            size: self.size(),
            max_size: b.max_size.load(Relaxed),
            creator_pid: pid,
            creator_alive: entries.iter().any(|e| e.alive && e.token == creator),
            created: SystemTime::UNIX_EPOCH + Duration::from_nanos(b.created_ns.load(Relaxed)),
            base_address: b.base_address.load(Relaxed) as usize,
            fixed_base: b.flags.load(Relaxed) & boot::flags::FIXED_BASE != 0,
            generation: b.generation.load(Relaxed),
            attached: entries.iter().filter(|e| e.alive).map(|e| e.pid).collect(),
            attached_other_ns: entries
                .iter()
                .filter(|e| e.alive && e.pid_ns != our_ns)
                .count(),
        }
    }
}

/// What [`Pool::reclaim_dead`] gave back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Reclaimed {
    /// Allocator cache slots of dead threads (their cached blocks are the pool's
    /// again).
    pub slots: usize,
    /// Reference ledgers of processes that are gone, replayed.
    pub ledgers: u64,
    /// References their handles held, given back.
    pub references: u64,
    /// Distinct objects those references were to.
    pub objects: u64,
    /// References they counted without a ledger word (the pool was too full to grow
    /// the ledger): not known, so leaked; `Pool::check` reports them.
    pub untracked: u64,
    /// Objects they died dismantling (their last reference gone, what they held not
    /// yet all given back), dismantled here.
    pub dismantled: u64,
}

/// A snapshot of a pool's boot record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// Pool name.
    pub name: String,
    /// Main segment size now.
    pub size: u64,
    /// Most bytes it may grow to (its size, for a pool that does not grow).
    pub max_size: u64,
    /// Creator's pid.
    pub creator_pid: u32,
    /// Whether the creator is still attached and alive (its liveness lock is held,
    /// see `docs/PROTOCOLS.md`; true across PID namespaces).
    pub creator_alive: bool,
    /// When it was created.
    pub created: SystemTime,
    /// Where the creator mapped the main segment.
    pub base_address: usize,
    /// Whether every process maps it at `base_address`.
    pub fixed_base: bool,
    /// Incarnation id of this pool.
    pub generation: u64,
    /// Pids of the live attached processes, each in its own PID namespace (a pid
    /// from another namespace names some other process here).
    pub attached: Vec<u32>,
    /// How many of them live in another PID namespace than this process.
    pub attached_other_ns: usize,
}
