//! What the operator's tool (`shmval info`, `clean`, `create`, `destroy`) knows
//! about the pools of a directory — read without attaching: a listing changes
//! nothing (no attach entry claimed, no recovery run, no lock taken), so it can be
//! run beside working processes, on pools of other users, and on pools this build
//! cannot open (an incompatible layout is listed as such, not an error).
//!
//! Segments are opened read-only and mapped private (a stray store could never
//! reach the shared pages); liveness is read from the attach entries' locks
//! (`F_OFD_GETLK`, which needs no write access).

use crate::name::{boot_name, validate_name, BOOT_SUFFIX};
use crate::segment::boot::{self, state, BootHeader, BOOT_MAGIC, BOOT_SIZE};
use crate::sys;
use serde::Serialize;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Acquire, Relaxed};

/// The file system the pools live in.
#[derive(Debug, Clone, Serialize)]
pub struct FsInfo {
    /// The directory.
    pub dir: PathBuf,
    /// Its file system's size in bytes.
    pub size: u64,
    /// Bytes free for unprivileged users.
    pub free: u64,
}

/// One pool as the tool sees it without attaching.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSummary {
    /// The pool's name.
    pub name: String,
    /// `ready`, `creating`, `closing`, `incompatible` (made by another layout
    /// version), `corrupt` or `unreadable` (see `problem`).
    pub state: &'static str,
    /// What is wrong, for a pool that is not `ready`.
    pub problem: Option<String>,
    /// Bytes of the two files (main + boot).
    pub file_size: u64,
    /// Bytes of storage they take (`st_blocks`: the files may be sparse).
    pub allocated: u64,
    /// The pool's size (its main segment).
    pub size: u64,
    /// Most bytes it may grow to (its size, for a pool that does not grow).
    pub max_size: u64,
    /// Bytes handed out by the allocator (values, the processes' reference ledgers,
    /// the users' own blocks).
    pub used: Option<u64>,
    /// `used` in percent of the arena.
    pub used_pct: Option<f64>,
    /// Peak of the large-block heap's use (slabs included).
    pub high_water: Option<u64>,
    /// The creator's pid (in its PID namespace); `"creator"` in JSON.
    #[serde(rename = "creator")]
    pub creator_pid: u32,
    /// Whether the creator is attached and alive.
    pub creator_alive: bool,
    /// Creator dead and no live process attached: `shmval clean` removes it.
    pub orphaned: bool,
    /// Live attached processes.
    pub attached_count: usize,
    /// Their pids (each in its own PID namespace).
    pub attached: Vec<u32>,
    /// Entries of processes that died attached, not yet reclaimed by an opener.
    pub dead: usize,
    /// Named pipes.
    pub pipes: Option<u64>,
    /// Named broadcasts.
    pub broadcasts: Option<u64>,
    /// Owner of the files.
    pub uid: u32,
    /// Their group.
    pub gid: u32,
    /// The owner's name, if known here.
    pub user: Option<String>,
    /// The group's name, if known here.
    pub group: Option<String>,
    /// Permission bits, octal (`"0600"`).
    pub mode: String,
    /// Creation time, RFC 3339 UTC.
    pub created: Option<String>,
    /// Where its memory lives: `posix`, `file`, `sysv` (its key in
    /// `sysv_key`, as `ipcs -m` shows it), `memfd`.
    pub backend: &'static str,
    /// A System V pool's key.
    pub sysv_key: Option<String>,
    /// The layout version that made it.
    pub layout_version: u32,
    /// Whether this build can open it.
    pub compatible: bool,
}

/// A file of the directory that is not a shmval pool's (with `--all`).
#[derive(Debug, Clone, Serialize)]
pub struct OtherFile {
    /// Its name.
    pub name: String,
    /// Always `"other"`.
    pub kind: &'static str,
    /// Bytes.
    pub size: u64,
    /// Bytes of storage.
    pub allocated: u64,
    /// Owner.
    pub uid: u32,
    /// The owner's name, if known here.
    pub user: Option<String>,
    /// Permission bits, octal.
    pub mode: String,
}

