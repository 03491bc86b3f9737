//! The create/open handshake of a pool's two segments.
//!
//! Create: `NAME_boot` (O_EXCL, 0600 then fchmod) → fields → magic → state CREATING
//! → `NAME` (O_EXCL) → `posix_fallocate` → map → format the heap → base and size →
//! `// SYNC POINT` state READY (Release). Any failure unlinks what was created.
//!
//! Open: wait (sleeping, with backoff, never past the deadline) until `NAME_boot`
//! exists, is one page, carries the magic and is READY; check version and layout
//! hash, owner, file type and the main segment's size against the boot record;
//! map; attach the heap (which validates its own header).

use super::boot::{self, state, BootHeader, BOOT_MAGIC, BOOT_SIZE};
use super::grow::FileGrow;
use crate::error::{CreateError, LayoutId, OpenError};
use crate::liveness;
use crate::name::{boot_name, validate_name};
use crate::options::{Backend, PoolOptions};
use crate::platform::{process_token, LinuxPlatform};
use crate::sys::{self, MapError, Mapping};
use nix::errno::Errno;
use shmval_alloc::{FormatError, Heap, Region, MIN_REGION};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

/// The two mappings of an open pool, the boot segment's descriptor (kept open: it
/// holds this process's liveness lock, see `liveness`) and, for a creator, the
/// attach entry it holds already.
pub(crate) struct Segments {
    /// The directory of the two files.
    pub dir: std::path::PathBuf,
    /// (device, inode) of the boot file this handle mapped: the file at the name
    /// may be replaced later (a cleaner, a restart), and only this one is ours to
    /// remove.
    pub boot_id: (u64, u64),
    /// The main segment, as its backend knows it.
    pub main_kind: MainKind,
    pub boot: Mapping,
    pub boot_fd: std::os::fd::OwnedFd,
    pub main: Mapping,
    pub heap: Heap<LinuxPlatform>,
    pub entry: Option<usize>,
}

/// Where the main segment lives.
#[derive(Debug)]
pub(crate) enum MainKind {
    /// A file in the directory: its (device, inode).
    File((u64, u64)),
    /// A System V segment: its key and id.
    SysV { key: i32, id: i32 },
    /// A memory file: its descriptor (kept to pass the pool on).
    Memfd(OwnedFd),
}

/// The System V key of pool `name` in `dir`: a hash of the two (never
/// `IPC_PRIVATE`, 0). Two names may collide (32 bits): the second create then
/// fails with `AlreadyExists` naming the key.
pub(crate) fn sysv_key(dir: &Path, name: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .chain(b"/")
        .chain(name.as_bytes())
    {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h | 1) as i32
}

/// The header of a mapped boot segment.
pub(crate) fn header(boot: &Mapping) -> &BootHeader {
    debug_assert!(boot.len() >= BOOT_SIZE);
    // SAFETY: every boot mapping is BOOT_SIZE bytes, page-aligned, and BootHeader is
    // made of atomics only, so any bytes are a valid value and sharing is sound.
    unsafe { &*(boot.ptr().as_ptr() as *const BootHeader) }
}

/// Unlinks the segments it names (in its directory) when dropped, unless disarmed.
struct Unlinker<'a>(&'a Path, Vec<String>, Option<i32>);

impl Drop for Unlinker<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.2 {
            let _ = sys::sysv::remove(id);
        }
        for n in &self.1 {
            let _ = sys::seg_unlink(self.0, n);
        }
    }
}

fn no_space(dir: &Path, requested: u64) -> CreateError {
    CreateError::NoSpace {
        requested,
        available: sys::space_available(dir).unwrap_or(0),
        dir: dir.display().to_string(),
    }
}

fn create_errno(e: Errno, dir: &Path, segment: &str, op: &'static str) -> CreateError {
    let path = || dir.join(segment).display().to_string();
    match e {
        Errno::EEXIST => CreateError::AlreadyExists { segment: path() },
        Errno::EACCES | Errno::EPERM => CreateError::PermissionDenied { segment: path() },
        Errno::ENOSPC | Errno::EFBIG | Errno::ENOMEM => no_space(dir, 0),
        errno => CreateError::Os {
            op,
            source: errno.into(),
        },
    }
}

