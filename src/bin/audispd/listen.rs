//! audispd's sockets under socket activation: the input socket comes from
//! systemd (`audisp.socket`, `FileDescriptorName=input`) when it passed
//! one, and is bound from the configuration otherwise; the metrics endpoint
//! (`audisp-metrics.socket`, `FileDescriptorName=metrics`) exists only when
//! systemd passed it.

use std::os::fd::OwnedFd;

use audisp::systemd::activation::Passed;
use nix::sys::socket::SockType;

/// The name the input socket is passed under (`FileDescriptorName=`).
pub const INPUT: &str = "input";
/// The name the metrics socket is passed under.
pub const METRICS: &str = "metrics";

/// The sockets systemd passed, by purpose.
pub struct Listeners {
    /// The input socket, if passed.
    pub input: Option<OwnedFd>,
    /// The metrics endpoint's socket, if passed.
    pub metrics: Option<OwnedFd>,
}

/// Takes the passed sockets. A passed socket of the wrong kind is an error
/// (the socket unit is wrong); passed sockets with other names are named
/// in the log and closed.
pub fn passed_sockets(passed: &mut Passed) -> Result<Listeners, String> {
    let input = passed.take_listener(INPUT, SockType::SeqPacket)?;
    let metrics = passed.take_stream_listener(METRICS)?;
    let rest = passed.leftover();
    if !rest.is_empty() {
        tracing::error!(
            "socket activation: ignoring and closing passed sockets named {rest:?}: \
             audispd only takes one named {INPUT:?} (FileDescriptorName={INPUT}, \
             ListenSequentialPacket=) and one named {METRICS:?} \
             (FileDescriptorName={METRICS}, ListenStream=)"
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
    Ok(Listeners { input, metrics })
}
