//! Actions plugins may ask for.
//!
//! A plugin sends a `COMMAND` naming an action (`disk-full`,
//! `block-address`…) with arguments; the dispatcher looks the name up in
//! *that plugin's* plugins.d file and does what the admin configured there:
//! nothing, a log line, running a program, or suspending the plugin. A name
//! the admin did not configure is refused. The plugin's arguments only ever
//! become extra `argv` entries of the configured program, which is run
//! directly (never through a shell) with an empty environment, so a plugin
//! cannot make the dispatcher do anything the admin did not set up.
//!
//! System actions (`single-user`, `halt`, `poweroff`) are handed to a hook
//! the embedder installs ([`Actions::set_system_hook`]): the engine knows
//! no service manager; `audispd` asks systemd over D-Bus.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::child::{self, Running};
use super::settings::{Action, SystemAction};
use crate::protocol::CommandStatus;

/// Most action programs running at once; further requests fail until some
/// finish.
const MAX_RUNNING: usize = 8;

/// What running an action asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing more.
    None,
    /// Suspend the plugin that asked.
    SuspendPlugin,
}

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the plugin is told.
    pub status: CommandStatus,
    /// Explanation for the plugin and the log.
    pub message: String,
    /// What the caller still has to do.
    pub effect: Effect,
}

struct Started {
    plugin: String,
    action: String,
    running: Running,
}

/// Carries out a system action for the engine: `Ok` with what was done,
/// or `Err` with why not. Runs on the asking plugin's sender thread, so it
/// should return within seconds.
pub type SystemHook = Arc<dyn Fn(SystemAction) -> Result<String, String> + Send + Sync>;

/// Runs actions and reaps their programs.
#[derive(Default)]
pub struct Actions {
    running: Mutex<Vec<Started>>,
    system: Mutex<Option<SystemHook>>,
}

impl Actions {
    /// A runner with nothing running.
    pub fn new() -> Actions {
        Actions::default()
    }

    /// Installs the embedder's handler for system actions (without one they
    /// fail).
    pub fn set_system_hook(&self, hook: SystemHook) {
        *self.system.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    fn run_system(&self, plugin: &str, name: &str, what: SystemAction) -> Outcome {
        let hook = self
            .system
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let result = match hook {
            Some(h) => h(what),
            None => Err("no service manager interface is set up for system actions".into()),
        };
        match result {
            Ok(message) => {
                tracing::warn!(
                    message_id = crate::log_ids::ACTION,
                    plugin,
                    action = name,
                    "plugin {plugin} requested action {name}: {} ({message})",
                    what.name()
                );
                Outcome {
                    status: CommandStatus::Done,
                    message,
                    effect: Effect::None,
                }
            }
            Err(message) => {
                tracing::error!(
                    message_id = crate::log_ids::ACTION,
                    plugin,
                    action = name,
                    "action {name} ({}) for plugin {plugin} failed: {message}",
                    what.name()
                );
                Outcome {
                    status: CommandStatus::Failed,
                    message,
                    effect: Effect::None,
                }
            }
        }
    }

    /// Carries out action `name` requested by `plugin`, as configured by
    /// `action` (None: not configured).
    pub fn run(
        &self,
        plugin: &str,
        name: &str,
        action: Option<&Action>,
        args: &[String],
    ) -> Outcome {
        let Some(action) = action else {
            tracing::warn!(
                message_id = crate::log_ids::ACTION,
                plugin,
                action = name,
                "plugin asked for action {name:?}, which its plugins.d file does not configure; refused"
            );
            return Outcome {
                status: CommandStatus::Refused,
                message: format!("no action {name:?} is configured for plugin {plugin}"),
                effect: Effect::None,
            };
        };
        match action {
            Action::System(what) => self.run_system(plugin, name, *what),
            Action::Ignore => Outcome {
                status: CommandStatus::Done,
                message: "ignored, as configured".into(),
                effect: Effect::None,
            },
            Action::Log => {
                tracing::warn!(
                    message_id = crate::log_ids::ACTION,
                    plugin,
                    action = name,
                    args = ?args,
                    "plugin {plugin} requests action {name} {args:?}"
                );
                Outcome {
                    status: CommandStatus::Done,
                    message: "logged".into(),
                    effect: Effect::None,
                }
            }
            Action::Suspend => {
                tracing::warn!(
                    message_id = crate::log_ids::ACTION,
                    plugin,
                    action = name,
                    "plugin {plugin} requested action {name}: suspending it, as configured"
                );
                Outcome {
                    status: CommandStatus::Done,
                    message: "plugin suspended".into(),
                    effect: Effect::SuspendPlugin,
                }
            }
            Action::Exec {
                program,
                args: fixed,
            } => {
                self.reap();
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                if running.len() >= MAX_RUNNING {
                    return Outcome {
                        status: CommandStatus::Failed,
                        message: format!(
                            "{MAX_RUNNING} action programs are still running; try again later"
                        ),
                        effect: Effect::None,
                    };
                }
                let mut argv = fixed.clone();
                argv.extend(args.iter().cloned());
                match child::spawn_action(program, &argv) {
                    Ok(r) => {
                        tracing::info!(
                            message_id = crate::log_ids::ACTION,
                            plugin,
                            action = name,
                            pid = r.pid(),
                            "plugin {plugin} requested action {name}: started {} {argv:?}",
                            program.display()
                        );
                        let message = format!("started {} (pid {})", program.display(), r.pid());
                        running.push(Started {
                            plugin: plugin.to_string(),
                            action: name.to_string(),
                            running: r,
                        });
                        Outcome {
                            status: CommandStatus::Done,
                            message,
                            effect: Effect::None,
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            message_id = crate::log_ids::ACTION,
                            plugin,
                            action = name,
                            "action {name} for plugin {plugin} failed: {e}"
                        );
                        Outcome {
                            status: CommandStatus::Failed,
                            message: e.to_string(),
                            effect: Effect::None,
                        }
                    }
                }
            }
        }
    }

    /// Collects finished action programs and logs how they ended.
    pub fn reap(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain_mut(|s| match s.running.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    tracing::info!(plugin = %s.plugin, action = %s.action, "action program finished");
                } else {
                    tracing::warn!(
                        message_id = crate::log_ids::ACTION,
                        plugin = %s.plugin,
                        action = %s.action,
                        "action program failed: {status}"
                    );
                }
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
    }

    /// Waits (at most `limit` each) for running action programs, at shutdown.
    pub fn finish(&self, limit: Duration) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for s in running.drain(..) {
            let _ = s.running.stop(limit);
        }
    }
}
