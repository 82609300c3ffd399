//! What every model-pusher promotion policy shares.
//!
//! A policy is a WebAssembly component of the `policy` world in `wit/policy.wit`. This crate
//! holds the generated bindings, so that a policy crate only implements [`Policy`] over plain
//! data and calls [`export_policy!`]; everything else a policy needs to read its settings,
//! find and compare metrics and explain itself is here too, written as plain functions so that
//! policies can be unit-tested natively.

#[cfg(target_arch = "wasm32")]
mod arena;
pub mod compare;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod format;
mod guest;
pub mod primary;
pub mod report;
pub mod settings;

/// Every policy built with the kit allocates from its instance's arena first.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: arena::InstanceAllocator = arena::InstanceAllocator;

/// The bindings that `wit-bindgen` generates for the `policy` world.
///
/// Policies rarely need this module directly: the types are re-exported at the crate root and
/// [`export_policy!`] writes the glue.
#[allow(unsafe_code, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_rules",
        default_bindings_module: "policy_kit::bindings",
    });
}

pub use bindings::model_pusher::policy::host::Level;
pub use bindings::model_pusher::policy::types::{
    Candidate, Champion, Check, Decision, DecisionInput, Metric, MetricSeries, PolicyInfo, Setting,
    Verdict,
};
pub use compare::{Direction, ImprovementMode, Reading};
pub use guest::{decide_with, install_panic_hook, log};
pub use primary::{Judgement, PrimaryRule};
pub use settings::{MetricSettings, Settings};

/// A promotion policy: what it says of itself and how it decides.
///
/// Implement it on a unit struct and pass that struct to [`export_policy!`].
pub trait Policy {
    /// Describes the policy: its name, version and every setting it reads, with defaults.
    fn describe() -> PolicyInfo;

    /// Decides what happens to the candidate.
    ///
    /// `settings` is `input.settings`, already parsed. An `Err` is a failure to decide, such
    /// as a setting of the wrong type, and never a verdict: its text must name what was wrong
    /// and what to do about it.
    ///
    /// # Errors
    ///
    /// When the policy cannot decide, such as when a setting has the wrong type.
    fn decide(input: &DecisionInput, settings: &Settings) -> Result<Decision, String>;
}

/// Exports a type implementing [`Policy`] as the component's `rules` interface.
///
/// Before each call it installs, once, a panic hook that reports the panic's message and
/// location through the host's `log` at error level, so that a panic reaches the host's log
/// rather than surfacing as a bare trap.
///
/// ```
/// use policy_kit::{Decision, DecisionInput, Policy, PolicyInfo, Settings, Verdict};
///
/// /// Promotes every candidate.
/// pub struct Always;
///
/// impl Policy for Always {
///     fn describe() -> PolicyInfo {
///         PolicyInfo {
///             name: "always".to_string(),
///             version: "0.1.0".to_string(),
///             description: "promotes every candidate".to_string(),
///             settings: Vec::new(),
///         }
///     }
///
///     fn decide(_input: &DecisionInput, _settings: &Settings) -> Result<Decision, String> {
///         Ok(Decision {
///             verdict: Verdict::Promote,
///             reason: "this policy promotes every candidate".to_string(),
///             checks: Vec::new(),
///         })
///     }
/// }
///
/// policy_kit::export_policy!(Always);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_policy {
    ($policy:ident) => {
        impl $crate::bindings::exports::model_pusher::policy::rules::Guest for $policy {
            fn describe() -> $crate::PolicyInfo {
                $crate::install_panic_hook();
                <$policy as $crate::Policy>::describe()
            }

            fn decide(
                input: $crate::DecisionInput,
            ) -> ::core::result::Result<$crate::Decision, ::std::string::String> {
                $crate::install_panic_hook();
                $crate::decide_with::<$policy>(&input)
            }
        }

        // The generated glue is `unsafe` by nature; the policy's own code stays safe. Its
        // export names (`model-pusher:policy/rules@0.1.0#decide`) are meaningful only to a
        // component and break native linkers' export lists, so native builds leave it out.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
    $crate::bindings::export_rules!($policy with_types_in $crate::bindings);
        };
    };
}
