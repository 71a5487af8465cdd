//! One consistent CLI, through the real binary: `render` defaults to the
//! calls directory, `run --timeout` needs `--once`, `calld man` writes a
//! page per command (and every page the main page cites exists), and
//! `calld auth check` gets a token from the emulator and compares its roles
//! with what the specs need.

mod daemon_support;

use std::process::Command;

use daemon_support::*;

#[test]
fn render_defaults_to_the_calls_directory() {
    let emu = Emu::start("");
    let env = Env::new(&emu);
    env.drop_spec("a.yaml", &call_spec("A"));
    env.drop_spec("team/b.yaml", &call_spec("B"));
    let out = env.calld(&["render"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["a", "team/b"]);
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN)
        .args(["run", "--timeout", "1m"])
        .env_remove("CALLD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--once"));
    let out = Command::new(BIN).args(["man", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let main = std::fs::read_to_string(dir.path().join("calld.1")).unwrap();
    for cmd in [
        "run", "status", "history", "diff", "trigger", "retry", "check", "render", "plan", "auth",
        "man",
    ] {
        let page = dir.path().join(format!("calld-{cmd}.1"));
        assert!(page.exists(), "{}", page.display());
    }
    assert!(dir.path().join("calld-auth-check.1").exists());
    // every page the main page refers to exists (calld\-run(1) in roff)
    let mut cited = 0;
    for part in main.split("calld\\-").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '\\')
            .collect::<String>()
            .replace('\\', "");
        if part[name.len()..].starts_with("(1)") || part.contains("(1)") {
            let name = name.trim_end_matches('-');
            if !name.is_empty() {
                cited += 1;
                assert!(
                    dir.path().join(format!("calld-{name}.1")).exists(),
                    "calld.1 cites calld-{name}(1)"
                );
            }
        }
    }
    assert!(cited >= 8, "the main page lists the commands: {cited}");
    let out = Command::new(BIN).args(["man", "status"]).output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.contains(".TH calld-status"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(page.contains("\\-\\-admin"), "options documented");
}

#[test]
fn auth_check_compares_roles_with_what_specs_need() {
    // the emulator's client has Calls.Initiate.All only
    let emu = Emu::start(&format!(
        "clients: [{{ id: {CLIENT_ID}, roles: [Calls.Initiate.All] }}]\n"
    ));
    let env = Env::new(&emu);
    env.drop_spec("p2p.yaml", &call_spec("P2P"));
    let check = |env: &Env| {
        let out = Command::new(BIN)
            .args(["auth", "check", "--config"])
            .arg(&env.config)
            .env(SECRET_ENV, "test-secret-value")
            .env_remove("CALLD_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = check(&env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("roles: Calls.Initiate.All"), "{out}");
    assert!(out.contains("p2p: Calls.Initiate.All ok"), "{out}");
    assert!(!out.contains("test-secret-value") && !err.contains("test-secret-value"));

    // a group call needs Calls.InitiateGroupCall.All
    env.drop_spec(
        "group.yaml",
        "subject: G\ntargets:\n  - phone: \"+14255550100\"\n  - phone: \"+14255550101\"\n",
    );
    let (code, out, _) = check(&env);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Calls.InitiateGroupCall.All MISSING"), "{out}");

    // a wrong secret: no token, exit 2, the reason named
    let out = Command::new(BIN)
        .args(["auth", "check", "--config"])
        .arg(&env.config)
        .env_remove(SECRET_ENV)
        .env_remove("CALLD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
