//! The container image's runtime needs, without a container engine: the
//! binary run the way `Dockerfile` runs it — copied to its own directory,
//! as the unprivileged user 10001 (when the test runs as root), with only
//! the image's environment (`HERALD_LISTEN`, `HERALD_DATA_DIR`, a mounted
//! `HERALD_CONFIG`) — answers the image's `HEALTHCHECK` (curl on
//! `/healthz`), keeps its store in the data directory as that user, and
//! stops cleanly on `SIGTERM` (the image's `STOPSIGNAL`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UID: u32 = 10001;

fn as_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

fn give(path: &Path) {
    if as_root() {
        std::os::unix::fs::chown(path, Some(UID), Some(UID)).unwrap();
    }
}

#[test]
fn the_binary_runs_as_the_image_runs_it() {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // /usr/local/bin/herald
    let bin = root.path().join("herald");
    std::fs::copy(env!("CARGO_BIN_EXE_herald"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // /var/lib/herald, the user's own
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    give(&data);
    // /etc/herald/herald.toml, mounted read-only
    let config = root.path().join("herald.toml");
    std::fs::write(
        &config,
        "[[apps]]\nid = \"img\"\napi_keys = [\"key-img\"]\nops_per_second = 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o444)).unwrap();

    let mut command = Command::new(&bin);
    command
        .arg("serve")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_DATA_DIR", &data)
        .env("HERALD_CONFIG", &config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if as_root() {
        command.uid(UID).gid(UID);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines
            .find_map(|l| {
                l.ok()?
                    .strip_prefix("Herald listening on http://")
                    .map(|r| r.split_whitespace().next().unwrap_or_default().to_owned())
            })
            .expect("herald did not start");
        std::thread::spawn(move || for _ in lines {});
        line
    };

    // The image's HEALTHCHECK.
    let health = Command::new("curl")
        .args(["-fsS", &format!("http://{addr}/healthz")])
        .output()
        .expect("curl");
    assert!(health.status.success(), "{health:?}");
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok");

    // The store lives in the data directory, written as the image's user.
    let created = Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "POST",
            "-H",
            "x-api-key: key-img",
            "-H",
            "content-type: application/json",
        ])
        .args(["-d", r#"{"pattern":"img:%"}"#])
        .arg(format!("http://{addr}/api/realtime/channels"))
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let db = data.join("herald.db");
    assert!(db.exists(), "no herald.db in the data directory");
    if as_root() {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&db).unwrap().uid(), UID);
    }

    // STOPSIGNAL SIGTERM: a clean, prompt exit.
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn compose_mounts_files_that_exist() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
    let mut checked = 0;
    for line in compose.lines() {
        let line = line.trim().trim_start_matches("- ");
        if let Some(path) = line.strip_prefix("./") {
            let file = path.split(':').next().unwrap();
            assert!(
                deploy.join(file).exists(),
                "compose.yaml mounts missing {file}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} mounts checked");
    let dockerfile = std::fs::read_to_string(deploy.join("../Dockerfile")).unwrap();
    for needed in [
        "USER 10001",
        "HEALTHCHECK",
        "/healthz",
        "STOPSIGNAL SIGTERM",
        "HERALD_DATA_DIR",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
}