/// A pool whose files were unlinked while processes still map it (a cleaner, a
/// stray `rm`): found in `/proc/*/maps` as `DIR/NAME (deleted)`.
#[derive(Debug, Clone, Serialize)]
pub struct UnlinkedPool {
    /// The pool's name.
    pub name: String,
    /// Processes that still map it.
    pub pids: Vec<u32>,
}

/// Everything `shmval info` lists.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The file system.
    pub fs: FsInfo,
    /// The pools, by name.
    pub pools: Vec<PoolSummary>,
    /// Other files (only when asked for).
    pub other: Vec<OtherFile>,
    /// Pools unlinked under the processes that map them.
    pub unlinked: Vec<UnlinkedPool>,
    /// What could remove pools or keep them from fitting, with the fix.
    pub warnings: Vec<String>,
}

/// Why a pool could not be looked at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// No such pool in the directory.
    #[error("no pool named {0:?} here")]
    NotFound(String),
    /// The name is not a pool name.
    #[error(transparent)]
    Name(#[from] crate::NameError),
}

/// The file system of `dir`.
pub fn fs_info(dir: &Path) -> FsInfo {
    let (size, free) = sys::space(dir).unwrap_or((0, 0));
    FsInfo {
        dir: dir.to_owned(),
        size,
        free,
    }
}

/// The pools of `dir` (and, with `all`, every other file there).
///
/// # Errors
/// The directory cannot be read.
pub fn list(dir: &Path, all: bool) -> std::io::Result<Listing> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut pools = Vec::new();
    let mut other = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for n in &names {
        if let Some(pool) = n.strip_suffix(BOOT_SUFFIX) {
            if validate_name(pool).is_ok() {
                pools.push(summary(dir, pool));
                taken.insert(n.clone());
                taken.insert(pool.to_owned());
            }
        }
    }
    if all {
        for n in names.iter().filter(|n| !taken.contains(*n)) {
            if let Ok(st) = nix::sys::stat::lstat(&dir.join(n)) {
                other.push(OtherFile {
                    name: n.clone(),
                    kind: "other",
                    size: st.st_size as u64,
                    allocated: st.st_blocks as u64 * 512,
                    uid: st.st_uid,
                    user: user_name(st.st_uid),
                    mode: format!("{:04o}", st.st_mode & 0o7777),
                });
            }
        }
    }
    let fs = fs_info(dir);
    let warnings = warnings(&fs, &pools);
    Ok(Listing {
        fs,
        pools,
        other,
        unlinked: unlinked_in_use(dir),
        warnings,
    })
}

/// Pools of `dir` whose files are gone while processes still map them.
pub fn unlinked_in_use(dir: &Path) -> Vec<UnlinkedPool> {
    let mut found: std::collections::BTreeMap<String, std::collections::BTreeSet<u32>> =
        Default::default();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let prefix = format!("{}/", dir.display());
    for p in procs.filter_map(|e| e.ok()) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(maps) = std::fs::read_to_string(p.path().join("maps")) else {
            continue;
        };
        for line in maps.lines() {
            let Some(path) = line.split_once('/').map(|(_, rest)| format!("/{rest}")) else {
                continue;
            };
            let Some(file) = path
                .strip_suffix(" (deleted)")
                .and_then(|p| p.strip_prefix(&prefix))
            else {
                continue;
            };
            if let Some(pool) = file.strip_suffix(BOOT_SUFFIX) {
                if validate_name(pool).is_ok() {
                    found.entry(pool.to_owned()).or_default().insert(pid);
                }
            }
        }
    }
    found
        .into_iter()
        .map(|(name, pids)| UnlinkedPool {
            name,
            pids: pids.into_iter().collect(),
        })
        .collect()
}

/// The effective `RemoveIPC` of systemd-logind here (`None`: no logind), from
/// `logind.conf` and its drop-in directories (the last setting wins; the default
/// is yes).
pub fn remove_ipc() -> Option<bool> {
    remove_ipc_under(Path::new("/"))
}

