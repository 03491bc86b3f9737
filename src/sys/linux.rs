//! Linux system calls: POSIX shared memory, mmap, futex, process identity.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Where POSIX shared memory objects live (`shm_open(3)` opens files here).
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// The environment variable that moves the default directory of pools.
pub(crate) const DIR_ENV: &str = "SHMVAL_DIR";

/// The directory pools live in unless told otherwise: `$SHMVAL_DIR`, else
/// `/dev/shm`.
pub(crate) fn default_dir() -> std::path::PathBuf {
    match std::env::var_os(DIR_ENV) {
        Some(d) if !d.is_empty() => d.into(),
        _ => SHM_DIR.into(),
    }
}

/// Creates `dir/name` (`O_CREAT | O_EXCL | O_NOFOLLOW`, close-on-exec) with mode
/// 0600, then `fchmod(mode)` so the umask cannot change the requested mode. In
/// `/dev/shm` this is exactly what `shm_open` does.
pub(crate) fn seg_create(dir: &Path, name: &str, mode: u32) -> Result<OwnedFd, Errno> {
    let fd = nix::fcntl::open(
        &dir.join(name),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::S_IRUSR | Mode::S_IWUSR,
    )?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode & 0o777))?;
    Ok(fd)
}

/// Opens the existing `dir/name` read-write (never through a symbolic link).
pub(crate) fn seg_open(dir: &Path, name: &str) -> Result<OwnedFd, Errno> {
    let fd = nix::fcntl::open(
        &dir.join(name),
        OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )?;
    // SAFETY: as in `seg_create`.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Sets the access and modification times of `dir/name` to now (never through a
/// symbolic link); failures are ignored (a keepalive's best effort).
pub(crate) fn touch(dir: &Path, name: &str) {
    let now = nix::sys::time::TimeSpec::UTIME_NOW;
    let _ = nix::sys::stat::utimensat(
        None,
        &dir.join(name),
        &now,
        &now,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// Removes `dir/name`.
pub(crate) fn seg_unlink(dir: &Path, name: &str) -> Result<(), Errno> {
    nix::unistd::unlink(&dir.join(name))
}

/// The (device, inode) of what `dir/name` names now, if anything.
pub(crate) fn path_id(dir: &Path, name: &str) -> Option<(u64, u64)> {
    nix::sys::stat::lstat(&dir.join(name))
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
}

/// The (device, inode) of an open file.
pub(crate) fn file_id(fd: &OwnedFd) -> Result<(u64, u64), Errno> {
    let st = fstat(fd.as_raw_fd())?;
    Ok((st.st_dev, st.st_ino))
}

/// What `fstat` says about a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileInfo {
    pub size: u64,
    /// Bytes of storage allocated to it (`st_blocks * 512`): less than `size` for
    /// a sparse file, whose holes a store fills — or SIGBUSes on when full.
    pub allocated: u64,
    pub uid: u32,
    #[allow(dead_code)] // for the operator tool
    pub mode: u32,
    pub regular: bool,
}

pub(crate) fn file_info(fd: &OwnedFd) -> Result<FileInfo, Errno> {
    let st = fstat(fd.as_raw_fd())?;
    Ok(FileInfo {
        size: st.st_size as u64,
        allocated: st.st_blocks as u64 * 512,
        uid: st.st_uid,
        mode: st.st_mode & 0o7777,
        regular: SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG,
    })
}

/// Reserves `len` bytes so later page faults cannot hit a full tmpfs (SIGBUS).
pub(crate) fn reserve(fd: &OwnedFd, len: u64) -> Result<(), Errno> {
    reserve_range(fd, 0, len)
}

/// Reserves the bytes `from..to` (extending the file to `to` if shorter).
pub(crate) fn reserve_range(fd: &OwnedFd, from: u64, to: u64) -> Result<(), Errno> {
    let len = i64::try_from(to.saturating_sub(from)).map_err(|_| Errno::EFBIG)?;
    let from = i64::try_from(from).map_err(|_| Errno::EFBIG)?;
    if len == 0 {
        return Ok(());
    }
    nix::fcntl::posix_fallocate(fd.as_raw_fd(), from, len)
}

/// The block size of the file system of `dir` (a huge page on hugetlbfs).
pub(crate) fn block_size(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.block_size() as u64)
}

/// Bytes available to unprivileged users in the file system of `dir`.
pub(crate) fn space_available(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Total size and free bytes of the file system of `dir`.
pub(crate) fn space(dir: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let f = st.fragment_size() as u64;
    Some((st.blocks() as u64 * f, st.blocks_available() as u64 * f))
}

pub(crate) fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A shared, read-write mapping of a segment, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Attached with `shmat` (detached with `shmdt`), not `mmap`ed.
    sysv: bool,
}

// SAFETY: the mapping is plain shared memory; access goes through atomics or
// through the allocator's documented protocols.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

/// Why a mapping failed.
#[derive(Debug)]
pub(crate) enum MapError {
    /// `MAP_FIXED_NOREPLACE` found the range taken; the string names the mapping.
    AddressInUse(String),
    Os(Errno),
}

impl Mapping {
    /// Maps `len` bytes of `fd`, anywhere or exactly at `fixed` (never replacing an
    /// existing mapping).
    pub(crate) fn new(fd: &OwnedFd, len: usize, fixed: Option<usize>) -> Result<Mapping, MapError> {
        let nz = NonZeroUsize::new(len).ok_or(MapError::Os(Errno::EINVAL))?;
        let mut flags = MapFlags::MAP_SHARED;
        let addr = match fixed {
            Some(a) => {
                flags |= MapFlags::MAP_FIXED_NOREPLACE;
                Some(NonZeroUsize::new(a).ok_or(MapError::Os(Errno::EINVAL))?)
            }
            None => None,
        };
        // SAFETY: a fresh MAP_SHARED mapping of a file we hold; with
        // MAP_FIXED_NOREPLACE the kernel refuses rather than replace anything.
        let r = unsafe {
            nix::sys::mman::mmap(
                addr,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        Self::placed(r, len, fixed)
    }

    /// The mapping `mmap` returned as `r` for `len` bytes asked at `fixed` (with
    /// `MAP_FIXED_NOREPLACE`): a taken range, or a kernel that placed it elsewhere
    /// (older than 4.17, the flag a hint), is `AddressInUse` naming the conflict.
    fn placed(
        r: Result<NonNull<c_void>, Errno>,
        len: usize,
        fixed: Option<usize>,
    ) -> Result<Mapping, MapError> {
        let p = match r {
            Ok(p) => p,
            Err(Errno::EEXIST) => {
                let a = fixed.unwrap_or(0);
                return Err(MapError::AddressInUse(
                    conflicting_mapping(a, len).unwrap_or_else(|| "unknown mapping".into()),
                ));
            }
            Err(e) => return Err(MapError::Os(e)),
        };
        let m = Mapping {
            ptr: p.cast(),
            len,
            sysv: false,
        };
        if let Some(a) = fixed {
            if m.ptr.as_ptr() as usize != a {
                let got = m.ptr.as_ptr() as usize;
                drop(m);
                return Err(MapError::AddressInUse(format!(
                    "kernel placed the mapping at {got:#x} instead"
                )));
            }
        }
        Ok(m)
    }

    /// Reserves `max` bytes of address space (anywhere, or exactly at `fixed`,
    /// never replacing a mapping) and maps the first `len` bytes of `fd` shared and
    /// writable over its start: the rest stays inaccessible until [`map_over`]
    /// maps more of the file there. The mapping's length (what drop unmaps) is
    /// `max`.
    pub(crate) fn reserved(
        fd: &OwnedFd,
        len: usize,
        max: usize,
        fixed: Option<usize>,
    ) -> Result<Mapping, MapError> {
        let nz = NonZeroUsize::new(max).ok_or(MapError::Os(Errno::EINVAL))?;
        if len == 0 || len > max {
            return Err(MapError::Os(Errno::EINVAL));
        }
        let mut flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE;
        let addr = match fixed {
            Some(a) => {
                flags |= MapFlags::MAP_FIXED_NOREPLACE;
                Some(NonZeroUsize::new(a).ok_or(MapError::Os(Errno::EINVAL))?)
            }
            None => None,
        };
        // SAFETY: a fresh anonymous mapping without access; with
        // MAP_FIXED_NOREPLACE the kernel refuses rather than replace anything.
        let r = unsafe { nix::sys::mman::mmap_anonymous(addr, nz, ProtFlags::PROT_NONE, flags) };
        let m = Self::placed(r, max, fixed)?;
        map_over(fd, m.ptr, 0, len).map_err(MapError::Os)?;
        Ok(m)
    }

    /// Maps `len` bytes of `fd` (opened read-only or not) private and writable:
    /// the file's pages are read as they are (others' stores show), and a store
    /// would only ever change a private copy. For looking at a pool without taking
    /// part in it.
    pub(crate) fn private(fd: &OwnedFd, len: usize) -> Result<Mapping, Errno> {
        let nz = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        // SAFETY: a fresh private mapping of a file we hold.
        let p = unsafe {
            nix::sys::mman::mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
                fd,
                0,
            )
        }?;
        Ok(Mapping {
            ptr: p.cast(),
            len,
            sysv: false,
        })
    }

    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Maps the bytes `from..to` of `fd` shared and writable at `base + from`, over
/// the reservation made by [`Mapping::reserved`] (`MAP_FIXED` replaces its
/// inaccessible pages there, and nothing else: the range is inside it).
pub(crate) fn map_over(
    fd: &OwnedFd,
    base: NonNull<u8>,
    from: usize,
    to: usize,
) -> Result<(), Errno> {
    let len = NonZeroUsize::new(to.saturating_sub(from)).ok_or(Errno::EINVAL)?;
    let at = NonZeroUsize::new(base.as_ptr() as usize + from).ok_or(Errno::EINVAL)?;
    let off = i64::try_from(from).map_err(|_| Errno::EFBIG)?;
    // SAFETY: `base + from .. base + to` lies in a reservation this process made
    // for exactly this file (the caller's contract), so MAP_FIXED replaces only
    // its own inaccessible pages.
    unsafe {
        nix::sys::mman::mmap(
            Some(at),
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
            fd,
            off,
        )
    }?;
    Ok(())
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.sysv {
            // SAFETY: we attached exactly this segment here and nobody uses it after.
            unsafe { libc::shmdt(self.ptr.as_ptr().cast::<c_void>()) };
            return;
        }
        // SAFETY: we mapped exactly this range and nobody uses it after drop.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast::<c_void>(), self.len) };
    }
}

/// System V shared memory (nix has no wrapper: `libc`).
pub(crate) mod sysv {
    use super::{Errno, Mapping, NonNull};

    /// What `IPC_STAT` says about a segment.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Stat {
        pub size: u64,
        pub key: i32,
        pub uid: u32,
        /// Marked for removal (`IPC_RMID` with attachments left).
        pub removed: bool,
    }

    /// A new segment of `size` bytes under `key` (`IPC_EXCL`), mode `mode`.
    pub(crate) fn create(key: i32, size: u64, mode: u32) -> Result<i32, Errno> {
        // SAFETY: plain system call on integers.
        let id = unsafe {
            libc::shmget(
                key,
                size as usize,
                libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32,
            )
        };
        if id < 0 {
            return Err(Errno::last());
        }
        Ok(id)
    }

    /// The segment under `key`.
    pub(crate) fn get(key: i32) -> Result<i32, Errno> {
        // SAFETY: plain system call on integers.
        let id = unsafe { libc::shmget(key, 0, 0) };
        if id < 0 {
            return Err(Errno::last());
        }
        Ok(id)
    }

    /// `IPC_STAT`.
    pub(crate) fn stat(id: i32) -> Result<Stat, Errno> {
        // SAFETY: all-zero is a valid shmid_ds, which the kernel fills.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is a valid out-pointer for IPC_STAT.
        if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
            return Err(Errno::last());
        }
        Ok(Stat {
            size: ds.shm_segsz as u64,
            key: ds.shm_perm.__key,
            uid: ds.shm_perm.uid,
            removed: u32::from(ds.shm_perm.mode) & 0o1000 != 0, // SHM_DEST
        })
    }

    /// Marks the segment for removal (gone once the last process detaches).
    pub(crate) fn remove(id: i32) -> Result<(), Errno> {
        // SAFETY: IPC_RMID takes no buffer.
        if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    /// Attaches `len` bytes of segment `id`, anywhere or at `fixed`; read-only
    /// with `read_only`.
    pub(crate) fn attach(
        id: i32,
        len: usize,
        fixed: Option<usize>,
        read_only: bool,
    ) -> Result<Mapping, Errno> {
        let flags = if read_only { libc::SHM_RDONLY } else { 0 };
        let addr = fixed.unwrap_or(0) as *const libc::c_void;
        // SAFETY: a fresh attachment; at a fixed address the kernel fails (EINVAL)
        // rather than replace a mapping unless SHM_REMAP is given, which it is not.
        let p = unsafe { libc::shmat(id, addr, flags) };
        if p as isize == -1 {
            return Err(Errno::last());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(Errno::EINVAL)?;
        Ok(Mapping {
            ptr,
            len,
            sysv: true,
        })
    }
}

/// Makes the pages of `m` present now (`MADV_POPULATE_WRITE`): a segment with no
/// file to `posix_fallocate` gets its memory here, where a shortage is an error
/// (`ENOMEM`) instead of a SIGBUS or an OOM kill later. Kernels before 5.14 do not
/// know it (`EINVAL`): then each page is touched.
pub(crate) fn populate(m: &Mapping) -> Result<(), Errno> {
    const MADV_POPULATE_WRITE: i32 = 23;
    // SAFETY: the whole mapping, which we own.
    let r = unsafe { libc::madvise(m.ptr.as_ptr().cast(), m.len, MADV_POPULATE_WRITE) };
    if r == 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno::EINVAL => {
            let page = 4096;
            for off in (0..m.len).step_by(page) {
                // SAFETY: inside the mapping; a zero byte written over a fresh,
                // zero-filled page changes nothing.
                unsafe {
                    std::ptr::write_volatile(
                        m.ptr.as_ptr().add(off),
                        std::ptr::read_volatile(m.ptr.as_ptr().add(off)),
                    )
                };
            }
            Ok(())
        }
        e => Err(e),
    }
}

/// An anonymous memory file (`memfd_create`, close-on-exec, sealable) named
/// `name` (shown in `/proc/PID/maps` as `/memfd:NAME`).
pub(crate) fn memfd(name: &str) -> Result<OwnedFd, Errno> {
    let c = std::ffi::CString::new(name).map_err(|_| Errno::EINVAL)?;
    nix::sys::memfd::memfd_create(
        &c,
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
            | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
}

/// Seals `fd` against shrinking and growing (`F_SEAL_SHRINK | F_SEAL_GROW`), then
/// against further seals: no process can truncate it under the others' mappings.
pub(crate) fn seal_size(fd: &OwnedFd) -> Result<(), Errno> {
    seal(fd, true)
}

/// Seals a memory file against shrinking only (a pool that grows), and against
/// further seals.
pub(crate) fn seal_shrink(fd: &OwnedFd) -> Result<(), Errno> {
    seal(fd, false)
}

fn seal(fd: &OwnedFd, grow_too: bool) -> Result<(), Errno> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let mut seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    if grow_too {
        seals |= SealFlag::F_SEAL_GROW;
    }
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(())
}

/// Sets the size of a fresh memory file.
pub(crate) fn set_len(fd: &OwnedFd, len: u64) -> Result<(), Errno> {
    nix::unistd::ftruncate(fd, len as i64)
}

/// The `/proc/self/maps` line overlapping `[addr, addr + len)`.
fn conflicting_mapping(addr: usize, len: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .find(|l| {
            let range = l.split_whitespace().next().unwrap_or("");
            let mut it = range.split('-').map(|h| usize::from_str_radix(h, 16).ok());
            matches!((it.next().flatten(), it.next().flatten()), (Some(s), Some(e)) if s < addr + len && addr < e)
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Start time of process `pid` in clock ticks after boot (field 22 of
/// `/proc/PID/stat`) and whether it is a zombie, or `None` if it does not exist.
pub(crate) fn proc_stat(pid: u32) -> Option<(u64, bool)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields follow the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    let start = f.nth(18)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

pub(crate) fn getpid() -> u32 {
    std::process::id()
}

pub(crate) fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// Wait on a futex shared between processes (no `FUTEX_PRIVATE_FLAG`), at most
/// `timeout` (`None`: until woken — no timer is armed, which on a VM saves the
/// timer's programming, a few µs of CPU a sleep).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT reads the 4-byte word at a valid address and sleeps; it
    // never writes user memory; the timespec (if any) outlives the call. nix has no
    // futex wrapper, hence libc.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            tsp,
        );
    }
}

/// `membarrier(2)` commands (nix has no wrapper, hence libc).
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// Registers this process for `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (its threads then
/// execute a full barrier whenever any process issues one). Whether it worked.
pub(crate) fn membarrier_register() -> bool {
    // SAFETY: membarrier takes no pointers.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            0,
            0,
        ) == 0
    }
}

