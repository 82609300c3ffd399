//! Turning a policy file into a component, and saying precisely why a file is not one.

use std::borrow::Cow;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// The contract this host implements, as the policy's world is named in WIT.
pub const WORLD: &str = "model-pusher:policy/policy@0.1.0";
/// The interface a policy must export.
pub const RULES: &str = "model-pusher:policy/rules@0.1.0";
/// The interface the host offers a policy.
pub const HOST: &str = "model-pusher:policy/host@0.1.0";
/// The types both sides share, which a component imports as an instance of types alone.
const TYPES: &str = "model-pusher:policy/types@0.1.0";

const WIT: &str = include_str!("../../../wit/policy.wit");

/// What kind of WebAssembly a file holds, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Component,
    CoreModule,
}

/// Reads the header: `\0asm`, then a version and a layer (0 for a core module, 1 for a
/// component).
pub(crate) fn kind(bytes: &[u8]) -> Option<Kind> {
    let header = bytes.get(..8)?;
    if &header[..4] != b"\0asm" {
        return None;
    }
    match header[6..8] {
        [0, 0] => Some(Kind::CoreModule),
        [1, 0] => Some(Kind::Component),
        _ => None,
    }
}

/// Wraps a core module into a component. A module built with wit-bindgen carries its world in a
/// custom section; one without it is given this host's world, so a module that exports the
/// canonical ABI by hand works too.
///
/// # Errors
///
/// When the module does not validate or does not match the world it carries, with
/// wit-component's explanation.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    let module = if has_component_type(module) {
        Cow::Borrowed(module)
    } else {
        Cow::Owned(embed_world(module)?)
    };
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|mut encoder| encoder.encode())
        .map_err(|error| format!("{error:#}"))
}

fn has_component_type(module: &[u8]) -> bool {
    wasmparser::Parser::new(0)
        .parse_all(module)
        .filter_map(Result::ok)
        .any(|payload| match payload {
            wasmparser::Payload::CustomSection(section) => {
                section.name().starts_with("component-type")
            }
            _ => false,
        })
}

fn embed_world(module: &[u8]) -> Result<Vec<u8>, String> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_str("policy.wit", WIT)
        .map_err(|error| format!("the host's own WIT does not parse: {error:#}"))?;
    let world = resolve
        .select_world(&[package], Some("policy"))
        .map_err(|error| format!("{error:#}"))?;
    let mut module = module.to_vec();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(|error| format!("{error:#}"))?;
    Ok(module)
}

/// What a component imports and exports, by name.
pub(crate) struct Shape {
    pub(crate) imports: Vec<String>,
    pub(crate) exports: Vec<String>,
}

impl Shape {
    pub(crate) fn of(engine: &Engine, component: &Component) -> Self {
        let ty = component.component_type();
        Self {
            imports: ty
                .imports(engine)
                .map(|(name, _)| name.to_owned())
                .collect(),
            exports: ty
                .exports(engine)
                .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
                .map(|(name, _)| name.to_owned())
                .collect(),
        }
    }

    /// Whether the component imports WASI, as componentize-py's output does.
    pub(crate) fn needs_wasi(&self) -> bool {
        self.imports.iter().any(|name| name.starts_with("wasi:"))
    }

    /// What keeps the component from being a policy, in words, or `None` when nothing does.
    pub(crate) fn mismatch(&self) -> Option<String> {
        let mut problems = Vec::new();
        if !self.exports.iter().any(|name| name == RULES) {
            let found = if self.exports.is_empty() {
                "no interfaces".to_owned()
            } else {
                self.exports.join(", ")
            };
            problems.push(format!("it does not export `{RULES}` (it exports {found})"));
        }
        let unknown: Vec<&str> = self
            .imports
            .iter()
            .map(String::as_str)
            .filter(|name| ![HOST, TYPES].contains(name) && !name.starts_with("wasi:"))
            .collect();
        if !unknown.is_empty() {
            problems.push(format!(
                "it imports {}, which a policy is not given (only `{HOST}` and WASI)",
                unknown.join(", ")
            ));
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_modules_from_components() {
        assert_eq!(
            kind(&wat::parse_str("(module)").unwrap()),
            Some(Kind::CoreModule)
        );
        assert_eq!(
            kind(&wat::parse_str("(component)").unwrap()),
            Some(Kind::Component)
        );
        assert_eq!(kind(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(kind(b"\0as"), None);
    }

    #[test]
    fn empty_component_is_told_what_it_lacks() {
        let engine = Engine::default();
        let component = Component::new(&engine, "(component)").unwrap();
        let problem = Shape::of(&engine, &component).mismatch().unwrap();
        assert!(problem.contains(RULES), "{problem}");
        assert!(problem.contains("exports no interfaces"), "{problem}");
    }
}