/// `posix_fallocate` of the whole file (retried on EINTR): every page gets its
/// storage now, so a full file system is an error here and never a SIGBUS at a
/// later store.
fn reserve(fd: &OwnedFd, len: u64) -> Result<(), Errno> {
    loop {
        match sys::reserve(fd, len) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

pub(crate) fn create(name: &str, size: u64, opts: &PoolOptions) -> Result<Segments, CreateError> {
    validate_name(name)?;
    let max = shmval_alloc::MAX_REGION_BYTES;
    if size < MIN_REGION as u64 || size > max {
        return Err(CreateError::InvalidSize {
            size,
            min: MIN_REGION as u64,
            max,
        });
    }
    let size = size.next_multiple_of(4096);
    let max_size = match opts.max_size {
        None => size,
        Some(m) => {
            let m = m.next_multiple_of(4096);
            if m > max {
                return Err(CreateError::InvalidSize {
                    size: m,
                    min: MIN_REGION as u64,
                    max,
                });
            }
            if m < size || (m > size && *opts.get_backend() == Backend::SysV) {
                return Err(CreateError::GrowthUnsupported {
                    size,
                    max: m,
                    backend: opts.get_backend().name(),
                });
            }
            m
        }
    };
    let requested = size + BOOT_SIZE as u64;
    let dir = opts.get_dir();
    let dir = dir.as_path();
    if max_size > size && sys::block_size(dir).is_some_and(|b| b > 4096) {
        // hugetlbfs: extensions and mappings would need huge-page alignment.
        return Err(CreateError::GrowthUnsupported {
            size,
            max: max_size,
            backend: "file (huge pages)",
        });
    }
    if let Some(available) = sys::space_available(dir) {
        if requested > available {
            return Err(CreateError::NoSpace {
                requested,
                available,
                dir: dir.display().to_string(),
            });
        }
    }
    let bname = boot_name(name);
    let memfd = *opts.get_backend() == Backend::Memfd;
    let boot_fd = if memfd {
        sys::memfd(&bname).map_err(|e| create_errno(e, dir, &bname, "memfd_create"))?
    } else {
        sys::seg_create(dir, &bname, opts.mode).map_err(|e| create_errno(e, dir, &bname, "open"))?
    };
    let mut cleanup = Unlinker(dir, if memfd { vec![] } else { vec![bname.clone()] }, None);
    // Storage for the boot page before its first store (a full tmpfs would SIGBUS
    // it): reserving sets the size too.
    reserve(&boot_fd, BOOT_SIZE as u64).map_err(|e| match e {
        Errno::ENOSPC | Errno::EFBIG | Errno::ENOMEM => no_space(dir, requested),
        e => create_errno(e, dir, &bname, "posix_fallocate"),
    })?;
    let boot_map = Mapping::new(&boot_fd, BOOT_SIZE, None).map_err(|e| match e {
        MapError::Os(errno) => CreateError::Os {
            op: "mmap",
            source: errno.into(),
        },
        MapError::AddressInUse(_) => unreachable!("no fixed address requested"),
    })?;
    let b = header(&boot_map);
    let token = process_token();
    // The creator attaches first, so that an opener finding the pool half made can
    // tell whether its creator lives (its entry's lock).
    let entry = match liveness::claim_entry(b, &boot_fd, token) {
        Ok(Some(e)) => e,
        Ok(None) => {
            return Err(CreateError::Os {
                op: "fcntl",
                source: Errno::ENOLCK.into(),
            })
        }
        Err(errno) => {
            return Err(CreateError::Os {
                op: "fcntl",
                source: errno.into(),
            })
        }
    };
    b.creator_token.store(token, Relaxed);
    b.creator_pid.store(sys::getpid(), Relaxed);
    b.creator_uid.store(sys::euid(), Relaxed);
    b.creator_start
        .store(sys::proc_stat(sys::getpid()).map_or(0, |(s, _)| s), Relaxed);
    b.created_ns.store(sys::now_unix_ns(), Relaxed);
    b.backend.store(
        match opts.get_backend() {
            Backend::Posix => boot::backend::POSIX_SHM,
            Backend::File(_) => boot::backend::FILE,
            Backend::SysV => boot::backend::SYSV,
            Backend::Memfd => boot::backend::MEMFD,
        },
        Relaxed,
    );
    b.generation.store(
        sys::now_unix_ns() ^ (token << 16) ^ (&boot_map as *const _ as u64),
        Relaxed,
    );
    b.version.store(boot::LAYOUT_VERSION, Relaxed);
    b.layout_hash.store(boot::layout_hash(), Relaxed);
    b.magic.store(BOOT_MAGIC, Relaxed);
    b.state.store(state::CREATING, Release);

    b.main_size.store(size, Relaxed);
    b.max_size.store(max_size, Relaxed);
    let (main_map, main_kind, grow_fd) =
        create_main(name, size, max_size, requested, opts, dir, &mut cleanup)?;
    if let MainKind::SysV { key, id } = main_kind {
        b.backend_arg
            .store(u64::from(key as u32) << 32 | u64::from(id as u32), Relaxed);
    }
    if memfd {
        // Nobody can truncate either under the others' mappings.
        sys::seal_size(&boot_fd).map_err(|errno| CreateError::Os {
            op: "fcntl(F_ADD_SEALS)",
            source: errno.into(),
        })?;
    }
    let growth = FileGrow::growth(grow_fd, main_map.ptr(), max_size, size, &b.main_size);
    // SAFETY: `size` bytes are mapped at the start of a reservation of `max_size`,
    // page-aligned, which lives as long as the heap (both are kept in `Segments`);
    // nobody else can use it before READY.
    let heap = unsafe { Heap::format_growable(Region::new(main_map.ptr(), size as usize), growth) }
        .map_err(|_| CreateError::InvalidSize {
            size,
            min: MIN_REGION as u64,
            max,
        })?;
    b.base_address
        .store(main_map.ptr().as_ptr() as u64, Relaxed);
    b.flags.store(
        if opts.fixed_base.is_some() {
            boot::flags::FIXED_BASE
        } else {
            0
        },
        Relaxed,
    );
    // SYNC POINT: everything above is visible to an opener that sees READY (Acquire).
    b.state.store(state::READY, Release);
    cleanup.1.clear();
    cleanup.2 = None;
    let boot_id = sys::file_id(&boot_fd).map_err(|errno| CreateError::Os {
        op: "fstat",
        source: errno.into(),
    })?;
    Ok(Segments {
        dir: dir.to_owned(),
        boot_id,
        main_kind,
        boot: boot_map,
        boot_fd,
        main: main_map,
        heap,
        entry: Some(entry),
    })
}

/// Makes, reserves and maps the main segment of `size` bytes for the backend
/// `opts` names (its undo registered in `cleanup`).
/// A pool that grows (`max > size`) gets its mapping as a reservation of `max`
/// bytes and a descriptor of the main segment for its grower.
fn create_main(
    name: &str,
    size: u64,
    max: u64,
    requested: u64,
    opts: &PoolOptions,
    dir: &Path,
    cleanup: &mut Unlinker<'_>,
) -> Result<(Mapping, MainKind, Option<OwnedFd>), CreateError> {
    let grows = max > size;
    let map_err = |e| match e {
        MapError::AddressInUse(conflict) => CreateError::AddressInUse {
            addr: opts.fixed_base.unwrap_or(0),
            len: size as usize,
            conflict,
        },
        MapError::Os(Errno::ENOMEM) => no_space(dir, requested),
        MapError::Os(errno) => CreateError::Os {
            op: "mmap",
            source: errno.into(),
        },
    };
    let reserved = |fd: &OwnedFd| match reserve(fd, size) {
        Ok(()) => Ok(()),
        Err(Errno::ENOSPC | Errno::EFBIG | Errno::ENOMEM) => Err(no_space(dir, requested)),
        Err(errno) => Err(CreateError::Os {
            op: "posix_fallocate",
            source: errno.into(),
        }),
    };
    match opts.get_backend() {
        Backend::Posix | Backend::File(_) => {
            let fd = sys::seg_create(dir, name, opts.mode)
                .map_err(|e| create_errno(e, dir, name, "open"))?;
            cleanup.1.push(name.to_owned());
            reserved(&fd)?;
            let m = map_main(&fd, size, max, opts.fixed_base).map_err(map_err)?;
            let id = sys::file_id(&fd).map_err(|errno| CreateError::Os {
                op: "fstat",
                source: errno.into(),
            })?;
            Ok((m, MainKind::File(id), grows.then_some(fd)))
        }
        Backend::Memfd => {
            let fd = sys::memfd(name).map_err(|e| create_errno(e, dir, name, "memfd_create"))?;
            sys::set_len(&fd, size).map_err(|errno| CreateError::Os {
                op: "ftruncate",
                source: errno.into(),
            })?;
            reserved(&fd)?;
            // A pool that grows is sealed against shrinking only.
            let seal = if grows {
                sys::seal_shrink
            } else {
                sys::seal_size
            };
            seal(&fd).map_err(|errno| CreateError::Os {
                op: "fcntl(F_ADD_SEALS)",
                source: errno.into(),
            })?;
            let m = map_main(&fd, size, max, opts.fixed_base).map_err(map_err)?;
            let grow_fd = match grows {
                true => Some(fd.try_clone().map_err(|e| CreateError::Os {
                    op: "dup",
                    source: e,
                })?),
                false => None,
            };
            Ok((m, MainKind::Memfd(fd), grow_fd))
        }
        Backend::SysV => {
            let key = sysv_key(dir, name);
            let id = sys::sysv::create(key, size, opts.mode).map_err(|e| match e {
                Errno::EEXIST => CreateError::AlreadyExists {
                    segment: format!("System V shared memory key {key:#010x} (ipcs -m)"),
                },
                Errno::ENOSPC | Errno::ENOMEM => no_space(dir, requested),
                Errno::EINVAL => CreateError::Os {
                    op: "shmget (a size above kernel.shmmax?)",
                    source: e.into(),
                },
                e => CreateError::Os {
                    op: "shmget",
                    source: e.into(),
                },
            })?;
            cleanup.2 = Some(id);
            let m = sys::sysv::attach(id, size as usize, opts.fixed_base, false).map_err(|e| {
                if opts.fixed_base.is_some() && e == Errno::EINVAL {
                    map_err(MapError::AddressInUse(
                        "another mapping (shmat refused)".into(),
                    ))
                } else {
                    map_err(MapError::Os(e))
                }
            })?;
            // No file to fallocate: the pages are made present now.
            sys::populate(&m).map_err(|_| no_space(dir, requested))?;
            Ok((m, MainKind::SysV { key, id }, None))
        }
    }
}

/// Maps `size` bytes of a main segment: alone, or at the start of a reservation
/// of `max` bytes for a pool that grows.
fn map_main(fd: &OwnedFd, size: u64, max: u64, fixed: Option<usize>) -> Result<Mapping, MapError> {
    if max > size {
        Mapping::reserved(fd, size as usize, max as usize, fixed)
    } else {
        Mapping::new(fd, size as usize, fixed)
    }
}

/// An open attempt that may succeed if tried again later.
enum Attempt {
    Retry(&'static str),
    Fail(OpenError),
}

impl From<OpenError> for Attempt {
    fn from(e: OpenError) -> Self {
        Attempt::Fail(e)
    }
}

pub(crate) fn open(name: &str, opts: &PoolOptions) -> Result<Segments, OpenError> {
    validate_name(name)?;
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let mut delay = Duration::from_micros(500);
    loop {
        let last = match try_open(name, opts) {
            Ok(s) => return Ok(s),
            Err(Attempt::Fail(e)) => return Err(e),
            Err(Attempt::Retry(state)) => state,
        };
        let now = Instant::now();
        if now >= deadline {
            if opts.timeout.is_zero() && last == NO_SUCH_POOL {
                return Err(OpenError::NotFound {
                    name: name.to_owned(),
                });
            }
            return Err(OpenError::Timeout {
                name: name.to_owned(),
                waited: now - start,
                state: last,
            });
        }
        std::thread::sleep(delay.min(deadline - now));
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

const NO_SUCH_POOL: &str = "no such pool";

fn corrupt(name: &str, what: impl Into<String>) -> Attempt {
    Attempt::Fail(OpenError::Corrupt {
        name: name.to_owned(),
        what: what.into(),
    })
}

fn open_errno(e: Errno, name: &str, segment: &str) -> Attempt {
    match e {
        Errno::ENOENT => Attempt::Retry(NO_SUCH_POOL),
        Errno::EACCES | Errno::EPERM => Attempt::Fail(OpenError::PermissionDenied {
            segment: segment.to_owned(),
        }),
        errno => {
            let _ = name;
            Attempt::Fail(OpenError::Os {
                op: "shm_open",
                source: errno.into(),
            })
        }
    }
}

fn check_file(
    name: &str,
    info: &sys::FileInfo,
    what: &str,
    opts: &PoolOptions,
) -> Result<(), Attempt> {
    if !info.regular {
        return Err(corrupt(name, format!("{what} is not a regular file")));
    }
    let ours = sys::euid();
    if info.uid != ours && !opts.allow_foreign_owner {
        return Err(Attempt::Fail(OpenError::ForeignOwner {
            name: name.to_owned(),
            owner: info.uid,
            ours,
        }));
    }
    Ok(())
}

fn try_open(name: &str, opts: &PoolOptions) -> Result<Segments, Attempt> {
    let bname = boot_name(name);
    let dir = opts.get_dir();
    let dir = dir.as_path();
    let boot_fd = sys::seg_open(dir, &bname).map_err(|e| open_errno(e, name, &bname))?;
    finish_open(name, opts, dir, boot_fd, None)
}

/// Opens an anonymous (memfd) pool from its two descriptors (received over a
/// socket): the boot descriptor gets an open file description of its own (the
/// liveness locks belong to descriptions, and a passed descriptor shares the
/// sender's), then the open proceeds as for a pool found by name.
pub(crate) fn open_fds(
    name: &str,
    boot_fd: OwnedFd,
    main_fd: OwnedFd,
    opts: &PoolOptions,
) -> Result<Segments, OpenError> {
    validate_name(name)?;
    sys::reopen_in_place(&boot_fd).map_err(|errno| OpenError::Os {
        op: "open(/proc/self/fd)",
        source: errno.into(),
    })?;
    let dir = opts.get_dir();
    match finish_open(name, opts, &dir, boot_fd, Some(main_fd)) {
        Ok(s) => Ok(s),
        Err(Attempt::Fail(e)) => Err(e),
        Err(Attempt::Retry(state)) => Err(OpenError::Timeout {
            name: name.to_owned(),
            waited: Duration::ZERO,
            state,
        }),
    }
}

fn finish_open(
    name: &str,
    opts: &PoolOptions,
    dir: &Path,
    boot_fd: OwnedFd,
    memfd_main: Option<OwnedFd>,
) -> Result<Segments, Attempt> {
    let info = sys::file_info(&boot_fd).map_err(|errno| OpenError::Os {
        op: "fstat",
        source: errno.into(),
    })?;
    check_file(name, &info, "the boot segment", opts)?;
    if info.size == 0 {
        return Err(Attempt::Retry("being created (boot segment empty)"));
    }
    if info.size != BOOT_SIZE as u64 {
        return Err(corrupt(
            name,
            format!(
                "boot segment is {} bytes, expected {BOOT_SIZE}: not a shmval pool",
                info.size
            ),
        ));
    }
    let boot_map = Mapping::new(&boot_fd, BOOT_SIZE, None).map_err(|e| match e {
        MapError::Os(errno) => OpenError::Os {
            op: "mmap",
            source: errno.into(),
        },
        MapError::AddressInUse(_) => unreachable!("no fixed address requested"),
    })?;
    let b = header(&boot_map);
    let magic = b.magic.load(Acquire);
    if magic == 0 {
        return Err(Attempt::Retry("being created (boot header not written)"));
    }
    if magic != BOOT_MAGIC {
        return Err(corrupt(
            name,
            format!("boot segment magic {magic:#018x} is not shmval's: not a shmval pool"),
        ));
    }
    let found = LayoutId {
        version: b.version.load(Relaxed),
        hash: b.layout_hash.load(Relaxed),
    };
    if found != boot::layout_id() {
        return Err(Attempt::Fail(OpenError::Incompatible {
            name: name.to_owned(),
            expected: boot::layout_id(),
            found,
        }));
    }
    match b.state.load(Acquire) {
        state::READY => {}
        state::CREATING | 0 => {
            let pid = b.creator_pid.load(Relaxed);
            let token = b.creator_token.load(Relaxed);
            if token != 0 && !liveness::alive_in(b, &boot_fd, token) {
                return Err(Attempt::Fail(OpenError::CreatorDied {
                    name: name.to_owned(),
                    pid,
                }));
            }
            return Err(Attempt::Retry("being created"));
        }
        state::CLOSING => return Err(Attempt::Retry("being destroyed")),
        s => return Err(corrupt(name, format!("unknown pool state {s}"))),
    }
    let size = b.main_size.load(Relaxed);
    let max_size = b.max_size.load(Relaxed);
    let base = b.base_address.load(Relaxed);
    let fixed = b.flags.load(Relaxed) & boot::flags::FIXED_BASE != 0;
    if size < MIN_REGION as u64
        || max_size < size
        || max_size > shmval_alloc::MAX_REGION_BYTES
        || size % 4096 != 0
        || max_size % 4096 != 0
    {
        return Err(corrupt(
            name,
            format!("the boot record's size {size} (at most {max_size}) is impossible"),
        ));
    }
    let grows = max_size > size;
    let map_err = |e| match e {
        MapError::AddressInUse(conflict) => Attempt::Fail(OpenError::AddressInUse {
            name: name.to_owned(),
            addr: base as usize,
            conflict,
        }),
        MapError::Os(errno) => Attempt::Fail(OpenError::Os {
            op: "mmap",
            source: errno.into(),
        }),
    };
    let at = fixed.then_some(base as usize);
    let (main_map, main_kind, len, grow_fd) = match b.backend.load(Relaxed) {
        boot::backend::POSIX_SHM | boot::backend::FILE => {
            let main_fd = sys::seg_open(dir, name).map_err(|e| match e {
                Errno::ENOENT => corrupt(name, "the main segment is missing"),
                e => open_errno(e, name, name),
            })?;
            let len = open_main_fd(name, opts, dir, &main_fd, size, max_size)?;
            let m = map_main(&main_fd, len, max_size, at).map_err(map_err)?;
            let id = sys::file_id(&main_fd).map_err(|errno| OpenError::Os {
                op: "fstat",
                source: errno.into(),
            })?;
            (m, MainKind::File(id), len, grows.then_some(main_fd))
        }
        boot::backend::MEMFD => {
            let Some(main_fd) = memfd_main else {
                return Err(corrupt(
                    name,
                    "an anonymous (memfd) pool is opened from its descriptors (Pool::receive)",
                ));
            };
            let len = open_main_fd(name, opts, dir, &main_fd, size, max_size)?;
            let m = map_main(&main_fd, len, max_size, at).map_err(map_err)?;
            let grow_fd = match grows {
                true => Some(main_fd.try_clone().map_err(|e| OpenError::Os {
                    op: "dup",
                    source: e,
                })?),
                false => None,
            };
            (m, MainKind::Memfd(main_fd), len, grow_fd)
        }
        boot::backend::SYSV if grows => {
            return Err(corrupt(name, "a System V pool that grows"));
        }
        boot::backend::SYSV => {
            let arg = b.backend_arg.load(Relaxed);
            let (key, id) = ((arg >> 32) as u32 as i32, arg as u32 as i32);
            match sys::sysv::get(key) {
                Ok(found) if found == id => {}
                Ok(_) => {
                    return Err(corrupt(
                        name,
                        format!("System V key {key:#010x} names another segment now"),
                    ))
                }
                Err(Errno::ENOENT) => {
                    return Err(corrupt(
                        name,
                        format!("its System V segment (key {key:#010x}) is gone"),
                    ))
                }
                Err(e) => return Err(open_errno(e, name, &format!("System V key {key:#010x}"))),
            }
            let st = sys::sysv::stat(id).map_err(|e| open_errno(e, name, "System V segment"))?;
            if st.size != size {
                return Err(corrupt(
                    name,
                    format!(
                        "System V segment is {} bytes, the boot record says {size}",
                        st.size
                    ),
                ));
            }
            let ours = sys::euid();
            if st.uid != ours && !opts.allow_foreign_owner {
                return Err(Attempt::Fail(OpenError::ForeignOwner {
                    name: name.to_owned(),
                    owner: st.uid,
                    ours,
                }));
            }
            let m = sys::sysv::attach(id, size as usize, at, false).map_err(|e| match e {
                Errno::EACCES => Attempt::Fail(OpenError::PermissionDenied {
                    segment: format!("System V key {key:#010x}"),
                }),
                Errno::EINVAL if fixed => map_err(MapError::AddressInUse("another mapping".into())),
                e => map_err(MapError::Os(e)),
            })?;
            (m, MainKind::SysV { key, id }, size, None)
        }
        _ => return Err(corrupt(name, "unknown backend")),
    };
    let growth = FileGrow::growth(grow_fd, main_map.ptr(), max_size, len, &b.main_size);
    // SAFETY: `len` bytes mapped, page-aligned, at the start of a reservation of
    // `max_size` (a pool that grows), kept alive with the heap in `Segments`; the
    // length was checked against fstat so no access faults.
    let heap = unsafe { Heap::attach_growable(Region::new(main_map.ptr(), len as usize), growth) }
        .map_err(|e| match e {
            FormatError::Incompatible { .. } => Attempt::Fail(OpenError::Incompatible {
                name: name.to_owned(),
                expected: boot::layout_id(),
                found: LayoutId {
                    version: 0,
                    hash: 0,
                },
            }),
            e => corrupt(name, format!("main segment: {e}")),
        })?;
    let boot_id = sys::file_id(&boot_fd).map_err(|errno| OpenError::Os {
        op: "fstat",
        source: errno.into(),
    })?;
    Ok(Segments {
        dir: dir.to_owned(),
        boot_id,
        main_kind,
        boot: boot_map,
        boot_fd,
        main: main_map,
        heap,
        entry: None,
    })
}

/// Checks a main segment's descriptor (owner, type, size) and fills a sparse one's
/// holes (or refuses it); returns the bytes to map. A pool that grows (`max >
/// size`) may have a file longer than the boot record says (another process grew
/// it since), up to `max`.
fn open_main_fd(
    name: &str,
    opts: &PoolOptions,
    dir: &Path,
    main_fd: &OwnedFd,
    size: u64,
    max: u64,
) -> Result<u64, Attempt> {
    let info = sys::file_info(main_fd).map_err(|errno| OpenError::Os {
        op: "fstat",
        source: errno.into(),
    })?;
    check_file(name, &info, "the main segment", opts)?;
    let fits = if max > size {
        (size..=max).contains(&info.size)
    } else {
        info.size == size
    };
    if !fits {
        return Err(corrupt(
            name,
            format!(
                "main segment is {} bytes, the boot record says {size} (at most {max})",
                info.size
            ),
        ));
    }
    let size = info.size & !4095;
    // A main segment with holes (copied or restored sparse) would take storage at
    // first store, and SIGBUS if the file system is full then: fill them now, or
    // refuse.
    if info.allocated < size {
        reserve(main_fd, size).map_err(|e| match e {
            Errno::ENOSPC | Errno::EFBIG | Errno::ENOMEM => OpenError::NoSpace {
                name: name.to_owned(),
                requested: size - info.allocated,
                available: sys::space_available(dir).unwrap_or(0),
            },
            errno => OpenError::Os {
                op: "posix_fallocate",
                source: errno.into(),
            },
        })?;
    }
    Ok(size)
}