/// [`remove_ipc`] for a system whose root is `root` (tests).
pub fn remove_ipc_under(root: &Path) -> Option<bool> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let logind = [
        "/lib/systemd/systemd-logind",
        "/usr/lib/systemd/systemd-logind",
    ]
    .iter()
    .any(|p| at(p).exists());
    if !logind {
        return None;
    }
    let mut files = vec![at("/etc/systemd/logind.conf")];
    for d in [
        "/usr/lib/systemd/logind.conf.d",
        "/run/systemd/logind.conf.d",
        "/etc/systemd/logind.conf.d",
    ] {
        if let Ok(rd) = std::fs::read_dir(at(d)) {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| Some(e.ok()?.path())).collect();
            v.sort();
            files.extend(v);
        }
    }
    let mut on = true;
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            if let Some(v) = line.trim().strip_prefix("RemoveIPC=") {
                on = matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "yes" | "true" | "1" | "on"
                );
            }
        }
    }
    Some(on)
}

/// What could remove pools or keep them from fitting, with the fix.
fn warnings(fs: &FsInfo, pools: &[PoolSummary]) -> Vec<String> {
    let mut w = Vec::new();
    // logind removes the System V and POSIX IPC of a *regular* user at their last
    // logout (system users, uid < 1000, and root are left alone).
    let regular: Vec<&str> = pools
        .iter()
        .filter(|p| p.uid >= 1000)
        .map(|p| p.name.as_str())
        .collect();
    if remove_ipc() == Some(true) {
        w.push(format!(
            "systemd-logind has RemoveIPC=yes: a regular user's pools are deleted when that \
             user's last session ends{}. Set RemoveIPC=no in /etc/systemd/logind.conf (then \
             `systemctl restart systemd-logind`), or run the processes as a system user",
            if regular.is_empty() {
                String::new()
            } else {
                format!(" (here: {})", regular.join(", "))
            }
        ));
    }
    const DOCKER_DEFAULT: u64 = 64 << 20;
    if fs.size > 0 && fs.size <= DOCKER_DEFAULT {
        w.push(format!(
            "{} is only {} MiB (Docker's default /dev/shm is 64 MB): pools larger than its \
             free space cannot be created. Give the container more (`docker run \
             --shm-size=1g`; Kubernetes: an emptyDir with medium: Memory), or put pools in a \
             larger directory (--dir, $SHMVAL_DIR)",
            fs.dir.display(),
            fs.size >> 20
        ));
    }
    w
}

/// One pool of `dir`, in full.
///
/// # Errors
/// [`InspectError::NotFound`] when `dir` holds no boot segment of that name.
pub fn inspect(dir: &Path, name: &str) -> Result<PoolSummary, InspectError> {
    validate_name(name)?;
    if sys::path_id(dir, &boot_name(name)).is_none() {
        return Err(InspectError::NotFound(name.to_owned()));
    }
    Ok(summary(dir, name))
}

