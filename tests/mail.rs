//! audisp-mail end to end: real records through a real audispd into the
//! plugin, mailed to a real SMTP server (Debian's python3-aiosmtpd, run by
//! `tests/support/smtp_server.py`) or to a sendmail-compatible program;
//! every received message is read back.
//!
//! * Each matching event is one mail, with the template's fields.
//! * With an interval, the first event is mailed at once and the others of
//!   the interval in one digest that lists (and counts) them all.
//! * A mail the server cannot take yet is retried, and nothing is
//!   acknowledged to audispd until it is sent; configured to, the plugin
//!   drops it after some attempts and counts it.
//! * STARTTLS and TLS from the first byte with a test CA, with a login
//!   whose password never shows in the log.
//! * A sendmail-compatible program gets the envelope on its command line
//!   and the mail on its standard input.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::dispatcher::{lines, sample, Dispatcher, MAIN_NO_STATS};
use support::events::events;

const BIN: &str = env!("CARGO_BIN_EXE_audisp-mail");
const PYTHON: &str = "/usr/bin/python3";
const PASSWORD: &str = "s3cret-pass-do-not-log";

fn skip_reason() -> Option<String> {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| "python3-aiosmtpd missing (apt-get install python3-aiosmtpd)".to_string())
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test SMTP server, storing messages in a directory.
struct Smtp {
    child: Child,
    dir: PathBuf,
}

