//! The Kubeflow step: the example pipeline compiled by the real kfp SDK, the component's command
//! line run against the real binary, and the container image's layout laid out on disk (the
//! image itself cannot be built here: there is no Docker engine).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::fixture::{self, Fixture};
use crate::support::mlflow::{self, ADMIN_PASSWORD, ADMIN_USER, Flavor, workspace_root};
use crate::support::policies;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn kfp_compiles_the_example_pipeline_with_inputs_secret_and_outputs_wired() {
    let python = fixture::python();
    let has_kfp = Command::new(&python)
        .args(["-c", "import kfp, kfp.kubernetes"])
        .output()
        .unwrap();
    assert!(
        has_kfp.status.success(),
        "the kfp SDK is missing from {}: run scripts/setup.sh from the workspace root\n{}",
        python.display(),
        text(&has_kfp.stderr)
    );

    let output = Command::new(&python)
        .arg(workspace_root().join("kubeflow/test_pipeline.py"))
        .current_dir(workspace_root())
        .output()
        .unwrap();

    assert!(
        output.status.success(),
        "kubeflow/test_pipeline.py failed:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// `kubeflow/component.yaml`'s container: its command and its arguments, placeholders and all.
struct ComponentCommand {
    command: Vec<serde_yaml::Value>,
    args: Vec<serde_yaml::Value>,
}

impl ComponentCommand {
    fn read() -> Self {
        let path = workspace_root().join("kubeflow/component.yaml");
        let spec: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let container = &spec["implementation"]["container"];
        let list = |key: &str| container[key].as_sequence().unwrap().clone();
        Self {
            command: list("command"),
            args: list("args"),
        }
    }

    /// The command line Kubeflow would run, with each placeholder replaced by its value in
    /// `values`; an optional input missing from `values` drops its `if` block, as Kubeflow
    /// does. A placeholder naming an input absent from `values` fails the test.
    fn expand(&self, values: &BTreeMap<&str, String>) -> Vec<String> {
        let mut out = Vec::new();
        for arg in self.command.iter().chain(&self.args) {
            expand(arg, values, &mut out);
        }
        out
    }
}

fn expand(arg: &serde_yaml::Value, values: &BTreeMap<&str, String>, out: &mut Vec<String>) {
    if let Some(text) = arg.as_str() {
        out.push(text.replace("{{$.pipeline_job_uuid}}", "run-0123"));
        return;
    }
    for placeholder in ["inputValue", "inputPath", "outputPath"] {
        if let Some(name) = arg[placeholder].as_str() {
            let value = values
                .get(name)
                .unwrap_or_else(|| panic!("component.yaml uses {placeholder} {name}, unknown"));
            out.push(value.clone());
            return;
        }
    }
    let condition = &arg["if"];
    let name = condition["cond"]["isPresent"]
        .as_str()
        .unwrap_or_else(|| panic!("component.yaml has an argument this test cannot read: {arg:?}"));
    let branch = if values.contains_key(name) {
        &condition["then"]
    } else {
        &condition["else"]
    };
    for arg in branch.as_sequence().into_iter().flatten() {
        expand(arg, values, out);
    }
}

/// The values Kubeflow would give the component's inputs and outputs, under `dir`.
fn component_values(fixture: &Fixture, dir: &Path) -> BTreeMap<&'static str, String> {
    let path = |path: PathBuf| path.to_str().unwrap().to_owned();
    BTreeMap::from([
        ("repo_owner_name", "owner".to_owned()),
        ("repo_name", "repo".to_owned()),
        ("model_name", mlflow::unique_name("spam")),
        ("stage", "Production".to_owned()),
        ("param_path", path(fixture.path("params.yaml"))),
        ("model", path(fixture.path("model"))),
        ("metrics", path(fixture.path("metrics"))),
        // Kubeflow's output paths sit in directories that do not exist yet.
        ("decision", path(dir.join("outputs/decision/data"))),
        ("verdict", path(dir.join("outputs/parameters/verdict"))),
        ("comparison", path(dir.join("outputs/comparison/data"))),
    ])
}

/// Runs the component's command line with the test build of the binary standing in for the
/// image's, which must be where the Dockerfile installs it.
fn run_component(command_line: &[String], env: &[(&str, &str)]) -> Output {
    assert_eq!(
        command_line[0],
        dockerfile_copies()
            .iter()
            .find(|copy| copy.sources == ["/src/target/release/model-pusher"])
            .expect("the Dockerfile copies the release binary")
            .destination,
        "component.yaml runs a binary the image does not have"
    );
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_model-pusher"))
        .args(&command_line[1..])
        .env("MODEL_PUSHER_POLICY_DIR", policies::dir())
        .env("MODEL_PUSHER_CACHE_DIR", cache.path())
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("DAGSHUB_USER_TOKEN")
        .env_remove("KFP_RUN_ID")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn component_command_pushes_with_the_secret_as_environment_variables_and_fills_each_output() {
    let server = mlflow::shared(Flavor::BasicAuth);
    let fixture = Fixture::accuracy(0.9);
    let dir = tempfile::tempdir().unwrap();
    let values = component_values(&fixture, dir.path());
    let url = server.url().to_string();

    // What use_secret_as_env and set_env_variable("MLFLOW_TRACKING_URI") give the pod.
    let output = run_component(
        &ComponentCommand::read().expand(&values),
        &[
            ("MLFLOW_TRACKING_URI", url.as_str()),
            ("MLFLOW_TRACKING_USERNAME", ADMIN_USER),
            ("DAGSHUB_USER_TOKEN", ADMIN_PASSWORD),
        ],
    );

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        std::fs::read_to_string(&values["verdict"]).unwrap(),
        "promote"
    );
    let decision: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&values["decision"]).unwrap()).unwrap();
    assert_eq!(decision["verdict"], "promote");
    assert_eq!(decision["model_name"], values["model_name"].as_str());
    let report = std::fs::read_to_string(&values["comparison"]).unwrap();
    assert!(report.contains("**Verdict:** promote"), "{report}");
    assert!(report.contains("| metric | candidate |"), "{report}");
    assert_eq!(decision["champion"], "1");
    assert!(!text(&output.stderr).contains(ADMIN_PASSWORD));
}

