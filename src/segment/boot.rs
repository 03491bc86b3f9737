//! The boot segment: one page describing a pool (see `docs/LAYOUT.md`).

use crate::error::LayoutId;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// "SHMVALBT" little-endian: the first word of every boot segment.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"SHMVALBT");
/// Version of the boot + main segment layout and of the attach protocol (4: attached
/// processes hold the repair lock shared, see [`REPAIR_LOCK`]; a build without it
/// must not attach beside one that repairs. 5: each attach entry names its process's
/// reference ledger, which whoever finds the process dead replays: a build that
/// keeps none would have its handles' references released under it. 8: a
/// container's `dirty` word is its version, read by dict lookups that take no
/// lock: a build that writes it as 0/1 would let such a reader take a changing
/// table for an unchanged one. 9: dict entries are 40 bytes, the unused pad word
/// gone. 10: a ledger word with key bit 43 set notes an object being dismantled,
/// which a replay finishes: a build that reads it as a handle's reference would
/// release an object of count 0).
pub const LAYOUT_VERSION: u32 = 10;
/// Bytes of the boot segment file.
pub const BOOT_SIZE: usize = 4096;
/// Entries in the attached-process table.
pub const ATTACH_SLOTS: usize = 120;

/// Pool state, published in [`BootHeader::state`].
pub mod state {
    /// The creator is still building the pool.
    pub const CREATING: u32 = 1;
    /// Usable.
    pub const READY: u32 = 2;
    /// Being destroyed: openers treat it as gone.
    pub const CLOSING: u32 = 3;
}

/// Backend of the main segment.
pub mod backend {
    /// POSIX shared memory (`shm_open`) on tmpfs.
    pub const POSIX_SHM: u32 = 1;
    /// A file in a chosen directory.
    pub const FILE: u32 = 2;
    /// System V shared memory (`shmget`); `backend_arg` = `key << 32 | shmid`.
    pub const SYSV: u32 = 3;
    /// Anonymous memory files (`memfd_create`).
    pub const MEMFD: u32 = 4;

    /// Its name.
    pub fn name(b: u32) -> &'static str {
        match b {
            POSIX_SHM => "posix",
            FILE => "file",
            SYSV => "sysv",
            MEMFD => "memfd",
            _ => "unknown",
        }
    }
}

/// Flags of the pool.
pub mod flags {
    /// Every process maps the main segment at `base_address`.
    pub const FIXED_BASE: u32 = 1;
    /// A block of the user's own was allocated once (`Pool::alloc`): a block that
    /// holds no value and belongs to none may be the user's, so the recovery alone
    /// never frees one (set before the first such allocation, never cleared).
    pub const USER_BLOCKS: u32 = 2;
    /// A process died attached since the last passing check (`Pool::open_or_create`
    /// or `Pool::repair`): until one passes, `open_or_create` checks before it
    /// reattaches (the clean-shutdown flag, inverted).
    pub const UNCHECKED: u32 = 4;
}

/// Where the liveness lock of attach entry `i` sits in the boot segment's file: one
/// byte at `LIVE_LOCK_BASE + i` (past the end of the file, where nothing is stored:
/// locks may cover any range). See `liveness`.
pub const LIVE_LOCK_BASE: u64 = BOOT_SIZE as u64;

/// The repair lock: every attached process holds a shared lock on this byte of the
/// boot segment's file for as long as it is attached (taken with its attach entry);
/// `Pool::repair` takes it exclusive, so it runs only when no other process is
/// attached, and openers are refused meanwhile. Past every entry's lock byte.
pub const REPAIR_LOCK: u64 = LIVE_LOCK_BASE + 1024;

/// One entry of the attached-process table. Written only by the process holding the
/// entry's liveness lock (see `liveness`).
#[repr(C)]
#[derive(Debug)]
pub struct AttachSlot {
    /// Process token (random, see `platform::process_token`), 0 = never used. A
    /// token stays after its process dies; the entry's lock says whether it lives.
    pub token: AtomicU64,
    /// When it attached, ns since the Unix epoch (also the entry's epoch: it changes
    /// on every claim).
    pub since_ns: AtomicU64,
    /// The attacher's pid, in its own PID namespace.
    pub pid: AtomicU32,
    /// Low 32 bits of the inode of the attacher's PID namespace (0 unknown).
    pub pid_ns: AtomicU32,
    /// Offset in the main segment of the reference ledger of the process that holds
    /// (or last held) the entry, 0 none (see `ledger`). Stays after a detach or a
    /// death until someone holding the entry's lock replays and frees it.
    pub ledger: AtomicU64,
}

const _: () = assert!(size_of::<AttachSlot>() == 32);

