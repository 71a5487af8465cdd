//! The documents are true to the code: the shell examples of the README and
//! of docs/daemon.md and docs/spec-format.md run as shown against the
//! sandbox (the real binary, the demo specs), the documents cite only
//! files that exist, the documented defaults are the code's, and the
//! demo specs' `$schema` is the schema `calld schema` prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_calld");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const WAIT: Duration = Duration::from_secs(90);

/// The ```sh blocks of a markdown file.
fn sh_blocks(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match &mut cur {
            None if line.trim_start().starts_with("```sh") => cur = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
                out.push(std::mem::take(block));
                cur = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// The commands of a block: continuation lines joined, comments (`  # ...`)
/// and comment lines dropped.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let line = match line.find("  #") {
            Some(i) => &line[..i],
            None => line,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        out.push(std::mem::take(&mut pending));
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `bash -c cmd` in `dir` with the built calld first on PATH.
fn sh(dir: &Path, cmd: &str, admin: u16) -> std::process::Output {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .args(["-euo", "pipefail", "-c", cmd])
        .current_dir(dir)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("CALLD_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env_remove("CALLD_CONFIG")
        .env_remove("CALLD_STATE_DIR")
        .env_remove("CALLD_CALLS_DIR")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn wait_completed(dir: &Path, spec: &str, admin: u16) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = sh(dir, &format!("calld history {spec} --format json"), admin);
        if out.status.success() {
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if doc["runs"][0]["outcome"] == "completed" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{spec} never completed: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Commands the test does not run, and why (anything else unhandled fails
/// the test, so a new example is either run or listed here).
fn skipped(cmd: &str) -> bool {
    // builds, the test suite and CI: this test is part of them
    cmd.starts_with("cargo test")
        || cmd.starts_with("cargo clippy")
        || cmd.starts_with("cargo fmt")
        || cmd.starts_with("cargo bench")
        || cmd == "bash .ci/run"
}

#[test]
fn shell_examples_run_as_shown_in_the_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Path::new(REPO);
    let demo = tmp.path().join("demo");
    copy_dir(&repo.join("calls.d"), &demo.join("calls.d"));
    let admin = free_port();
    let log = std::fs::File::create(tmp.path().join("daemon.log")).unwrap();
    let _daemon = Daemon(
        Command::new(BIN)
            .arg("run")
            .current_dir(&demo)
            .env("NO_COLOR", "1")
            .env("CALLD_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env_remove("CALLD_CONFIG")
            .env_remove("CALLD_STATE_DIR")
            .env_remove("CALLD_CALLS_DIR")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_completed(&demo, "demo-call", admin);

    let mut ran = Vec::new();
    for doc in ["README.md", "docs/daemon.md", "docs/spec-format.md"] {
        for block in sh_blocks(&repo.join(doc)) {
            if block.contains("<<'EOF'") {
                // a drop: the file is written elsewhere and moved in
                let script = block.replace("/tmp/", &format!("{}/", tmp.path().display()));
                let out = sh(&demo, &script, admin);
                assert!(out.status.success(), "{doc}: {block}\n{out:?}");
                let name = script
                    .lines()
                    .find_map(|l| l.strip_prefix("mv "))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|t| Path::new(t).file_stem())
                    .map(|s| s.to_string_lossy().into_owned())
                    .expect("the drop moves a file into calls.d");
                wait_completed(&demo, &name, admin);
                ran.push(format!("{doc}: drop {name}"));
                continue;
            }
            for cmd in commands(&block) {
                let cmd = match cmd.strip_prefix("cargo run -- ") {
                    Some(rest) => format!("calld {rest}"),
                    None => cmd,
                };
                if skipped(&cmd) {
                    continue;
                }
                if cmd.contains("/path/to/calld") {
                    // setting up a demo directory like the one this test runs in
                    let scratch = tmp.path().join("scratch");
                    std::fs::create_dir_all(&scratch).unwrap();
                    let out = sh(
                        &scratch,
                        &cmd.replace("/path/to/calld", &repo.display().to_string()),
                        admin,
                    );
                    assert!(out.status.success(), "{doc}: {cmd}\n{out:?}");
                    assert!(scratch.join("demo/calls.d/demo-call.yaml").exists());
                    ran.push(format!("{doc}: {cmd}"));
                    continue;
                }
                assert!(
                    cmd.starts_with("calld "),
                    "{doc}: an example the test does not know how to run: {cmd}"
                );
                if cmd == "calld run" {
                    // the daemon: running already (started above, as shown)
                    ran.push(format!("{doc}: {cmd}"));
                    continue;
                }
                let dir: PathBuf = if cmd.starts_with("calld run --once") {
                    // its own state directory: the daemon holds the other
                    let d = tmp.path().join(format!("once-{}", ran.len()));
                    copy_dir(&repo.join("calls.d"), &d.join("calls.d"));
                    d
                } else {
                    demo.clone()
                };
                let out = sh(&dir, &cmd, admin);
                assert!(
                    out.status.success(),
                    "{doc}: `{cmd}` exited {:?}\nstdout: {}\nstderr: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                ran.push(format!("{doc}: {cmd}"));
            }
        }
    }
    println!("ran {} examples:\n{}", ran.len(), ran.join("\n"));
    for needed in [
        "calld status",
        "calld history demo-call",
        "calld check",
        "drop ring",
    ] {
        assert!(
            ran.iter().any(|r| r.contains(needed)),
            "{needed} among {ran:?}"
        );
    }
}

#[test]
fn documents_cite_only_files_in_the_repository() {
    let repo = Path::new(REPO);
    let mut docs = vec![repo.join("README.md")];
    for e in std::fs::read_dir(repo.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    let mut missing = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for part in text.split("](").skip(1) {
            let Some(end) = part.find(')') else { continue };
            let target = part[..end].split('#').next().unwrap();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let p = doc.parent().unwrap().join(target);
            if !p.exists() {
                missing.push(format!("{}: {target}", doc.display()));
            }
        }
        // documents outside the repository are not cited as if they were here
        for outside in ["ARCHITECTURE.md", "SPEC §", "SPEC section", "(SPEC "] {
            if text.contains(outside) {
                missing.push(format!("{}: cites {outside}", doc.display()));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn documented_defaults_are_the_code_defaults() {
    let config = calld::config::Config::from_yaml("").unwrap();
    let debounce = calld::duration::format_duration(config.daemon.debounce);
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("debounce: {debounce} ")),
        "README's debounce is {debounce}"
    );
    let daemon = std::fs::read_to_string(Path::new(REPO).join("docs/daemon.md")).unwrap();
    let ms = config.daemon.debounce.as_millis();
    assert!(
        daemon.contains(&format!("(`daemon.debounce`, {ms} ms)")),
        "docs/daemon.md's debounce is {ms} ms"
    );
}

#[test]
fn the_demo_schema_is_the_one_calld_prints() {
    let repo = Path::new(REPO);
    let out = Command::new(BIN).arg("schema").output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("docs/calld-spec.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        printed, shipped,
        "docs/calld-spec.schema.json is stale: run `calld schema > docs/calld-spec.schema.json`"
    );
    for e in std::fs::read_dir(repo.join("calls.d")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        for line in text.lines() {
            if let Some(rel) = line.split("$schema=").nth(1) {
                let target = p.parent().unwrap().join(rel.trim());
                assert!(target.exists(), "{}: {rel} does not exist", p.display());
            }
        }
    }
}
