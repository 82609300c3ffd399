//! The thin layer between a policy and its host: logging, panics and calling the policy.

use std::sync::Once;

use crate::{Decision, DecisionInput, Level, Policy, Settings};

/// Writes one line to the host's log, attributed to the policy.
///
/// Outside WebAssembly, where there is no host (the policies' native unit tests), the line
/// goes to standard error instead.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::model_pusher::policy::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("policy {level:?}: {message}");
}

/// Installs, once per instance, a panic hook that sends the panic's message and location to
/// the host's log at error level.
///
/// A panic in a policy aborts, which the host sees as a trap with no explanation; the hook
/// runs before the abort, so the explanation reaches the host's log first.
pub fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.payload_as_str().unwrap_or("non-text panic payload");
            let text = match info.location() {
                Some(at) => format!("policy panicked at {at}: {message}"),
                None => format!("policy panicked: {message}"),
            };
            log(Level::Error, &text);
        }));
    });
}

/// Parses the input's settings and asks policy `P` to decide; what [`export_policy!`] calls,
/// and what a test calls to exercise a policy end to end without WebAssembly.
///
/// # Errors
///
/// When the settings are not a JSON object, or when the policy fails to decide.
///
/// [`export_policy!`]: crate::export_policy
pub fn decide_with<P: Policy>(input: &DecisionInput) -> Result<Decision, String> {
    let settings = Settings::parse(&input.settings)?;
    P::decide(input, &settings)
}
