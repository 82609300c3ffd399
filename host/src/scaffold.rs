//! `model-pusher policy new`: a ready-to-build policy crate, from the templates in
//! `host/templates/policy/`.
//!
//! The crate is a workspace of its own, so it builds wherever it is made, and depends on the
//! policy kit (`policies/kit`) by path. The kit is looked for in the checkout the crate is made
//! in, then in the checkout this binary was built from; the crate's README says how to point
//! it elsewhere.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// The template files, embedded so that an installed binary can make a crate anywhere.
const CARGO_TOML: &str = include_str!("../templates/policy/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("../templates/policy/lib.rs.tmpl");
const CASES_YAML: &str = include_str!("../templates/policy/cases.yaml.tmpl");
const README_MD: &str = include_str!("../templates/policy/README.md.tmpl");
const GITIGNORE: &str = include_str!("../templates/policy/gitignore.tmpl");

/// The bundled policies' lockfile: a new crate starts from it, so that it builds with the crate
/// versions the bundled policies were tested with, and offline once those are in cargo's cache.
const CARGO_LOCK: &str = include_str!("../../policies/Cargo.lock");

/// Where the kit sits in a model-pusher checkout.
const KIT_IN_CHECKOUT: &str = "policies/kit";

/// The checkout this binary was built from, when it still exists.
const BUILT_FROM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Names cargo refuses for a package, because they clash with the standard crates.
const RESERVED: [&str; 8] = [
    "core",
    "std",
    "alloc",
    "proc_macro",
    "proc-macro",
    "test",
    "self",
    "crate",
];

/// What to make.
#[derive(Debug, Clone)]
pub struct NewPolicy {
    /// The policy's name: its package name and what its `describe` reports.
    pub name: String,
    /// The crate's directory, which must not exist or be empty.
    pub dir: PathBuf,
    /// The `policies/kit` directory to depend on; found when `None`.
    pub kit: Option<PathBuf>,
}

/// What was made.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The path to the kit as `Cargo.toml` gives it.
    pub kit_path: String,
    /// The files written, in the order they were written.
    pub files: Vec<PathBuf>,
}

/// Why a policy crate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a package name.
    #[error(
        "policy name {name:?} {problem}; use lowercase letters, digits and single hyphens, \
         starting with a letter, such as `churn-guard`"
    )]
    InvalidName { name: String, problem: &'static str },
    /// The directory holds files already.
    #[error("{} already exists and is not empty; choose another --dir", dir.display())]
    NotEmpty { dir: PathBuf },
    /// No kit was found.
    #[error(
        "cannot find the policy kit: {} is not inside a model-pusher checkout, and neither is \
         this binary's; pass --kit with the path of a checkout's policies/kit",
        dir.display()
    )]
    KitNotFound { dir: PathBuf },
    /// `--kit` is not the kit.
    #[error("{} is not the policy kit: it has no Cargo.toml naming policy-kit", path.display())]
    NotTheKit { path: PathBuf },
    /// A file could not be written or read.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ScaffoldError {
    /// Whether the error is in what was asked (name, directory, kit) rather than in the
    /// machine, so that the command line reports it as bad input.
    pub fn is_usage(&self) -> bool {
        !matches!(self, ScaffoldError::Io { .. })
    }
}

