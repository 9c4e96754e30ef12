//! audispd's sockets under socket activation: the input socket comes from
//! systemd (`audisp.socket`, `FileDescriptorName=input`) when it passed
//! one, and is bound from the configuration otherwise.

use std::os::fd::OwnedFd;

use audisp::systemd::activation::Passed;
use nix::sys::socket::SockType;

/// The name the input socket is passed under (`FileDescriptorName=`).
pub const INPUT: &str = "input";

/// The passed input socket, if any. A passed socket of the wrong kind is an
/// error (the socket unit is wrong); passed sockets with other names are
/// named in the log and closed.
pub fn input_socket(passed: &mut Passed) -> Result<Option<OwnedFd>, String> {
    let input = passed.take_listener(INPUT, SockType::SeqPacket)?;
    let rest = passed.leftover();
    if !rest.is_empty() {
        tracing::error!(
            "socket activation: ignoring and closing passed sockets named {rest:?}: \
             audispd only takes one named {INPUT:?} (FileDescriptorName={INPUT}, \
             ListenSequentialPacket=)"
        );
    }
    *passed = Passed::default();
    match &input {
        Some(_) => tracing::info!("input socket passed by the service manager"),
        None if !rest.is_empty() => tracing::warn!(
            "no socket named {INPUT:?} was passed; binding the configured input socket"
        ),
        None => {}
    }
    Ok(input)
}
