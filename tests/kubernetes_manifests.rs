//! The Kubernetes examples of `deploy/kubernetes/`, offline: every file
//! validates against the Kubernetes 1.30 schemas (`kubernetes-validate`,
//! strict: an unknown field is an error), and every container that runs
//! ciofs gives it arguments the real binary accepts.
//!
//! Both use the Python of `.venv` (`$CIOFS_PYTHON`, else the repository's
//! `.venv/bin/python`), which `scripts/emulators install` (or `start`)
//! fills with kubernetes-validate and PyYAML.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use common::manifests::*;
use common::output_text;
use serde_json::Value;

/// The Kubernetes version the examples are written for.
const KUBERNETES_VERSION: &str = "1.30.0";

/// The commands `ciofs config show` knows; the arguments of any other are
/// checked by its command-line parser alone (`Cli::try_parse_from`).
const SHOWN_BY_CONFIG: &[&str] = &["mount", "serve-nfs"];

fn manifests() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "deploy/kubernetes/ has {} manifests: {files:?}", files.len());
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().expect("a file name").to_string_lossy().into_owned()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let python = venv_python();
    let mut failures = Vec::new();
    for file in manifests() {
        let output = Command::new(&python)
            .args(["-m", "kubernetes_validate", "--strict", "--quiet", "--kubernetes-version", KUBERNETES_VERSION])
            .arg(&file)
            .output()
            .expect("python runs");
        if !output.status.success() {
            failures.push(format!("{}: {}\n{}", file.display(), output.status, output_text(&output)));
        }
    }
    assert!(failures.is_empty(), "manifests that do not validate:\n{}", failures.join("\n"));
}

/// A container that runs ciofs: its name and ciofs's argument vector.
struct CiofsContainer {
    name: String,
    args: Vec<String>,
}

/// The containers and init containers anywhere in `value` (a Pod, a
/// Deployment's or a Job's template) whose image is ciofs's.
fn ciofs_containers(value: &Value, found: &mut Vec<CiofsContainer>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "containers" || key == "initContainers" {
                    found.extend(inner.as_array().into_iter().flatten().filter_map(as_ciofs_container));
                }
                ciofs_containers(inner, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| ciofs_containers(item, found)),
        _ => {}
    }
}

fn as_ciofs_container(container: &Value) -> Option<CiofsContainer> {
    let image = container["image"].as_str()?;
    let repository = image.rsplit_once(':').map_or(image, |(name, _tag)| name);
    if repository.rsplit('/').next() != Some("ciofs") {
        return None;
    }
    let strings = |key: &str| -> Vec<String> {
        container[key].as_array().into_iter().flatten().map(|v| v.as_str().expect("a string").to_string()).collect()
    };
    let name = container["name"].as_str().expect("a container name").to_string();
    let command = strings("command");
    // The image's ENTRYPOINT is ciofs; a command, if given, must be ciofs too.
    assert!(
        command.is_empty() || (command.len() == 1 && command[0].rsplit('/').next() == Some("ciofs")),
        "container {name}: command {command:?} is not ciofs"
    );
    Some(CiofsContainer { name, args: strings("args") })
}

/// Whether ciofs accepts `args`: the real binary through `ciofs config
/// show` for the commands it knows (flags, values and the configuration's
/// rules); the others (`fuse-helper`, which runs as soon as it parses)
/// through ciofs's own command-line parser, required arguments and all.
fn accepted(args: &[String], scratch: &Path) -> Result<(), String> {
    let (command, rest) = args.split_first().ok_or("no arguments")?;
    if !SHOWN_BY_CONFIG.contains(&command.as_str()) {
        let line = std::iter::once("ciofs").chain(args.iter().map(String::as_str));
        return ciofs::cli::Cli::try_parse_from(line).map(drop).map_err(|e| e.to_string());
    }
    let mut ciofs = Command::new(env!("CARGO_BIN_EXE_ciofs"));
    ciofs
        .env_remove("CIOFS_CONFIG")
        .env_remove("CIOFS_PROJECT")
        .env_remove("CIOFS_STATE_DIR")
        .env("XDG_CONFIG_HOME", scratch)
        .env("HOME", scratch);
    ciofs.args(["config", "show", command]).args(rest);
    let output = ciofs.output().expect("ciofs runs");
    match output.status.success() {
        true => Ok(()),
        false => Err(format!("{}: {}", output.status, output_text(&output).trim())),
    }
}

#[test]
fn every_ciofs_container_runs_with_arguments_the_binary_accepts() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut refused = Vec::new();
    let mut seen = BTreeSet::new();
    for file in manifests() {
        let name = file_name(&file);
        let mut found = Vec::new();
        yaml_documents(&file).iter().for_each(|document| ciofs_containers(document, &mut found));
        assert!(
            !found.is_empty() || name == "credentials.yaml",
            "{name}: no container runs ciofs (the image is registry/ciofs:TAG)"
        );
        for container in found {
            let key = (name.clone(), container.name.clone());
            assert!(seen.insert(key.clone()), "{name}: two ciofs containers named {}", container.name);
            if let Err(why) = accepted(&container.args, scratch.path()) {
                refused.push(format!("{name} {}: {:?}\n  {why}", container.name, container.args));
            }
        }
    }
    assert!(refused.is_empty(), "ciofs arguments in deploy/kubernetes/:\n{}", refused.join("\n"));
}
