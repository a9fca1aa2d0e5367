//! Process hardening applied before any secret is read.

/// Keeps key material out of core files: the core size limit drops to zero
/// (soft and hard, so it cannot be raised again) and the process is marked
/// non-dumpable, which also stops other processes of the same user from
/// attaching a debugger or reading `/proc/<pid>/mem`.
#[cfg(target_os = "linux")]
pub fn disable_core_dumps() -> std::io::Result<()> {
    use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Elsewhere only the core size limit is lowered by the service manager
/// (see `deploy/`); nothing to do in-process.
#[cfg(not(target_os = "linux"))]
pub fn disable_core_dumps() -> std::io::Result<()> {
    Ok(())
}