#[test]
fn component_arguments_with_a_token_file_parse_up_to_the_params_file() {
    let fixture = Fixture::accuracy(0.9);
    let dir = tempfile::tempdir().unwrap();
    let mut values = component_values(&fixture, dir.path());
    let missing = dir.path().join("etc/model-pusher/params.yaml");
    values.insert("param_path", missing.to_str().unwrap().to_owned());
    let token = dir.path().join("secret/token");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, "not-a-real-token\n").unwrap();
    values.insert("dagshub_token_file", token.to_str().unwrap().to_owned());
    let command_line = ComponentCommand::read().expand(&values);
    assert!(command_line.contains(&"--dagshub-token-file".to_owned()));

    let output = run_component(&command_line, &[]);

    // Exit 2 is also clap's for an argument it cannot parse; the message naming the params
    // file shows that every argument parsed and the push got as far as reading its inputs.
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("Usage:"), "{stderr}");
}

/// A `COPY --from=build` line of the Dockerfile.
struct Copy {
    sources: Vec<String>,
    destination: String,
}

fn dockerfile() -> String {
    std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap()
}

fn dockerfile_copies() -> Vec<Copy> {
    // Continuation lines are joined first, as Docker does.
    dockerfile()
        .replace("\\\n", " ")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("COPY --from=build "))
        .map(|rest| {
            let mut words: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            let destination = words.pop().unwrap();
            Copy {
                sources: words,
                destination,
            }
        })
        .collect()
}

/// The files a source of the build stage names, in this workspace (the stage's `/src`); a
/// `*` in the file name matches as a shell glob of one `*` does.
fn build_stage_files(source: &str) -> Vec<PathBuf> {
    let relative = source
        .strip_prefix("/src/")
        .unwrap_or_else(|| panic!("{source} is not under the build stage's /src"));
    let path = workspace_root().join(relative);
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let Some((prefix, suffix)) = name.split_once('*') else {
        return vec![path];
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|file| {
            let name = file.file_name().unwrap().to_str().unwrap();
            file.is_file()
                && name.len() >= prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
        })
        .collect();
    files.sort();
    files
}

/// Puts `from` at `to`: a hard link when it can (the test binary is hundreds of MiB), else a
/// copy. Not a symlink: the binary finds its policies from its own resolved path.
fn place(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn image_layout_from_the_dockerfile_finds_the_bundled_policies() {
    let dockerfile = dockerfile();
    assert!(
        dockerfile.contains("-p xtask -- policies"),
        "the build stage builds the policies"
    );
    assert!(
        dockerfile.contains("cargo build --release --locked -p model-pusher"),
        "the build stage builds the release binary it copies"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"model-pusher\"]"));
    // The image's root, beside the test binary so that a hard link works.
    let root = tempfile::tempdir_in(workspace_root().join("target")).unwrap();
    let copies = dockerfile_copies();
    assert_eq!(copies.len(), 2, "the binary and the policies");

    for copy in &copies {
        let destination = root.path().join(copy.destination.trim_start_matches('/'));
        for source in &copy.sources {
            if source == "/src/target/release/model-pusher" {
                // The release build is not made by the tests; the test build has the same
                // name and looks for policies the same way.
                place(Path::new(env!("CARGO_BIN_EXE_model-pusher")), &destination);
                continue;
            }
            let files = build_stage_files(source);
            assert!(
                !files.is_empty(),
                "{source} matches nothing after `cargo xtask policies`"
            );
            assert!(copy.destination.ends_with('/'));
            for file in files {
                place(&file, &destination.join(file.file_name().unwrap()));
            }
        }
    }

    let policies_dir = root.path().join("usr/local/share/model-pusher/policies");
    let mut installed: Vec<String> = std::fs::read_dir(&policies_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    installed.sort();
    assert_eq!(
        installed,
        ["multi-metric.wasm", "significance.wasm", "threshold.wasm"]
    );
    let binary = root.path().join("usr/local/bin/model-pusher");
    let cache = tempfile::tempdir().unwrap();
    for policy in ["threshold", "multi-metric", "significance"] {
        let output = Command::new(&binary)
            .args(["policy", "inspect", policy])
            .env_remove("MODEL_PUSHER_POLICY_DIR")
            .env("MODEL_PUSHER_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["info"]["name"], policy);
        assert!(
            report["path"]
                .as_str()
                .unwrap()
                .contains("share/model-pusher/policies"),
            "{report}"
        );
    }
}
