//! Anonymous (memfd) pools passed between processes over a Unix socket.

use super::*;

impl Pool {
    /// Passes this anonymous ([`Backend::Memfd`](crate::Backend)) pool to the
    /// process at the other end of `sock`: its name and its two descriptors in one
    /// message (`SCM_RIGHTS`). That process opens it with [`Pool::receive`].
    ///
    /// # Errors
    /// The pool is not a memfd pool (`InvalidInput`: a named pool is opened by
    /// name); `sendmsg` failed.
    pub fn send_to(&self, sock: &std::os::unix::net::UnixStream) -> std::io::Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
        use std::os::fd::AsRawFd;
        let MainKind::Memfd(main_fd) = &self.inner.seg.main_kind else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "only an anonymous (memfd) pool is passed by descriptor; others are opened by name",
            ));
        };
        let fds = [self.inner.seg.boot_fd.as_raw_fd(), main_fd.as_raw_fd()];
        let name = self.inner.name.as_bytes();
        let iov = [std::io::IoSlice::new(name)];
        sendmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Opens the anonymous pool another process passed with [`Pool::send_to`]
    /// (waiting for the message as long as the socket blocks).
    ///
    /// # Errors
    /// No descriptors in the message (`OpenError::Os`), and whatever an open of
    /// those segments finds (`Corrupt`, `Incompatible`…).
    pub fn receive(
        sock: &std::os::unix::net::UnixStream,
        opts: &PoolOptions,
    ) -> Result<Pool, OpenError> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
        use std::os::fd::{AsRawFd, FromRawFd};
        let os = |op, e: nix::errno::Errno| OpenError::Os {
            op,
            source: e.into(),
        };
        let mut buf = [0u8; crate::MAX_NAME_LEN + 8];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let (n, fds) = {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<UnixAddr>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(|e| os("recvmsg", e))?;
            let mut fds = Vec::new();
            for c in msg.cmsgs().map_err(|e| os("recvmsg", e))? {
                if let ControlMessageOwned::ScmRights(v) = c {
                    fds.extend(v);
                }
            }
            (msg.bytes, fds)
        };
        // SAFETY: descriptors the kernel just installed in this process for us.
        let mut owned: Vec<std::os::fd::OwnedFd> = fds
            .into_iter()
            .map(|f| unsafe { std::os::fd::OwnedFd::from_raw_fd(f) })
            .collect();
        if owned.len() != 2 {
            return Err(os(
                "recvmsg (two descriptors expected)",
                nix::errno::Errno::EBADMSG,
            ));
        }
        let name = std::str::from_utf8(&buf[..n])
            .map_err(|_| os("recvmsg (a pool name expected)", nix::errno::Errno::EBADMSG))?
            .to_owned();
        let main_fd = owned.pop().expect("two");
        let boot_fd = owned.pop().expect("two");
        let seg = open::open_fds(&name, boot_fd, main_fd, opts)?;
        Self::from_segments(&name, seg, opts).map_err(|e| match e {
            Attach::Full => OpenError::TooManyProcesses {
                name: name.clone(),
                max: boot::ATTACH_SLOTS,
            },
            Attach::Os(nix::errno::Errno::EBUSY) => OpenError::Repairing { name: name.clone() },
            Attach::Os(errno) => os("fcntl", errno),
        })
    }
}