fn open_ro(dir: &Path, name: &str) -> Result<OwnedFd, nix::errno::Errno> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open(
        &dir.join(name),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn summary(dir: &Path, name: &str) -> PoolSummary {
    let bname = boot_name(name);
    let mut s = PoolSummary {
        name: name.to_owned(),
        state: "unreadable",
        problem: None,
        file_size: 0,
        allocated: 0,
        size: 0,
        max_size: 0,
        used: None,
        used_pct: None,
        high_water: None,
        creator_pid: 0,
        creator_alive: false,
        orphaned: false,
        attached_count: 0,
        attached: Vec::new(),
        dead: 0,
        pipes: None,
        broadcasts: None,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        mode: String::new(),
        created: None,
        backend: "posix",
        sysv_key: None,
        layout_version: 0,
        compatible: false,
    };
    for n in [name, bname.as_str()] {
        if let Ok(st) = nix::sys::stat::lstat(&dir.join(n)) {
            s.file_size += st.st_size as u64;
            s.allocated += st.st_blocks as u64 * 512;
            if n == name || s.mode.is_empty() {
                s.uid = st.st_uid;
                s.gid = st.st_gid;
                s.mode = format!("{:04o}", st.st_mode & 0o7777);
            }
        }
    }
    s.user = user_name(s.uid);
    s.group = group_name(s.gid);
    let boot_fd = match open_ro(dir, &bname) {
        Ok(fd) => fd,
        Err(e) => {
            s.problem = Some(format!("cannot open the boot segment: {}", e.desc()));
            return s;
        }
    };
    match sys::file_info(&boot_fd) {
        Ok(i) if i.regular && i.size == BOOT_SIZE as u64 => {}
        Ok(i) if i.size == 0 => {
            s.state = "creating";
            return s;
        }
        _ => {
            s.state = "corrupt";
            s.problem = Some("the boot segment is not a shmval boot segment".into());
            return s;
        }
    }
    let Ok(boot_map) = sys::Mapping::private(&boot_fd, BOOT_SIZE) else {
        s.problem = Some("cannot map the boot segment".into());
        return s;
    };
    // SAFETY: a mapping of BOOT_SIZE bytes, page aligned; BootHeader is atomics only.
    let b = unsafe { &*(boot_map.ptr().as_ptr() as *const BootHeader) };
    if b.magic.load(Acquire) != BOOT_MAGIC {
        s.state = if b.magic.load(Acquire) == 0 {
            "creating"
        } else {
            "corrupt"
        };
        if s.state == "corrupt" {
            s.problem = Some("the boot segment's magic is not shmval's".into());
        }
        return s;
    }
    s.layout_version = b.version.load(Relaxed);
    s.backend = boot::backend::name(b.backend.load(Relaxed));
    let sysv = (b.backend.load(Relaxed) == boot::backend::SYSV).then(|| {
        let arg = b.backend_arg.load(Relaxed);
        ((arg >> 32) as u32 as i32, arg as u32 as i32)
    });
    if let Some((key, id)) = sysv {
        s.sysv_key = Some(format!("{key:#010x}"));
        if let Ok(st) = sys::sysv::stat(id) {
            s.file_size += st.size;
            s.allocated += st.size;
        }
    }
    s.size = b.main_size.load(Relaxed);
    s.max_size = b.max_size.load(Relaxed).max(s.size);
    s.creator_pid = b.creator_pid.load(Relaxed);
    s.created = Some(rfc3339(b.created_ns.load(Relaxed)));
    // Liveness (the entries' layout is the same in every version that has it).
    let entries = crate::liveness::entries(b, &boot_fd, None);
    let creator = b.creator_token.load(Relaxed);
    s.creator_alive = entries.iter().any(|e| e.alive && e.token == creator);
    s.attached = entries.iter().filter(|e| e.alive).map(|e| e.pid).collect();
    s.attached_count = s.attached.len();
    s.dead = entries.iter().filter(|e| !e.alive).count();
    s.orphaned = !s.creator_alive && s.attached.is_empty();
    let id = crate::LayoutId {
        version: s.layout_version,
        hash: b.layout_hash.load(Relaxed),
    };
    s.compatible = id == boot::layout_id();
    if !s.compatible {
        s.state = "incompatible";
        s.problem = Some(format!(
            "made by layout {id}, this build reads {}",
            boot::layout_id()
        ));
        return s;
    }
    s.state = match b.state.load(Acquire) {
        state::READY => "ready",
        state::CREATING | 0 => "creating",
        state::CLOSING => "closing",
        _ => "corrupt",
    };
    if s.state != "ready" {
        return s;
    }
    match sysv {
        Some((key, id)) => sysv_figures(key, id, &mut s),
        None => main_figures(dir, name, &mut s),
    }
    s
}

/// [`main_figures`] for a System V pool: the segment attached read-only (the
/// counters are only read).
fn sysv_figures(key: i32, id: i32, s: &mut PoolSummary) {
    if !matches!(sys::sysv::get(key), Ok(x) if x == id) {
        s.state = "corrupt";
        s.problem = Some(format!("its System V segment (key {key:#010x}) is gone"));
        return;
    }
    // Only a segment of the recorded size is read (a smaller one would fault).
    if !matches!(sys::sysv::stat(id), Ok(st) if st.size == s.size) {
        s.state = "corrupt";
        s.problem = Some("its System V segment's size is not the boot record's".into());
        return;
    }
    let Ok(m) = sys::sysv::attach(id, s.size as usize, None, true) else {
        s.problem = Some("cannot attach its System V segment".into());
        return;
    };
    figures_of(&m, s.size as usize, s);
}

/// What the main segment says: use, high water, pipes and broadcasts.
fn main_figures(dir: &Path, name: &str, s: &mut PoolSummary) {
    let fd = match open_ro(dir, name) {
        Ok(fd) => fd,
        Err(e) => {
            s.problem = Some(format!("cannot open the main segment: {}", e.desc()));
            return;
        }
    };
    // A pool that grows may have a file longer than the boot record says (grown
    // since), up to its maximum.
    let len = match sys::file_info(&fd) {
        Ok(i) if i.regular && (i.size == s.size || (s.size..=s.max_size).contains(&i.size)) => {
            i.size as usize & !4095
        }
        _ => {
            s.state = "corrupt";
            s.problem = Some("the main segment's size is not the boot record's".into());
            return;
        }
    };
    let Ok(map) = sys::Mapping::private(&fd, len) else {
        s.problem = Some("cannot map the main segment".into());
        return;
    };
    figures_of(&map, len, s);
}

/// Use, high water, pipes and broadcasts from a mapping of the main segment.
fn figures_of(map: &sys::Mapping, len: usize, s: &mut PoolSummary) {
    // SAFETY: a mapping of `len` bytes that lives until the end of this function,
    // as long as the heap built over it; only read through it (`attach` and
    // `stats_unlocked` store nothing), so a read-only one serves too.
    let heap = unsafe {
        shmval_alloc::Heap::<crate::LinuxPlatform>::attach(shmval_alloc::Region::new(
            map.ptr(),
            len,
        ))
    };
    let heap = match heap {
        Ok(h) => h,
        Err(e) => {
            s.state = "corrupt";
            s.problem = Some(format!("the allocator's header: {e}"));
            return;
        }
    };
    let st = heap.stats_unlocked();
    s.size = s.size.max(heap.len());
    s.used = Some(st.in_use);
    s.used_pct = Some(if st.arena == 0 {
        0.0
    } else {
        (st.in_use as f64 * 1000.0 / st.arena as f64).round() / 10.0
    });
    s.high_water = Some(st.high_water);
    s.pipes = Some(directory_len(&heap, 1));
    s.broadcasts = Some(directory_len(&heap, 2));
}

/// The number of entries of the directory dict named by user word `i` (0 when
/// there is none or it is not readable).
fn directory_len(heap: &shmval_alloc::Heap<crate::LinuxPlatform>, i: usize) -> u64 {
    use crate::shm::layout::{ContainerHead, HDR};
    let off = heap.user_word(i).load(Acquire);
    let at = off + HDR as u64 + std::mem::offset_of!(ContainerHead, len) as u64;
    shmval_alloc::Offset::new(at)
        .and_then(|o| heap.resolve(o, 8))
        .filter(|_| off != 0)
        // SAFETY: 8 bytes inside the mapping; the field is an aligned AtomicU64 in
        // a valid dict (and a plain 8-byte read in anything else).
        .map_or(0, |p| unsafe {
            (*(p.as_ptr() as *const std::sync::atomic::AtomicU64)).load(Relaxed)
        })
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn group_name(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// `ns` since the Unix epoch as RFC 3339 UTC (`2026-11-30T14:43:52Z`).
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// What [`clean`] did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanReport {
    /// Pools removed (or that would be): name and bytes of storage freed.
    pub removed: Vec<(String, u64)>,
    /// Pools left, and why.
    pub refused: Vec<(String, String)>,
    /// Nothing was removed.
    pub dry_run: bool,
}

/// Removes pools: with no names every orphaned pool of `dir` (creator dead, no
/// live process attached); named pools if orphaned, or whatever their state with
/// `force` (a live one's processes keep their mappings; the name is free again).
/// Each pool's two files go together. `dry_run` removes nothing.
pub fn clean(dir: &Path, names: &[String], force: bool, dry_run: bool) -> CleanReport {
    let mut r = CleanReport {
        dry_run,
        ..CleanReport::default()
    };
    let targets: Vec<PoolSummary> = if names.is_empty() {
        match list(dir, false) {
            Ok(l) => l.pools.into_iter().filter(|p| p.orphaned).collect(),
            Err(e) => {
                r.refused.push((dir.display().to_string(), e.to_string()));
                return r;
            }
        }
    } else {
        let mut v = Vec::new();
        for n in names {
            match inspect(dir, n) {
                Ok(p) => v.push(p),
                Err(e) => r.refused.push((n.clone(), e.to_string())),
            }
        }
        v
    };
    for p in targets {
        let live = !p.orphaned;
        if live && !force {
            r.refused.push((
                p.name.clone(),
                format!(
                    "in use: {} live process(es) attached (pids {:?}){}; --force removes it \
                     anyway",
                    p.attached_count,
                    p.attached,
                    if p.creator_alive {
                        ", its creator alive"
                    } else {
                        ""
                    }
                ),
            ));
            continue;
        }
        if dry_run {
            r.removed.push((p.name.clone(), p.allocated));
            continue;
        }
        match remove_files(dir, &p.name) {
            Ok(()) => r.removed.push((p.name.clone(), p.allocated)),
            Err(e) => r.refused.push((p.name.clone(), e)),
        }
    }
    r
}

/// Unlinks a pool's two files whatever their state (`Pool::cleanup_stray`).
pub(crate) fn remove_files(dir: &Path, name: &str) -> Result<(), String> {
    // A System V pool's segment goes too (the boot record names it).
    if let Ok(fd) = open_ro(dir, &boot_name(name)) {
        // Only a whole boot page is mapped (a shorter file would SIGBUS).
        let whole = matches!(sys::file_info(&fd), Ok(i) if i.regular && i.size == BOOT_SIZE as u64);
        if let Some(m) = whole
            .then(|| sys::Mapping::private(&fd, BOOT_SIZE).ok())
            .flatten()
        {
            // SAFETY: BOOT_SIZE bytes mapped; BootHeader is atomics only.
            let b = unsafe { &*(m.ptr().as_ptr() as *const BootHeader) };
            if b.magic.load(Acquire) == BOOT_MAGIC && b.backend.load(Relaxed) == boot::backend::SYSV
            {
                crate::pool::remove_sysv(b.backend_arg.load(Relaxed));
            }
        }
    }
    let mut err = None;
    for n in [name.to_owned(), boot_name(name)] {
        match sys::seg_unlink(dir, &n) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e @ (nix::errno::Errno::EPERM | nix::errno::Errno::EACCES)) => {
                err = Some(format!(
                    "cannot remove {}: {} (a file of another user in a sticky directory \
                     such as /dev/shm: only its owner or root may remove it)",
                    dir.join(&n).display(),
                    e.desc()
                ));
            }
            Err(e) => {
                err = Some(format!(
                    "cannot remove {}: {}",
                    dir.join(&n).display(),
                    e.desc()
                ))
            }
        }
    }
    err.map_or(Ok(()), Err)
}