impl Smtp {
    fn start(dir: &Path, port: u16, extra: &[&str]) -> Smtp {
        std::fs::create_dir_all(dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut child = Command::new(PYTHON)
            .arg(script)
            .arg(dir)
            .arg(port.to_string())
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY", "the SMTP server did not start");
        Smtp {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// The messages received so far, in order.
    fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
            .collect()
    }

    /// Waits for at least `n` messages.
    fn wait(&self, n: usize, d: &Dispatcher) -> Vec<Value> {
        let mut got = Vec::new();
        if let Err(e) = support::try_wait_until(Duration::from_secs(60), "mails", || {
            got = self.messages();
            Ok(got.len() >= n)
        }) {
            panic!("{e}: {} of {n}\n{}", got.len(), d.log_tail(40));
        }
        got
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plugins.d body running audisp-mail on events that hold `types`.
fn mail_plugin(types: &[&str], args: &[String]) -> String {
    let mut exec = vec![BIN.to_string(), "--no-config".into()];
    exec.extend(args.iter().cloned());
    let exec: Vec<String> = exec.iter().map(|a| format!("{a:?}")).collect();
    let inc: Vec<String> = types.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "exec = [{}]\nmode = \"events\"\ninclude = [{}]\n",
        exec.join(", "),
        inc.join(", ")
    )
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Arguments mailing root@example.org through the test server on `port`
/// without TLS, then `more`.
fn smtp_args(port: u16, more: &[&str]) -> Vec<String> {
    let server = format!("127.0.0.1:{port}");
    let mut v = args(&[
        "--server",
        &server,
        "--tls",
        "none",
        "--to",
        "root@example.org",
    ]);
    v.extend(args(more));
    v
}

/// The events of the sample that hold a record of one of `types`.
fn sample_events(types: &[&str]) -> Vec<Vec<Vec<u8>>> {
    let data = sample();
    let all = lines(&data);
    events(&all)
        .into_iter()
        .filter(|ev| {
            ev.iter().any(|r| {
                types
                    .iter()
                    .any(|t| r.starts_with(format!("type={t} ").as_bytes()))
            })
        })
        .map(|ev| ev.iter().map(|r| r.to_vec()).collect())
        .collect()
}

/// Starts audispd with the plugin and feeds it the sample, keeping its
/// standard input open; returns that input.
fn start_fed(d: &mut Dispatcher) -> ChildStdin {
    d.start(Stdio::piped()).unwrap();
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(&sample()).unwrap();
    stdin
}

/// Closes audispd's input and waits until every plugin had every record.
fn finish(d: &mut Dispatcher, stdin: ChildStdin) {
    drop(stdin);
    let status = d.wait(Duration::from_secs(120)).unwrap();
    assert!(status.success(), "audispd: {status}\n{}", d.log_tail(60));
    assert!(
        d.log().contains("every plugin had every record"),
        "{}",
        d.log_tail(60)
    );
}

/// A header of a received message, decoded.
fn header<'a>(msg: &'a Value, name: &str) -> Option<&'a str> {
    msg["headers"][name].as_str()
}

/// The body of a received message, decoded.
fn body(msg: &Value) -> String {
    msg["body"]
        .as_str()
        .unwrap_or_default()
        .replace("\r\n", "\n")
}

#[test]
fn each_matching_event_is_mailed_with_its_fields() {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    let types = ["USER_AUTH", "USER_LOGIN"];
    let want = sample_events(&types);
    assert_eq!(want.len(), 4);
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let port = free_port();
    let smtp = Smtp::start(&d.out("smtp"), port, &[]);
    d.write_plugin(
        "mail",
        &mail_plugin(
            &types,
            &args(&[
                "--server",
                &format!("127.0.0.1:{port}"),
                "--tls",
                "none",
                "--to",
                "security@example.org",
                "--to",
                "audit@example.org",
                "--from",
                "audisp@example.org",
                "--interval",
                "0",
                "--subject",
                "{type} acct={acct} exe={exe} {{{id}}}",
            ]),
        ),
    );
    let stdin = start_fed(&mut d);
    let got = smtp.wait(want.len(), &d);
    finish(&mut d, stdin);
    assert_eq!(smtp.messages().len(), want.len(), "one mail per event");
    for (msg, ev) in got.iter().zip(&want) {
        assert_eq!(msg["from"], "audisp@example.org");
        assert_eq!(
            msg["to"],
            serde_json::json!(["security@example.org", "audit@example.org"])
        );
        let first = String::from_utf8_lossy(&ev[0]).into_owned();
        let ty = first[5..].split(' ').next().unwrap();
        let id = first
            .split("msg=audit(")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap();
        let subject = header(msg, "Subject").unwrap();
        assert!(subject.starts_with(&format!("{ty} acct=")), "{subject}");
        assert!(
            subject.ends_with(&format!("exe=/usr/sbin/sshd {{{id}}}"))
                || subject.ends_with(&format!("exe=/usr/bin/sudo {{{id}}}")),
            "{subject}"
        );
        assert_eq!(header(msg, "Auto-Submitted"), Some("auto-generated"));
        let b = body(msg);
        // Every record, the enrichment separator shown as a space.
        for r in ev {
            let text = String::from_utf8_lossy(r).replace('\x1d', " ");
            assert!(b.contains(&text), "record missing from {b}");
        }
    }
    // The first USER_AUTH is alice's, the first USER_LOGIN has no acct.
    let subjects: Vec<&str> = got.iter().filter_map(|m| header(m, "Subject")).collect();
    assert!(subjects
        .iter()
        .any(|s| s.starts_with("USER_AUTH acct=alice ")));
    assert!(subjects.iter().any(|s| s.starts_with("USER_LOGIN acct=- ")));
}

#[test]
fn at_most_one_mail_per_interval_and_a_digest_of_the_rest() {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    let types = [
        "USER",
        "USER_AUTH",
        "USER_ACCT",
        "USER_LOGIN",
        "USER_LOGOUT",
        "USER_START",
        "USER_END",
        "USER_ERR",
        "USER_CMD",
        "USER_MGMT",
        "USER_CHAUTHTOK",
    ];
    let want = sample_events(&types);
    assert!(want.len() > 12, "{}", want.len());
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let port = free_port();
    let smtp = Smtp::start(&d.out("smtp"), port, &[]);
    let state = d.path().join("state/mail");
    d.write_plugin(
        "mail",
        &mail_plugin(
            &types,
            &smtp_args(
                port,
                &[
                    "--interval",
                    "3s",
                    "--digest-max",
                    "10",
                    "--state-dir",
                    &state.display().to_string(),
                ],
            ),
        ),
    );
    let stdin = start_fed(&mut d);
    let got = smtp.wait(2, &d);
    let digest = &got[1];
    let subject = header(digest, "Subject").unwrap();
    let rest = want.len() - 1;
    assert!(
        subject.ends_with(&format!(": {rest} audit events")),
        "{subject}"
    );
    let b = body(digest);
    let listed: Vec<&str> = b.lines().filter(|l| l.contains(" auid=")).collect();
    assert_eq!(listed.len(), 10, "{b}");
    assert!(
        b.contains(&format!("… and {} more events, not listed", rest - 10)),
        "{b}"
    );
    // The digest lists the events that followed the first, in order.
    for (line, ev) in listed.iter().zip(&want[1..]) {
        let first = String::from_utf8_lossy(&ev[0]).into_owned();
        let id = first
            .split("msg=audit(")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap();
        assert!(line.contains(id), "{line} is not event {id}");
    }
    // Sent: nothing waits in the state file any more.
    support::wait_until(Duration::from_secs(10), "the state file", || {
        let p: Value =
            serde_json::from_slice(&std::fs::read(state.join("pending.json")).unwrap()).unwrap();
        p["lines"].as_array().is_some_and(|l| l.is_empty()) && p["more"] == 0
    });
    finish(&mut d, stdin);
    assert_eq!(smtp.messages().len(), 2, "at most one mail per interval");
}

#[test]
fn a_mail_is_retried_until_the_server_is_up_and_acknowledged_only_then() {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    let types = ["USER_AUTH"];
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let port = free_port();
    d.write_plugin(
        "mail",
        &mail_plugin(
            &types,
            &smtp_args(port, &["--interval", "0", "--retry-max", "1s"]),
        ),
    );
    let stdin = start_fed(&mut d);
    d.wait_log("cannot send the mail for event", Duration::from_secs(60));
    d.wait_log("(attempt 2)", Duration::from_secs(60));
    let state = d.plugin_state("mail");
    assert_eq!(
        state.get("acked"),
        0,
        "acknowledged before the mail was sent"
    );
    let smtp = Smtp::start(&d.out("smtp"), port, &[]);
    let got = smtp.wait(2, &d);
    finish(&mut d, stdin);
    assert_eq!(smtp.messages().len(), 2);
    assert!(header(&got[0], "Subject").is_some_and(|s| s.starts_with("[audisp] USER_AUTH on ")));
    assert!(d.log().contains("sent (attempt "), "{}", d.log_tail(20));
}

#[test]
fn a_mail_that_cannot_be_sent_is_dropped_and_counted_when_configured() {
    let types = ["USER_AUTH"];
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let port = free_port();
    d.write_plugin(
        "mail",
        &mail_plugin(
            &types,
            &smtp_args(
                port,
                &[
                    "--interval",
                    "0",
                    "--retry-max",
                    "1s",
                    "--on-failure",
                    "drop",
                    "--attempts",
                    "2",
                ],
            ),
        ),
    );
    let stdin = start_fed(&mut d);
    finish(&mut d, stdin);
    let log = d.log();
    assert!(log.contains("dropped after 2 attempts"), "{log}");
    assert!(log.contains("; 2 mails dropped so far"), "{log}");
}

/// A test CA and a certificate for `localhost` it issued, in `dir`:
/// `ca.pem`, `cert.pem`, `key.pem`.
fn test_ca(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

#[test]
fn starttls_and_tls_with_a_test_ca_and_a_login() {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    for mode in ["starttls", "tls"] {
        let types = ["USER_LOGIN"];
        let mut d = Dispatcher::new(MAIN_NO_STATS);
        test_ca(d.path());
        let pw = d.path().join("password");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let port = free_port();
        let cert = d.path().join("cert.pem").display().to_string();
        let key = d.path().join("key.pem").display().to_string();
        let smtp = Smtp::start(
            &d.out("smtp"),
            port,
            &[
                &format!("--{mode}"),
                &cert,
                &key,
                "--auth",
                "alice",
                PASSWORD,
            ],
        );
        d.write_plugin(
            "mail",
            &mail_plugin(
                &types,
                &args(&[
                    "--server",
                    &format!("localhost:{port}"),
                    "--tls",
                    mode,
                    "--ca",
                    &d.path().join("ca.pem").display().to_string(),
                    "--user",
                    "alice",
                    "--password-file",
                    &pw.display().to_string(),
                    "--to",
                    "root@example.org",
                    "--interval",
                    "0",
                ]),
            ),
        );
        let stdin = start_fed(&mut d);
        let got = smtp.wait(2, &d);
        finish(&mut d, stdin);
        for m in &got {
            assert_eq!(m["login"], "alice", "{mode}");
            assert_eq!(m["tls"], true, "{mode}");
        }
        assert!(
            !d.log().contains(PASSWORD),
            "{mode}: the password is in the log"
        );
    }
}

/// `text` with quoted-printable encoding undone (soft line breaks, `=XX`).
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) if b[i] == b'=' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_sendmail_program_gets_the_envelope_and_the_mail() {
    let types = ["USER_AUTH"];
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let out = d.out("sendmail");
    std::fs::create_dir_all(&out).unwrap();
    let prog = d.path().join("sendmail");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {0}/argv.$$\ncat > {0}/mail.$$\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    d.write_plugin(
        "mail",
        &mail_plugin(
            &types,
            &args(&[
                "--transport",
                "sendmail",
                "--sendmail",
                &prog.display().to_string(),
                "--to",
                "root@example.org",
                "--from",
                "audisp@example.org",
                "--interval",
                "0",
            ]),
        ),
    );
    let stdin = start_fed(&mut d);
    finish(&mut d, stdin);
    let mut argvs = Vec::new();
    let mut mails = Vec::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("argv.")
        {
            argvs.push(text);
        } else {
            mails.push(text);
        }
    }
    assert_eq!(argvs.len(), 2, "one run per mail");
    for a in &argvs {
        assert_eq!(a, "-i\n-f\naudisp@example.org\n--\nroot@example.org\n");
    }
    for m in &mails {
        assert!(m.contains("Subject: [audisp] USER_AUTH on "), "{m}");
        assert!(
            quoted_printable(m).contains("type=USER_AUTH msg=audit("),
            "{m}"
        );
    }
}

#[test]
fn bad_settings_are_refused_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pw = pw.display().to_string();
    for (a, needle) in [
        (vec!["--server", "h:25"], "nobody to mail"),
        (vec!["--to", "root@example.org"], "no SMTP server"),
        (
            vec!["--to", "not an address"],
            "--to \"not an address\" is not a mail address",
        ),
        (
            vec![
                "--to",
                "r@example.org",
                "--server",
                "mail.example.org:25",
                "--tls",
                "none",
                "--user",
                "u",
                "--password-file",
                &pw,
            ],
            "has mode 0644",
        ),
        (
            vec!["--to", "r@example.org", "--subject", "{type"],
            "never closed",
        ),
        (
            vec![
                "--to",
                "r@example.org",
                "--transport",
                "sendmail",
                "--sendmail",
                "sendmail",
            ],
            "not an absolute path",
        ),
    ] {
        let out = Command::new(BIN)
            .arg("--no-config")
            .args(&a)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{a:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{a:?}: {err}");
        assert!(!err.contains(PASSWORD), "{a:?}: {err}");
    }
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let remote_plain = [
        "--to",
        "r@example.org",
        "--server",
        "mail.example.org:25",
        "--tls",
        "none",
        "--user",
        "u",
        "--password-file",
        &pw,
    ];
    let out = Command::new(BIN)
        .arg("--no-config")
        .args(remote_plain)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to send a password to mail.example.org without TLS"),
        "{err}"
    );
    // A password written into the option file is refused with advice.
    let conf = dir.path().join("mail.toml");
    std::fs::write(
        &conf,
        format!("to = [\"r@example.org\"]\n[smtp]\nserver = \"localhost:25\"\npassword = \"{PASSWORD}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["--config", conf.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mail.toml:4: unknown key \"password\" in [smtp] (write the password in a file of its own"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

/// A digest an earlier run left on disk (its events acknowledged to
/// audispd) is mailed by the next run.
#[test]
fn a_digest_left_by_an_earlier_run_is_sent() {
    if let Some(why) = skip_reason() {
        support::skip(&why);
        return;
    }
    let mut d = Dispatcher::new(MAIN_NO_STATS);
    let state = d.path().join("state/mail");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("pending.json"),
        r#"{"last_mail":1,"first":1,"lines":["earlier event"],"more":2,"by_type":{"AVC":3},"span":["t1","t2"]}"#,
    )
    .unwrap();
    let port = free_port();
    let smtp = Smtp::start(&d.out("smtp"), port, &[]);
    d.write_plugin(
        "mail",
        &mail_plugin(
            &["USER_AUTH"],
            &smtp_args(
                port,
                &[
                    "--interval",
                    "1h",
                    "--state-dir",
                    &state.display().to_string(),
                ],
            ),
        ),
    );
    d.start(Stdio::piped()).unwrap();
    let got = smtp.wait(1, &d);
    let b = body(&got[0]);
    assert!(
        b.contains("3 audit events") && b.contains("earlier event"),
        "{b}"
    );
    assert!(
        b.contains("… and 2 more events, not listed") && b.contains("(AVC 3)"),
        "{b}"
    );
    drop(d.child.as_mut().unwrap().stdin.take());
    assert!(d.wait(Duration::from_secs(60)).unwrap().success());
}

/// The shipped option file passes `--check-config` as installed, and with
/// its commented settings uncommented (except the login and CA, which name
/// files this machine does not have).
#[test]
fn the_shipped_option_file_checks_clean() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/audisp-mail.toml"),
    )
    .unwrap();
    let (uncommented, n) = support::uncommented(&shipped, &["user", "password_file", "ca"]);
    assert!(n >= 15, "only {n} settings");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("shipped", &shipped), ("uncommented", &uncommented)] {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = Command::new(BIN)
            .args(["--config", p.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
