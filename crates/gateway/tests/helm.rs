//! The Helm chart (`helm/herald`): `tests/helm/check_chart.py` lints it
//! (strict, Kubernetes 1.30) and renders it with the default values and a
//! cluster-shaped values file through Helm's own Go SDK
//! (`helm-python-sdk`), validates every manifest against the Kubernetes
//! 1.30 schemas (`kubernetes-validate`), and checks that bad values are
//! refused by `values.schema.json`. `scripts/test` makes the virtualenv.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_chart_lints_renders_and_validates() {
    let venv = std::env::var("HERALD_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/herald-py")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python virtualenv at {}: run scripts/test, which makes it",
        venv.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/helm/check_chart.py");
    let out = Command::new(python).arg(script).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("chart ok"), "{text}");
}
