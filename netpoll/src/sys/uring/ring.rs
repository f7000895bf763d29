//! Creating a core's io_uring instance and checking that the kernel can do what we need.

use std::io;

use io_uring::{opcode, register::Probe, IoUring};

use crate::BuildError;

/// The oldest kernel whose io_uring has everything netpoll uses: multishot receive into
/// provided buffer rings (6.0) and `IORING_SETUP_DEFER_TASKRUN` (6.1).
pub const MIN_KERNEL: (u32, u32) = (6, 1);

/// Creates a ring with `entries` submission slots, with SINGLE_ISSUER, DEFER_TASKRUN and
/// COOP_TASKRUN where the kernel has them. Must be called on the thread that will use it.
pub(crate) fn setup(entries: u32) -> Result<IoUring, BuildError> {
    check_kernel_version()?;
    let cq = entries.saturating_mul(4);
    let attempts: [fn(&mut io_uring::Builder); 3] = [
        |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun();
        },
        |b| {
            b.setup_coop_taskrun();
        },
        |_| {},
    ];
    let mut last = None;
    for configure in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq).setup_clamp();
        configure(&mut builder);
        match builder.build(entries) {
            Ok(ring) => {
                probe(&ring)?;
                // Saves a descriptor lookup on every io_uring_enter; optional (5.18+).
                let _ = ring.submitter().register_ring_fd();
                return Ok(ring);
            }
            // EINVAL: a flag this kernel does not know; try with fewer.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(refused(e)),
        }
    }
    Err(refused(last.unwrap_or_else(|| {
        io::Error::from_raw_os_error(libc::EINVAL)
    })))
}

fn refused(e: io::Error) -> BuildError {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => {
            "io_uring_setup was denied (EPERM): either sysctl kernel.io_uring_disabled is 1 or 2 \
             (set it to 0, or add this user to kernel.io_uring_group), or a container seccomp \
             profile blocks io_uring (Docker's default does: run with a profile that allows \
             io_uring_setup, io_uring_enter and io_uring_register)"
        }
        Some(libc::ENOSYS) => {
            "the kernel has no io_uring (built without CONFIG_IO_URING, or older than 5.1); \
             netpoll needs Linux 6.1 or newer"
        }
        Some(libc::ENOMEM) => {
            "the ring could not be allocated: raise RLIMIT_MEMLOCK (ulimit -l) or use fewer \
             ring entries"
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => "out of file descriptors",
        _ => "io_uring_setup failed; netpoll needs Linux 6.1 or newer with io_uring enabled",
    };
    BuildError::IoUringUnavailable { source: e, hint }
}

fn probe(ring: &IoUring) -> Result<(), BuildError> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| BuildError::Unsupported {
            what: match e.raw_os_error() {
                Some(libc::EINVAL) => "IORING_REGISTER_PROBE",
                _ => "the opcode probe",
            },
            needs: "Linux 5.6",
        })?;
    let needed: [(u8, &'static str, &'static str); 7] = [
        (opcode::RecvMulti::CODE, "IORING_OP_RECV", "Linux 5.6"),
        (opcode::Send::CODE, "IORING_OP_SEND", "Linux 5.6"),
        (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT", "Linux 5.5"),
        (opcode::Connect::CODE, "IORING_OP_CONNECT", "Linux 5.5"),
        (
            opcode::AsyncCancel2::CODE,
            "IORING_OP_ASYNC_CANCEL",
            "Linux 5.5",
        ),
        (opcode::Read::CODE, "IORING_OP_READ", "Linux 5.6"),
        (opcode::Writev::CODE, "IORING_OP_WRITEV", "Linux 5.1"),
    ];
    for (code, what, needs) in needed {
        if !probe.is_supported(code) {
            return Err(BuildError::Unsupported { what, needs });
        }
    }
    if !ring.params().is_feature_nodrop() {
        return Err(BuildError::Unsupported {
            what: "IORING_FEAT_NODROP",
            needs: "Linux 5.5",
        });
    }
    if !ring.params().is_feature_ext_arg() {
        return Err(BuildError::Unsupported {
            what: "IORING_FEAT_EXT_ARG",
            needs: "Linux 5.11",
        });
    }
    Ok(())
}

/// Multishot receive and provided buffer rings cannot be probed as opcodes; check the
/// release instead, and say so plainly.
fn check_kernel_version() -> Result<(), BuildError> {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return Ok(()); // no /proc: let io_uring_setup decide
    };
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < MIN_KERNEL {
        return Err(BuildError::Unsupported {
            what: "multishot receive into provided buffer rings and DEFER_TASKRUN",
            needs: "Linux 6.1",
        });
    }
    Ok(())
}
