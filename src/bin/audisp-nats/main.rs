//! audisp-nats: audit records through NATS JetStream, for fleets.
//!
//! * `audisp-nats publish`: an audispd plugin that publishes records (or
//!   whole events), many to a message, into a JetStream stream exactly
//!   once — ids that let the stream drop resends, every record named so a
//!   consumer drops it if it comes again, acknowledgement to audispd only
//!   after every PubAck, all of a batch in flight at once ([`publish`],
//!   [`pubacks`]).
//! * `audisp-nats consume`: a durable pull consumer feeding a local
//!   audispd's input socket, acknowledging to JetStream only what audispd
//!   holds durably, and storing each message once ([`consume`], [`ledger`]).
//! * `audisp-nats create-stream`: makes the stream with the settings the
//!   exactly-once promise depends on, or says what an existing one lacks
//!   ([`stream`]).
//!
//! The NATS client and its async runtime live in this program only; the
//! dispatcher and the SDK stay free of them. Settings: [`settings`]
//! (`/etc/audisp/audisp-nats.toml`); see `docs/audisp-nats.8.md`.

mod connect;
mod consume;
mod ledger;
mod message;
mod pubacks;
mod publish;
mod settings;
mod stream;

use audisp::config::option_file;
use settings::{Mode, USAGE};

fn main() {
    // SIGUSR2 (resume publishing) must not kill a publisher that is still
    // starting; its handler takes it once installed.
    let usr2 = match audisp::signals::hold(&[nix::sys::signal::Signal::SIGUSR2]) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("audisp-nats: {e}");
            std::process::exit(1);
        }
    };
    // The client's own connection chatter is said again, better, by ours.
    audisp::systemd::logging::init("audisp-nats", "info,async_nats=warn");
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    let mode = match first.as_ref().and_then(|a| a.to_str()) {
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return;
        }
        Some(w) => Mode::parse(w),
        None => None,
    };
    let Some(mode) = mode else {
        eprintln!("audisp-nats: say publish, consume or create-stream first\n{USAGE}");
        std::process::exit(2);
    };
    let opts = option_file::settings_to_run(
        "audisp-nats",
        USAGE,
        settings::parse(mode, args.collect()),
        |o| o.check_config,
    );
    let result = match mode {
        Mode::Publish => publish::run(opts, usr2),
        // SIGUSR2 means nothing to these: its default action again.
        Mode::Consume => usr2.release().and_then(|()| consume::run(opts)),
        Mode::CreateStream => usr2.release().and_then(|()| stream::create(opts)),
    };
    if let Err(e) = result {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}
