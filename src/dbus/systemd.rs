//! System actions through systemd's own D-Bus API, never by running
//! `/sbin/init`: `single-user` isolates `rescue.target` (as `systemctl
//! rescue`), `halt` and `poweroff` start `halt.target` / `poweroff.target`
//! with mode `replace-irreversibly` (as `systemctl halt` / `poweroff`).

use std::time::Duration;

use crate::engine::actions::SystemHook;
use crate::engine::settings::SystemAction;

/// systemd's bus name, object and manager interface.
pub const DEST: &str = "org.freedesktop.systemd1";
/// systemd's manager object.
pub const PATH: &str = "/org/freedesktop/systemd1";
/// systemd's manager interface.
pub const IFACE: &str = "org.freedesktop.systemd1.Manager";

/// How long systemd gets to queue the job.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The unit and job mode `StartUnit` is called with.
pub fn start_unit_args(what: SystemAction) -> (&'static str, &'static str) {
    match what {
        SystemAction::SingleUser => ("rescue.target", "isolate"),
        SystemAction::Halt => ("halt.target", "replace-irreversibly"),
        SystemAction::Poweroff => ("poweroff.target", "replace-irreversibly"),
    }
}

/// The hook the engine calls for system actions: `StartUnit` on the bus at
/// `address` (None: the system bus). Returns the job's object path.
pub fn hook(address: Option<String>) -> SystemHook {
    std::sync::Arc::new(move |what| {
        let (unit, mode) = start_unit_args(what);
        let conn = super::builder(address.as_deref())
            .map(|b| b.method_timeout(TIMEOUT))
            .and_then(|b| b.build())
            .map_err(|e| format!("cannot connect to the system bus: {e}"))?;
        let reply = conn
            .call_method(Some(DEST), PATH, Some(IFACE), "StartUnit", &(unit, mode))
            .map_err(|e| format!("systemd refused StartUnit({unit}, {mode}): {e}"))?;
        let job: zbus::zvariant::OwnedObjectPath = reply
            .body()
            .deserialize()
            .map_err(|e| format!("unexpected StartUnit reply: {e}"))?;
        Ok(format!(
            "systemd queued job {} ({unit}, {mode})",
            job.as_str()
        ))
    })
}
