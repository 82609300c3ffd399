//! Project tasks that cargo alone does not do: `cargo xtask policies` builds every Rust policy in
//! `policies/` into a WebAssembly component, `cargo xtask python-policies` builds the Python ones
//! with componentize-py, `cargo xtask build-policy DIR` builds one policy of a team's own, and
//! `cargo xtask test` builds the bundled policies and runs the tests, the policies' unit tests
//! included.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

const TARGET: &str = "wasm32-unknown-unknown";

/// The componentize-py release that `scripts/setup.sh` installs into `.venv`.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

fn main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("policies") => build_policies(&root).map(|_| ()),
        Some("python-policies") => build_python_policies(&root).map(|_| ()),
        Some("build-policy") => {
            let (dir, out) = match &args[1..] {
                [dir] => (PathBuf::from(dir), None),
                [dir, flag, out] if flag == "--out" => {
                    (PathBuf::from(dir), Some(PathBuf::from(out)))
                }
                _ => bail!("usage: cargo xtask build-policy DIR [--out FILE.wasm]"),
            };
            let path = build_policy(&root, &dir, out.as_deref())?;
            println!("{}", path.display());
            Ok(())
        }
        Some("test") => {
            build_policies(&root)?;
            build_python_policies(&root)?;
            // The policies' own unit tests run natively: their rules are plain Rust functions.
            run(Command::new(cargo())
                .current_dir(&root)
                .args(["test", "--workspace", "--locked", "--manifest-path"])
                .arg(root.join("policies/Cargo.toml")))?;
            // The tests against an MLflow server with a PostgreSQL store need the cluster.
            run(Command::new("bash")
                .current_dir(&root)
                .args(["scripts/postgres.sh", "start"]))?;
            run(Command::new(cargo())
                .current_dir(&root)
                .args(["test", "--workspace", "--locked"])
                .args(&args[1..]))
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n  policies  build the Rust policies in policies/ into target/policies/*.wasm\n  python-policies\n            build policies/python/*/app.py with componentize-py into\n            target/policies/python/*.wasm\n  build-policy DIR [--out FILE.wasm]\n            build the policy crate (Cargo.toml) or the Python policy (app.py) in DIR\n            into a component [default: DIR/target/<name>.wasm]\n  test      build the policies, run their unit tests natively, start the PostgreSQL test\n            cluster (scripts/postgres.sh), then run every test of the host (extra arguments\n            go to that cargo test)"
            );
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// How to reach the wasm32 target on this machine.
enum Toolchain {
    /// rustup's toolchain with the wasm32 target installed: the usual route.
    Rustup,
    /// Debian's `rustc-web`, `rust-web-src` and `lld`, which build std for wasm32 from source,
    /// for machines where rustup cannot download the target.
    Debian,
}

fn find_toolchain() -> Result<Toolchain> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).contains(TARGET))
        .unwrap_or(false);
    if installed {
        return Ok(Toolchain::Rustup);
    }
    let debian = ["/usr/bin/cargo", "/usr/bin/rustc", "/usr/bin/wasm-ld"]
        .iter()
        .all(|path| Path::new(path).exists())
        && Path::new("/usr/lib/rustlib/src/rust/library").exists();
    if debian {
        return Ok(Toolchain::Debian);
    }
    bail!(
        "no toolchain can build {TARGET}: run `rustup target add {TARGET}`, or, offline on \
         Debian, `apt-get install rustc-web cargo-web rust-web-src lld`"
    )
}

/// A `cargo build` for the wasm32 target on this machine's toolchain, in release, into
/// `target_dir`; the caller adds what to build.
fn wasm_cargo(target_dir: &Path) -> Result<Command> {
    let mut command = match find_toolchain()? {
        Toolchain::Rustup => {
            let mut command = Command::new("cargo");
            command.arg("build");
            command
        }
        Toolchain::Debian => {
            let mut command = Command::new("/usr/bin/cargo");
            let path = env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![PathBuf::from("/usr/bin")];
            paths.extend(env::split_paths(&path));
            command
                .env("PATH", env::join_paths(paths)?)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld")
                .env_remove("RUSTUP_TOOLCHAIN")
                .args(["build", "-Zbuild-std=std,panic_abort"]);
            command
        }
    };
    // The outer cargo's settings describe the host build, not this one.
    for variable in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(variable);
    }
    command
        .args(["--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir);
    Ok(command)
}

/// Where the wasm32 builds go. Policy crates outside the policies workspace share it, so that
/// the standard library, which the Debian route compiles from source, is built once.
fn wasm_target_dir(root: &Path) -> PathBuf {
    root.join("target/wasm")
}

/// Turns the core module cargo built for cdylib `name` into a component at `out`.
fn write_component(target_dir: &Path, name: &str, out: &Path) -> Result<()> {
    let module_path = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let module = fs::read(&module_path)
        .with_context(|| format!("policy {name} was not built at {}", module_path.display()))?;
    let component = model_pusher::policy::componentize(&module)
        .map_err(|message| anyhow::anyhow!("policy {name} is not a component: {message}"))?;
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(out, &component).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "policy {name}: {} ({} KiB)",
        out.display(),
        component.len() / 1024
    );
    Ok(())
}

/// Builds every cdylib in `policies/` and writes each as a component to `target/policies/`
/// (test-only guests from `policies/testing/` go to `target/policies/testing/`).
fn build_policies(root: &Path) -> Result<Vec<PathBuf>> {
    let manifest = root.join("policies/Cargo.toml");
    let target_dir = wasm_target_dir(root);
    run(wasm_cargo(&target_dir)?
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--workspace"))?;

    let out_dir = root.join("target/policies");
    let mut written = Vec::new();
    for (name, testing) in cdylibs(&manifest)? {
        let dir = if testing {
            out_dir.join("testing")
        } else {
            out_dir.clone()
        };
        let path = dir.join(format!("{name}.wasm"));
        write_component(&target_dir, &name, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// Builds one policy of a team's own: the crate in `dir` (a `Cargo.toml`, as `model-pusher
/// policy new` makes) or the Python policy in `dir` (an `app.py`), written as a component to
/// `out`, by default `dir/target/<name>.wasm`.
fn build_policy(root: &Path, dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        let names = cdylibs(&manifest)?;
        let [(name, _)] = names.as_slice() else {
            bail!(
                "{} must build exactly one cdylib, the policy; it has {}",
                manifest.display(),
                names.len()
            );
        };
        let target_dir = wasm_target_dir(root);
        run(wasm_cargo(&target_dir)?
            .arg("--manifest-path")
            .arg(&manifest))?;
        let path = out.map_or_else(
            || dir.join("target").join(format!("{name}.wasm")),
            Path::to_owned,
        );
        write_component(&target_dir, name, &path)?;
        return Ok(path);
    }
    if dir.join("app.py").is_file() {
        let name = dir
            .canonicalize()
            .with_context(|| format!("cannot read {}", dir.display()))?
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "policy".to_owned());
        let path = out.map_or_else(
            || dir.join("target").join(format!("{name}.wasm")),
            Path::to_owned,
        );
        componentize_python(root, dir, &path)?;
        return Ok(path);
    }
    bail!(
        "{} holds no policy: expected a Cargo.toml (a crate made by `model-pusher policy new`) \
         or an app.py (a Python policy)",
        dir.display()
    )
}

/// Builds each `policies/python/<name>/app.py` into `target/policies/python/<name>.wasm`: a
/// directory of its own, because these are examples, not policies the image bundles.
fn build_python_policies(root: &Path) -> Result<Vec<PathBuf>> {
    let source = root.join("policies/python");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&source)
        .with_context(|| format!("cannot list {}", source.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|dir| dir.join("app.py").is_file())
        .collect();
    dirs.sort();
    let mut written = Vec::new();
    for dir in dirs {
        let Some(name) = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
        else {
            continue;
        };
        let path = root
            .join("target/policies/python")
            .join(format!("{name}.wasm"));
        componentize_python(root, &dir, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// Runs componentize-py over the module `app` in `dir`, against the `policy` world.
fn componentize_python(root: &Path, dir: &Path, out: &Path) -> Result<()> {
    let tool = componentize_py(root)?;
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    let started = std::time::Instant::now();
    run(Command::new(&tool)
        .arg("--quiet")
        .arg("--wit-path")
        .arg(root.join("wit"))
        .args(["--world", "policy", "componentize", "app", "--python-path"])
        .arg(dir)
        .arg("--output")
        .arg(out))?;
    let size = fs::metadata(out).map(|meta| meta.len()).unwrap_or(0);
    eprintln!(
        "policy {}: {} ({} KiB, componentize-py took {:.1} s)",
        dir.display(),
        out.display(),
        size / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// componentize-py: `$COMPONENTIZE_PY`, else `.venv/bin/componentize-py`, else on `PATH`.
fn componentize_py(root: &Path) -> Result<PathBuf> {
    let candidates = [
        env::var_os("COMPONENTIZE_PY").map(PathBuf::from),
        Some(root.join(".venv/bin/componentize-py")),
        Some(PathBuf::from("componentize-py")),
    ];
    for tool in candidates.into_iter().flatten() {
        let works = Command::new(&tool)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success());
        if works {
            return Ok(tool);
        }
    }
    bail!(
        "componentize-py is not installed, and Python policies need it: run scripts/setup.sh, or \
         `.venv/bin/pip install {COMPONENTIZE_PY}` (or set COMPONENTIZE_PY to its path)"
    )
}

/// The cdylib targets of the policies workspace, each with whether it is a test-only guest.
fn cdylibs(manifest: &Path) -> Result<Vec<(String, bool)>> {
    let output = Command::new(cargo())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .context("cannot run cargo metadata on policies/")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let testing_dir = manifest.with_file_name("testing");
    let mut found = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let testing = package["manifest_path"]
            .as_str()
            .is_some_and(|path| Path::new(path).starts_with(&testing_dir));
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_cdylib = target["crate_types"]
                .as_array()
                .is_some_and(|types| types.iter().any(|kind| kind == "cdylib"));
            if let (true, Some(name)) = (is_cdylib, target["name"].as_str()) {
                found.push((name.replace('_', "-"), testing));
            }
        }
    }
    Ok(found)
}
