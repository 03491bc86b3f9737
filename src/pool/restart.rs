//! Reattaching after a restart (`open_or_create`, `cleanup_stray`) and the
//! recovery an opener runs alone after deaths.

use super::*;

impl Pool {
    /// Opens the pool if it exists and is fit to reattach to, creates it otherwise
    /// (racing creators are settled by `O_EXCL`: the loser opens what the winner
    /// made) — the call for a service that restarts. An existing pool is reattached
    /// when this build can read it and it is consistent: no process died attached
    /// since the last recovery (a clean history), or, after deaths, the recovery at
    /// open ran and [`Pool::check`] finds no problem. Otherwise: a typed error
    /// ([`OpenOrCreateError::Inconsistent`], or the open's `Incompatible`,
    /// `Corrupt`, `CreatorDied`), or, with [`PoolOptions::recreate_unfit`], the
    /// pool is removed and made anew — only when no live process is attached to it
    /// (one that is keeps the error: its processes are using it).
    ///
    /// # Errors
    /// As above; whatever the final open or create reported.
    pub fn open_or_create(
        name: &str,
        size: u64,
        opts: &PoolOptions,
    ) -> Result<Pool, OpenOrCreateError> {
        match Self::open_or_create_once(name, size, opts) {
            Err(e) if opts.recreate_unfit && e.is_unfit() => {
                let dir = opts.get_dir();
                let orphaned = crate::admin::inspect(&dir, name).is_ok_and(|p| p.orphaned);
                if !orphaned {
                    return Err(e);
                }
                Self::cleanup_stray_in(&dir, name);
                Self::open_or_create_once(name, size, &opts.clone().recreate_unfit(false))
            }
            r => r,
        }
    }