/// A full memory barrier on every CPU running a registered process (an IPI to
/// each; ~0.2 µs when none runs). Whether the kernel did it.
pub(crate) fn membarrier_global() -> bool {
    // SAFETY: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 }
}

/// Wake up to `n` waiters of a shared futex.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n.min(i32::MAX as u32) as i32,
        );
    }
}

/// The current wall-clock time in nanoseconds since the Unix epoch.
pub(crate) fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// An open-file-description lock (`F_OFD_SETLK`) on one byte at `at` of `fd`'s file:
/// `Ok(true)` when taken, `Ok(false)` when another open file description holds it.
///
/// OFD locks belong to the description, not to the process: they are released only
/// when the last descriptor of the description is closed — by the kernel when the
/// process dies, whatever PID namespace it lives in — and a second description of
/// the same file, even in the same process, conflicts with them.
pub(crate) fn ofd_try_lock(fd: &OwnedFd, at: u64) -> Result<bool, Errno> {
    let fl = one_byte(libc::F_WRLCK, at);
    match nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes a shared OFD lock on the byte at `at` through `fd`'s open file description,
/// without waiting (`Ok(false)`: another description holds it exclusive). Taking it
/// on a description that holds it exclusive turns that lock shared.
pub(crate) fn ofd_try_lock_shared(fd: &OwnedFd, at: u64) -> Result<bool, Errno> {
    let fl = one_byte(libc::F_RDLCK, at);
    match nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases an OFD lock taken by [`ofd_try_lock`] through the same description.
pub(crate) fn ofd_unlock(fd: &OwnedFd, at: u64) {
    let fl = one_byte(libc::F_UNLCK, at);
    let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&fl));
}

