//! Statistics any attached process can read.

/// A snapshot of a heap's usage.
///
/// Small-block counters are kept per cache slot (single writer, no shared cache
/// line); a process killed between handing out a block and counting it can make
/// `in_use` drift by one block until a pool check recounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Region length.
    pub total: u64,
    /// Bytes of the arena (region minus allocator metadata).
    pub arena: u64,
    /// Bytes handed out to callers (rounded to class or block size), less
    /// [`Stats::bookkeeping`].
    pub in_use: u64,
    /// Bytes handed out that the layer above keeps for its own bookkeeping and
    /// leaves out of `in_use` (shmval: the attached processes' reference ledgers);
    /// 0 from the allocator itself.
    pub bookkeeping: u64,
    /// Bytes available: free large blocks plus free small blocks in slabs.
    pub free: u64,
    /// Peak of `arena_used`.
    pub high_water: u64,
    /// Payload bytes of the largest free large block.
    pub largest_free: u64,
    /// Bytes of small blocks in use.
    pub small_in_use: u64,
    /// Payload bytes of large blocks in use.
    pub large_in_use: u64,
    /// Number of large blocks in use.
    pub large_blocks: u64,
    /// Number of slabs carved (all classes).
    pub slabs: u64,
    /// Bytes of the arena taken by large blocks and slabs (headers included).
    pub arena_used: u64,
    /// Blocks leaked because a cache could neither keep nor publish them.
    pub leaked: u64,
    /// Per size class.
    pub classes: Vec<ClassStats>,
}

/// Usage of one small size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size of the class.
    pub size: u32,
    /// Blocks in use.
    pub in_use: u64,
    /// Blocks free in this class's slabs.
    pub free: u64,
    /// Slabs of this class.
    pub slabs: u64,
}
