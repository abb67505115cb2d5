//! The repository's Kubernetes examples, read as the tests need them:
//! YAML through the venv's PyYAML (`scripts/emulators install` puts it,
//! and kubernetes-validate, into .venv), as JSON values.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python (`$CIOFS_PYTHON`, else `.venv/bin/python`); a
/// missing one fails the test saying how to make it.
pub fn venv_python() -> PathBuf {
    let python = std::env::var_os("CIOFS_PYTHON").map_or_else(|| repo_root().join(".venv/bin/python"), PathBuf::from);
    assert!(
        python.exists(),
        "{} is missing: run scripts/emulators install (it installs kubernetes-validate and PyYAML into .venv), \
         or set CIOFS_PYTHON",
        python.display()
    );
    python
}

/// Every YAML document of `file`, as JSON.
pub fn yaml_documents(file: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))";
    let output = Command::new(venv_python()).args(["-c", script]).arg(file).output().expect("python runs");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {said}", file.display());
    serde_json::from_slice(&output.stdout).expect("json")
}