/// Makes the policy crate that `request` describes.
///
/// # Errors
///
/// When the name cannot be a package name, the directory is not empty, no kit is found, or a
/// file cannot be written.
pub fn create(request: &NewPolicy) -> Result<Scaffold, ScaffoldError> {
    check_name(&request.name)?;
    let dir = &request.dir;
    let occupied = fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied || dir.is_file() {
        return Err(ScaffoldError::NotEmpty { dir: dir.clone() });
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    let existed = dir.exists();
    fs::create_dir_all(dir.join("src")).map_err(io(dir))?;
    let found = dir
        .canonicalize()
        .map_err(io(dir))
        .and_then(|absolute| kit_path(&absolute, request.kit.as_deref()));
    let kit_path = match found {
        Ok(path) => path,
        Err(error) => {
            // Leave nothing behind for a crate that was never written.
            if !existed {
                let _ = fs::remove_dir_all(dir);
            }
            return Err(error);
        }
    };

    let lib_name = request.name.replace('-', "_");
    let toml_path = kit_path.replace('\\', "\\\\").replace('"', "\\\"");
    let kit_note = if Path::new(&kit_path).is_relative() {
        "The path is relative: the crate was made inside the checkout that holds the kit."
    } else {
        "The path is absolute: the crate was made outside a checkout, so it points at the \
         checkout this binary was built from (or the one `--kit` named)."
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", &request.name)
            .replace("{{type_name}}", &type_name(&request.name))
            .replace("{{lib_name}}", &lib_name)
            .replace("{{kit_path}}", &toml_path)
            .replace("{{kit_note}}", kit_note)
            .replace("{{dir}}", &dir.display().to_string())
    };

    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("Cargo.lock", CARGO_LOCK.to_owned()),
        ("src/lib.rs", fill(LIB_RS)),
        ("cases.yaml", fill(CASES_YAML)),
        ("README.md", fill(README_MD)),
        (".gitignore", GITIGNORE.to_owned()),
    ];
    let mut written = Vec::with_capacity(files.len());
    for (relative, text) in files {
        let path = dir.join(relative);
        fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(Scaffold {
        dir: dir.clone(),
        kit_path,
        files: written,
    })
}

fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let invalid = |problem| ScaffoldError::InvalidName {
        name: name.to_owned(),
        problem,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(invalid("must be 1 to 64 characters long"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("must start with a lowercase letter"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(
            "may hold only lowercase letters, digits and hyphens",
        ));
    }
    if name.ends_with('-') || name.contains("--") {
        return Err(invalid("may not end with a hyphen or hold two in a row"));
    }
    if RESERVED.contains(&name) {
        return Err(invalid("is the name of a standard crate"));
    }
    Ok(())
}

/// The policy's type: `churn-guard` is `ChurnGuard`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The kit as `Cargo.toml` should name it: relative when the crate is inside the kit's
/// checkout, so that the checkout can move; absolute otherwise.
fn kit_path(crate_dir: &Path, explicit: Option<&Path>) -> Result<String, ScaffoldError> {
    if let Some(kit) = explicit {
        let kit = kit
            .canonicalize()
            .map_err(|_| ScaffoldError::NotTheKit { path: kit.into() })?;
        if !is_kit(&kit) {
            return Err(ScaffoldError::NotTheKit { path: kit });
        }
        return Ok(
            relative_within_checkout(crate_dir, &kit).unwrap_or_else(|| kit.display().to_string())
        );
    }
    for ancestor in crate_dir.ancestors().skip(1) {
        let kit = ancestor.join(KIT_IN_CHECKOUT);
        if is_kit(&kit) {
            let depth = crate_dir.components().count() - ancestor.components().count();
            let mut path = PathBuf::new();
            for _ in 0..depth {
                path.push("..");
            }
            path.push(KIT_IN_CHECKOUT);
            return Ok(path.display().to_string());
        }
    }
    let built_from = Path::new(BUILT_FROM).join(KIT_IN_CHECKOUT);
    match built_from.canonicalize() {
        Ok(kit) if is_kit(&kit) => Ok(kit.display().to_string()),
        _ => Err(ScaffoldError::KitNotFound {
            dir: crate_dir.to_owned(),
        }),
    }
}

/// `kit` relative to `crate_dir` when both are in the same checkout.
fn relative_within_checkout(crate_dir: &Path, kit: &Path) -> Option<String> {
    let checkout = kit.parent()?.parent()?;
    let below = crate_dir.strip_prefix(checkout).ok()?;
    let mut path = PathBuf::new();
    for component in below.components() {
        if matches!(component, Component::Normal(_)) {
            path.push("..");
        }
    }
    path.push(KIT_IN_CHECKOUT);
    Some(path.display().to_string())
}

fn is_kit(dir: &Path) -> bool {
    fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|manifest| manifest.contains("name = \"policy-kit\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository_kit() -> PathBuf {
        Path::new(BUILT_FROM)
            .join(KIT_IN_CHECKOUT)
            .canonicalize()
            .unwrap()
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("churn-guard"), "ChurnGuard");
        assert_eq!(type_name("a2-b"), "A2B");
        assert_eq!(type_name("policy"), "Policy");
    }

    #[test]
    fn rejects_names_that_cannot_be_packages() {
        for name in [
            "",
            "Churn",
            "9lives",
            "churn_guard",
            "churn-",
            "a--b",
            "test",
            "é",
        ] {
            assert!(
                matches!(check_name(name), Err(ScaffoldError::InvalidName { .. })),
                "{name:?} should be refused"
            );
        }
        assert!(check_name("churn-guard2").is_ok());
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        let made = create(&NewPolicy {
            name: "churn-guard".to_owned(),
            dir: dir.path().join("churn-guard"),
            kit: Some(repository_kit()),
        })
        .unwrap();
        for file in &made.files {
            let text = fs::read_to_string(file).unwrap();
            assert!(
                !text.contains("{{"),
                "{} keeps a placeholder",
                file.display()
            );
        }
        let lib = fs::read_to_string(dir.path().join("churn-guard/src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct ChurnGuard;"));
    }

    #[test]
    fn a_crate_outside_the_checkout_names_the_kit_by_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let made = create(&NewPolicy {
            name: "p".to_owned(),
            dir: dir.path().join("p"),
            kit: None,
        })
        .unwrap();
        assert_eq!(made.kit_path, repository_kit().display().to_string());
    }

    #[test]
    fn a_crate_inside_the_checkout_names_the_kit_by_relative_path() {
        let checkout = tempfile::tempdir().unwrap();
        let kit = checkout.path().join(KIT_IN_CHECKOUT);
        fs::create_dir_all(&kit).unwrap();
        fs::write(kit.join("Cargo.toml"), "[package]\nname = \"policy-kit\"\n").unwrap();
        let made = create(&NewPolicy {
            name: "p".to_owned(),
            dir: checkout.path().join("policies/teams/p"),
            kit: None,
        })
        .unwrap();
        assert_eq!(made.kit_path, "../../../policies/kit");
    }

    #[test]
    fn refuses_a_directory_that_holds_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let result = create(&NewPolicy {
            name: "p".to_owned(),
            dir: dir.path().to_owned(),
            kit: Some(repository_kit()),
        });
        assert!(matches!(result, Err(ScaffoldError::NotEmpty { .. })));
        assert_eq!(
            fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );
    }
}