/// Whether another open file description holds a lock on the byte at `at`
/// (`F_OFD_GETLK`; locks of `fd`'s own description are not reported).
pub(crate) fn ofd_held(fd: &OwnedFd, at: u64) -> Result<bool, Errno> {
    let mut fl = one_byte(libc::F_WRLCK, at);
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl))?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

fn one_byte(kind: libc::c_int, at: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = at.min(i64::MAX as u64) as libc::off_t;
    fl.l_len = 1;
    fl.l_pid = 0; // required to be 0 for OFD locks
    fl
}

/// Replaces the open file description behind `fd` with a new one of the same file
/// (a forked child's descriptors share their parent's descriptions, and with them
/// its OFD locks: it needs its own).
pub(crate) fn reopen_in_place(fd: &OwnedFd) -> Result<(), Errno> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let new = nix::fcntl::open(
        path.as_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `new` is a descriptor we just opened and own; dup3 makes `fd`'s number
    // refer to its description (closing the old one atomically), then `new` is closed.
    let r = unsafe { libc::dup3(new, fd.as_raw_fd(), libc::O_CLOEXEC) };
    let e = Errno::last();
    // SAFETY: `new` is ours and no longer needed.
    unsafe { libc::close(new) };
    if r < 0 {
        return Err(e);
    }
    Ok(())
}

