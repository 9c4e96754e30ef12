//! Handing a mail to the mail system, with `lettre`: over SMTP (plain,
//! STARTTLS or TLS from the first byte, with rustls and the system's CA
//! store plus an optional CA file, and optionally a login) or to a local
//! sendmail-compatible program.
//!
//! The password lives in a [`Secret`], which never prints itself, and no
//! message of this module includes it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{header, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SendmailTransport, SmtpTransport, Transport as _};

/// A password: shown as `***` however it is printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// Reads the secret from `path`: a regular file owned by root (or the
    /// user running the plugin) that group and others cannot read. One
    /// trailing newline is dropped.
    pub fn read(path: &Path) -> Result<Secret, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("password file {}: {e}", path.display()))?;
        let euid = nix::unistd::geteuid().as_raw();
        if !meta.is_file() {
            return Err(format!(
                "password file {} is not a regular file",
                path.display()
            ));
        }
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(format!(
                "password file {} is owned by uid {}; it must belong to root; fix: chown root {0}",
                path.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "password file {} has mode {:04o}, so others may read it; fix: chmod 0600 {0}",
                path.display(),
                meta.mode() & 0o7777
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("password file {}: {e}", path.display()))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            return Err(format!("password file {} is empty", path.display()));
        }
        Ok(Secret(text.to_string()))
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// STARTTLS, required: the mail is never sent in the clear.
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// None (a relay on this machine).
    None,
}

/// Where mails go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An SMTP server.
    Smtp {
        /// `HOST:PORT`.
        server: String,
        /// TLS.
        security: Security,
        /// An extra CA certificate (PEM) the server's may be issued by.
        ca: Option<PathBuf>,
        /// Login name and password.
        login: Option<(String, Secret)>,
        /// Limit on each step of the conversation.
        timeout: Duration,
    },
    /// A sendmail-compatible program, run as `PROGRAM -i -f FROM -- TO…`.
    Sendmail(PathBuf),
}

/// A ready transport.
pub enum Transport {
    /// Over SMTP.
    Smtp(SmtpTransport),
    /// Through a program.
    Sendmail(SendmailTransport),
}

impl Transport {
    /// Sets up `route` (reads the CA file; connects only when sending).
    pub fn new(route: &Route) -> Result<Transport, String> {
        match route {
            Route::Sendmail(program) => Ok(Transport::Sendmail(
                SendmailTransport::new_with_command(program),
            )),
            Route::Smtp {
                server,
                security,
                ca,
                login,
                timeout,
            } => {
                let (host, port) = split_server(server)?;
                let tls = || -> Result<TlsParameters, String> {
                    let mut b = TlsParameters::builder(host.to_string());
                    if let Some(ca) = ca {
                        let pem = std::fs::read(ca)
                            .map_err(|e| format!("CA file {}: {e}", ca.display()))?;
                        let cert = Certificate::from_pem(&pem)
                            .map_err(|e| format!("CA file {}: {e}", ca.display()))?;
                        b = b.add_root_certificate(cert);
                    }
                    b.build_rustls().map_err(|e| format!("TLS: {e}"))
                };
                let tls = match security {
                    Security::StartTls => Tls::Required(tls()?),
                    Security::Tls => Tls::Wrapper(tls()?),
                    Security::None => Tls::None,
                };
                let mut b = SmtpTransport::builder_dangerous(host)
                    .port(port)
                    .tls(tls)
                    .timeout(Some(*timeout));
                if let Some((user, Secret(password))) = login {
                    b = b.credentials(Credentials::new(user.clone(), password.clone()));
                }
                Ok(Transport::Smtp(b.build()))
            }
        }
    }

    /// Sends `mail`; the error says why not (never with the password).
    pub fn send(&self, mail: &Message) -> Result<(), String> {
        match self {
            Transport::Smtp(t) => t.send(mail).map(|_| ()).map_err(|e| e.to_string()),
            Transport::Sendmail(t) => t.send(mail).map(|_| ()).map_err(|e| e.to_string()),
        }
    }
}

/// `HOST:PORT` (`[v6]:PORT`) as host and port.
pub fn split_server(server: &str) -> Result<(&str, u16), String> {
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| format!("{server:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("{server:?} has no valid port"))?;
    if host.is_empty() {
        return Err(format!("{server:?} has no host"));
    }
    Ok((host, port))
}

/// Whether `host` is this machine (a plain connection cannot be overheard).
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// `Auto-Submitted: auto-generated` (RFC 3834): no autoresponder answers.
#[derive(Clone)]
struct AutoSubmitted;

impl header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

/// A plain-text mail from `from` to `to`. Control characters in the
/// subject (a field value with a newline) become spaces.
pub fn compose(
    from: &Mailbox,
    to: &[Mailbox],
    subject: &str,
    body: String,
) -> Result<Message, String> {
    let subject: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut b = Message::builder()
        .from(from.clone())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .header(AutoSubmitted)
        .message_id(None);
    for t in to {
        b = b.to(t.clone());
    }
    b.body(body)
        .map_err(|e| format!("cannot build the mail: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_never_print() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "***");
        let route = Route::Smtp {
            server: "h:25".into(),
            security: Security::StartTls,
            ca: None,
            login: Some(("u".into(), s)),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{route:?}").contains("hunter2"));
    }

    #[test]
    fn password_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Secret::read(&p).unwrap_err();
        assert!(e.contains("mode 0640") && !e.contains("s3cret"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::read(&p).unwrap(), Secret("s3cret".into()));
    }

    #[test]
    fn servers_and_loopback() {
        assert_eq!(split_server("mail.example:587"), Ok(("mail.example", 587)));
        assert_eq!(split_server("[::1]:25"), Ok(("::1", 25)));
        assert!(split_server("mail.example").is_err());
        assert!(split_server(":25").is_err());
        assert!(is_loopback("::1") && is_loopback("127.0.0.2") && is_loopback("localhost"));
        assert!(!is_loopback("mail.example"));
    }

    #[test]
    fn subjects_stay_on_one_line() {
        let from: Mailbox = "a@example.org".parse().unwrap();
        let m = compose(
            &from,
            std::slice::from_ref(&from),
            "x\r\nBcc: evil@example.org",
            "b".into(),
        )
        .unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        assert!(
            text.contains("Subject: x  Bcc: evil@example.org\r\n"),
            "{text}"
        );
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(
            text.contains("Auto-Submitted: auto-generated\r\n"),
            "{text}"
        );
    }
}