/// A size as people write it: `4096`, `64K`, `64M`, `1G`, `1.5G`, `2T` (binary
/// units; `KiB`, `MB`… accepted, always binary).
///
/// # Errors
/// A message saying what was not understood.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use K, M, G or T)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a size (like 64M or 1G)"))?;
    let v = n * mult as f64;
    if !v.is_finite() || v < 1.0 || v > u64::MAX as f64 {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_ipc_is_read_as_logind_reads_it() {
        let root = std::env::temp_dir().join(format!("shmval-logind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(remove_ipc_under(&root), None, "no logind");
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd-logind"), b"").unwrap();
        assert_eq!(remove_ipc_under(&root), Some(true), "the default");
        std::fs::create_dir_all(root.join("etc/systemd/logind.conf.d")).unwrap();
        std::fs::write(
            root.join("etc/systemd/logind.conf"),
            "[Login]\n#RemoveIPC=yes\nRemoveIPC=no\n",
        )
        .unwrap();
        assert_eq!(remove_ipc_under(&root), Some(false));
        std::fs::write(
            root.join("etc/systemd/logind.conf.d/50-x.conf"),
            "[Login]\nRemoveIPC=yes\n",
        )
        .unwrap();
        assert_eq!(remove_ipc_under(&root), Some(true), "a drop-in wins");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sizes_and_dates() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(
            parse_size("12Q").is_err() && parse_size("").is_err() && parse_size("-1M").is_err()
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1796050432 * 1_000_000_000), "2026-11-30T14:53:52Z");
    }
}