    fn open_or_create_once(
        name: &str,
        size: u64,
        opts: &PoolOptions,
    ) -> Result<Pool, OpenOrCreateError> {
        let now = opts.clone().timeout(Duration::ZERO);
        let pool = match Self::open_with(name, &now) {
            Ok(p) => p,
            Err(OpenError::NotFound { .. }) => match Self::create_with(name, size, opts) {
                Ok(p) => return Ok(p),
                Err(CreateError::AlreadyExists { .. }) => {
                    let wait = opts
                        .clone()
                        .timeout(opts.timeout.max(Duration::from_secs(5)));
                    Self::open_with(name, &wait)?
                }
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        // After deaths: consistent only if a check finds nothing wrong.
        let b = pool.inner.boot();
        let unclean = pool.recovery().is_some()
            || b.flags.load(Relaxed) & boot::flags::UNCHECKED != 0
            || b.deaths.load(Relaxed) != 0
            || liveness::entries(
                b,
                &pool.inner.seg.boot_fd,
                liveness::entry_of(pool.inner.id),
            )
            .iter()
            .any(|e| !e.alive);
        if unclean {
            let c = pool.check();
            if c.is_ok() {
                b.flags.fetch_and(!boot::flags::UNCHECKED, Relaxed);
            } else {
                return Err(OpenOrCreateError::Inconsistent {
                    name: name.to_owned(),
                    problems: c
                        .problems
                        .iter()
                        .map(|p| format!("at {:#x}: {}", p.offset, p.what))
                        .collect(),
                });
            }
        }
        Ok(pool)
    }

    /// Removes pool `name`'s two files in `$SHMVAL_DIR` or `/dev/shm` whatever
    /// their state — half made, incompatible, corrupt, in use — for the wipe and
    /// start clean path (processes that have it mapped keep their mappings).
    /// Returns whether anything was there.
    pub fn cleanup_stray(name: &str) -> bool {
        Self::cleanup_stray_with(name, &PoolOptions::default())
    }

    /// As [`Pool::cleanup_stray`], in `opts`' directory.
    pub fn cleanup_stray_with(name: &str, opts: &PoolOptions) -> bool {
        Self::cleanup_stray_in(&opts.get_dir(), name)
    }

    fn cleanup_stray_in(dir: &std::path::Path, name: &str) -> bool {
        if validate_name(name).is_err() {
            return false;
        }
        let there =
            sys::path_id(dir, name).is_some() || sys::path_id(dir, &boot_name(name)).is_some();
        let _ = crate::admin::remove_files(dir, name);
        there
    }

    /// After deaths (a process that died attached, see `BootHeader::deaths`), an
    /// opener that finds the pool to itself (the repair lock exclusive: no other
    /// process attached, no other handle of this one) frees what the deaths left
    /// outside every ledger — a death between two instructions: a reference counted
    /// and not yet ledgered, an object made and not yet stored — as `repair` does
    /// (counts lowered to the references found, unreachable objects swept, empty
    /// slabs given back), then forgets the dead entries. Killed midway, the next
    /// alone opener does it again.
    pub(super) fn recover_alone(&self) {
        let b = self.inner.boot();
        let mine = liveness::entry_of(self.inner.id);
        if b.deaths.load(Relaxed) == 0 && !liveness::others_named(b, mine) {
            return;
        }
        let fd = &self.inner.seg.boot_fd;
        if !matches!(sys::ofd_try_lock(fd, boot::REPAIR_LOCK), Ok(true)) {
            return; // others are attached: a later opener alone does it
        }
        fail_point!("pool.recover.locked");
        b.flags.fetch_or(boot::flags::UNCHECKED, Relaxed);
        let deaths = b.deaths.load(Relaxed);
        self.reclaim_dead();
        let (fixed, swept, swept_bytes) = self.fix_alone();
        let (stray, stray_bytes) = crate::shm::sweep_stray(self);
        // SAFETY: alone (the repair lock), and this handle was made just now: no
        // value of it exists yet.
        let slabs_returned = unsafe { self.inner.seg.heap.return_empty_slabs() };
        let forgotten = liveness::forget_dead(b, fd, mine);
        b.deaths.store(0, Relaxed);
        let _ = sys::ofd_try_lock_shared(fd, boot::REPAIR_LOCK);
        let _ = self.inner.recovery.set(Recovery {
            deaths: deaths.max(forgotten as u64),
            fixed,
            swept,
            swept_bytes,
            stray,
            stray_bytes,
            slabs_returned,
        });
    }

    /// With the pool to itself: counts above the references found (plus this
    /// process's handles) lowered to them, then what nothing refers to swept.
    /// Returns (counts fixed, objects swept, their bytes).
    pub(super) fn fix_alone(&self) -> (Vec<crate::Held>, usize, u64) {
        let before = crate::shm::check_pool(self, true);
        let mut fixed = Vec::new();
        for h in &before.held {
            let Ok(head) = self.header_at(h.offset) else {
                continue;
            };
            // What the pool and this process's handles hold stays (nobody else is
            // attached, and the dead ones' ledgers were replayed).
            let (Ok(count), Ok(found)) =
                (u32::try_from(h.count), u32::try_from(h.found + h.handles))
            else {
                continue;
            };
            // The count as checked (nobody else is attached: nothing moves it).
            if head.swap_count(count, found, Relaxed) {
                fixed.push(h.clone());
            }
        }
        // What nothing refers to: no root reaches it, no process holds it.
        let (swept, swept_bytes) = crate::shm::sweep(self);
        (fixed, swept, swept_bytes)
    }

    /// What this handle's open did alone on the pool after processes died
    /// attached (`None`: nothing was due, or others were attached). See
    /// [`PoolOptions::recover_on_open`].
    pub fn recovery(&self) -> Option<&Recovery> {
        self.inner.recovery.get()
    }
}

/// What an open did alone on the pool after processes died attached
/// ([`Pool::recovery`], [`PoolOptions::recover_on_open`]).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Recovery {
    /// Deaths it recovered from (processes that died attached).
    pub deaths: u64,
    /// Objects whose count was above the references found, lowered to them.
    pub fixed: Vec<crate::Held>,
    /// Objects nothing referred to, freed (with what only they held).
    pub swept: usize,
    /// Their bytes.
    pub swept_bytes: u64,
    /// Blocks that held no value and belonged to none, freed (only in a pool where
    /// no block of the user's own was ever allocated: see `PoolCheck::stray_blocks`).
    pub stray: u64,
    /// Their bytes.
    pub stray_bytes: u64,
    /// Slabs whose blocks were all free, given back to the arena.
    pub slabs_returned: usize,
}