/// Makes `to` refer to `from`'s open file description (`dup3`), closing what `to`
/// referred to before.
pub(crate) fn share_description(from: &OwnedFd, to: &OwnedFd) -> Result<(), Errno> {
    if from.as_raw_fd() == to.as_raw_fd() {
        return Ok(());
    }
    // SAFETY: both descriptors are open and owned by their handles; dup3 replaces
    // `to`'s number atomically and leaves `from` alone.
    let r = unsafe { libc::dup3(from.as_raw_fd(), to.as_raw_fd(), libc::O_CLOEXEC) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Registers handlers `fork` runs: `prepare` in the forking thread before, `parent`
/// and `child` after, in each process. They must only do what is safe in a child of
/// a multi-threaded process (atomics; no allocation, no locks).
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: registers plain function pointers; their contract is stated above.
    let _ = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// 64 random bits from the kernel (`getrandom`; nix has no wrapper).
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: writes at most `len - got` bytes into the rest of `b`.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if r > 0 {
            got += r as usize;
        } else if Errno::last() != Errno::EINTR {
            // No getrandom (a very old kernel): time and addresses, still distinct
            // enough between processes started apart; documented as a fallback.
            return now_unix_ns() ^ (u64::from(getpid()) << 40) ^ (&b as *const _ as u64);
        }
    }
    u64::from_ne_bytes(b)
}

/// The inode of this process's PID namespace (`/proc/self/ns/pid`), 0 if unknown.
pub(crate) fn pid_namespace() -> u64 {
    nix::sys::stat::stat("/proc/self/ns/pid").map_or(0, |st| st.st_ino)
}