/// The boot segment's header. Every field is atomic: another process may write the
/// mutable ones at any time, and nothing read from here is trusted unchecked.
#[repr(C)]
#[derive(Debug)]
pub struct BootHeader {
    /// [`BOOT_MAGIC`].
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: AtomicU32,
    /// One of [`state`]; 0 = not yet initialised. Published with Release.
    pub state: AtomicU32,
    /// [`layout_hash`].
    pub layout_hash: AtomicU64,
    /// Pid of the creator.
    pub creator_pid: AtomicU32,
    /// Effective uid of the creator.
    pub creator_uid: AtomicU32,
    /// Start time of the creator, clock ticks after boot (pid reuse guard).
    pub creator_start: AtomicU64,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: AtomicU64,
    /// Where the creator mapped the main segment.
    pub base_address: AtomicU64,
    /// Bytes of the main segment: its size at creation, and after each growth
    /// what its file holds at least (stored once the file was extended).
    pub main_size: AtomicU64,
    /// One of [`backend`].
    pub backend: AtomicU32,
    /// Bits of [`flags`].
    pub flags: AtomicU32,
    /// Incarnation id: differs between two pools created under the same name.
    pub generation: AtomicU64,
    /// The creator's process token (its liveness is that of its attach entry).
    pub creator_token: AtomicU64,
    /// Deaths of attached processes whose leftovers were reclaimed since the last
    /// recovery alone (see `Pool::open`): what their ledgers did not cover (a death
    /// between two instructions) is swept by the next opener that finds the pool
    /// to itself.
    pub deaths: AtomicU64,
    /// What the backend needs to find the main segment: System V, `key << 32 |
    /// shmid`; 0 for the others.
    pub backend_arg: AtomicU64,
    /// Most bytes the main segment may grow to (`PoolOptions::max_size`); its
    /// size at creation for a pool that does not grow. Every process reserves this
    /// much address space for it.
    pub max_size: AtomicU64,
    _reserved: [AtomicU64; 2],
    /// Processes attached to the pool.
    pub attached: [AttachSlot; ATTACH_SLOTS],
}

const _: () = assert!(size_of::<BootHeader>() == 128 + 32 * ATTACH_SLOTS);
const _: () = assert!(size_of::<BootHeader>() <= BOOT_SIZE);
const _: () = assert!(align_of::<BootHeader>() == 8);
const _: () = assert!(std::mem::offset_of!(BootHeader, state) == 12);
const _: () = assert!(std::mem::offset_of!(BootHeader, base_address) == 48);
const _: () = assert!(std::mem::offset_of!(BootHeader, generation) == 72);
const _: () = assert!(std::mem::offset_of!(BootHeader, creator_token) == 80);
const _: () = assert!(std::mem::offset_of!(BootHeader, deaths) == 88);
const _: () = assert!(std::mem::offset_of!(BootHeader, backend_arg) == 96);
const _: () = assert!(std::mem::offset_of!(BootHeader, attached) == 128);

/// Hash of everything that shapes a pool's bytes: the boot header's, the
/// allocator's (its fingerprint), the values' (`shm::layout`), the pipes' and the
/// broadcasts' layouts, and the pointer width. A build that changes any of them
/// refuses pools of another as `Incompatible` instead of misreading them.
pub const fn layout_hash() -> u64 {
    let own = [
        size_of::<BootHeader>() as u64,
        align_of::<BootHeader>() as u64,
        size_of::<AttachSlot>() as u64,
        size_of::<usize>() as u64,
        ATTACH_SLOTS as u64,
        BOOT_SIZE as u64,
    ];
    let mut h = shmval_alloc::layout_fingerprint();
    h = fold(h, &own);
    h = fold(h, &crate::shm::layout::LAYOUT_PARTS);
    h = fold(h, &crate::pipe::PIPE_LAYOUT);
    h = fold(h, &crate::ledger::LEDGER_LAYOUT);
    fold(h, &crate::pipe::BROADCAST_LAYOUT)
}

/// FNV-style folding of `parts` into `h` (order matters).
pub(crate) const fn fold(mut h: u64, parts: &[u64]) -> u64 {
    let mut i = 0;
    while i < parts.len() {
        h ^= parts[i];
        h = h.wrapping_mul(0x100_0000_01b3);
        i += 1;
    }
    h
}

/// Our layout identity.
pub const fn layout_id() -> LayoutId {
    LayoutId {
        version: LAYOUT_VERSION,
        hash: layout_hash(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part counts: changing any one of a layout's parts changes the hash.
    #[test]
    fn every_layout_part_changes_the_hash() {
        let parts: Vec<&[u64]> = vec![
            &crate::shm::layout::LAYOUT_PARTS,
            &crate::pipe::PIPE_LAYOUT,
            &crate::pipe::BROADCAST_LAYOUT,
        ];
        for p in parts {
            let base = fold(7, p);
            for i in 0..p.len() {
                let mut q = p.to_vec();
                q[i] ^= 8;
                assert_ne!(fold(7, &q), base, "part {i} of {p:?}");
            }
        }
        assert_ne!(layout_hash(), 0);
    }
}
