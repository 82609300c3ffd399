//! Project tasks that cargo alone does not do: `cargo xtask policies` builds every policy in
//! `policies/` into a WebAssembly component, and `cargo xtask test` builds them and runs the tests.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

const TARGET: &str = "wasm32-unknown-unknown";

fn main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("policies") => build_policies(&root).map(|_| ()),
        Some("test") => {
            build_policies(&root)?;
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
                "usage: cargo xtask <task>\n\n  policies  build policies/ into target/policies/*.wasm\n  test      build the policies, start the PostgreSQL test cluster (scripts/postgres.sh),\n            then run every test (extra arguments go to cargo test)"
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

/// Builds every cdylib in `policies/` and writes each as a component to `target/policies/`
/// (test-only guests from `policies/testing/` go to `target/policies/testing/`).
fn build_policies(root: &Path) -> Result<Vec<PathBuf>> {
    let manifest = root.join("policies/Cargo.toml");
    let target_dir = root.join("target/wasm");
    let toolchain = find_toolchain()?;

    let mut command = match toolchain {
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
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "--release",
            "--workspace",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    run(&mut command)?;

    let out_dir = root.join("target/policies");
    let built = target_dir.join(TARGET).join("release");
    let mut written = Vec::new();
    for (name, testing) in cdylibs(&manifest)? {
        let module_path = built.join(format!("{}.wasm", name.replace('-', "_")));
        let module = fs::read(&module_path)
            .with_context(|| format!("policy {name} was not built at {}", module_path.display()))?;
        let component = model_pusher::policy::componentize(&module)
            .map_err(|message| anyhow::anyhow!("policy {name} is not a component: {message}"))?;
        let dir = if testing {
            out_dir.join("testing")
        } else {
            out_dir.clone()
        };
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.wasm"));
        fs::write(&path, &component)?;
        eprintln!(
            "policy {name}: {} ({} KiB)",
            path.display(),
            component.len() / 1024
        );
        written.push(path);
    }
    Ok(written)
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
