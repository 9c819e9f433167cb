//! systemd's notifications (`sd_notify`), through the sd-notify crate.

use std::io;
use std::os::unix::ffi::OsStrExt;

pub use sd_notify::NotifyState;

/// Sends `states` to systemd's `NOTIFY_SOCKET`, if set; a failure is logged, not returned
/// (a server does not stop serving because its supervisor cannot be told). sd-notify 0.5
/// does not resolve an abstract `@name`, which std's address type does.
pub fn notify(states: &[NotifyState<'_>]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => notify_abstract(name, states),
        None => sd_notify::notify(states),
    };
    if let Err(e) = result {
        crate::log(format_args!("NOTIFY_SOCKET {socket:?}: {e}"));
    }
}
#[cfg(target_os = "linux")]
fn notify_abstract(name: &[u8], states: &[sd_notify::NotifyState<'_>]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    std::os::unix::net::UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn notify_abstract(_: &[u8], _: &[sd_notify::NotifyState<'_>]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets are Linux-only",
    ))
}
