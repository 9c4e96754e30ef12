//! Helpers shared by integration tests (`mod support;`).

// Each test binary compiles this module on its own and uses only part of it.
#[allow(dead_code)]
pub mod auditd;
#[allow(dead_code)]
pub mod dbus;
#[allow(dead_code)]
pub mod dispatcher;
#[allow(dead_code)]
pub mod events;
