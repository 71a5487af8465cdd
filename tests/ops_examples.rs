//! The files operators copy: the systemd unit and its drop-in agree with the
//! example configuration; the GitOps example repository passes `calld check`
//! and its gate fails on a bad spec; the CI workflow and the Kubernetes
//! manifests parse and say what the docs say.
//! (`.ci/ops-checks` adds systemd-analyze and promtool on top.)

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::cargo_bin;
use calld::config::{Config, SecretRef};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `Key=Value` assignments of one section of a unit file, in order.
fn section(unit: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not an assignment: {line}"));
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    out
}

fn values<'a>(assignments: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    assignments
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn unit_has_the_hardening_and_the_credential_the_config_names() {
    let unit = read("examples/systemd/calld.service");
    let service = section(&unit, "Service");
    let one = |key: &str| -> &str {
        let v = values(&service, key);
        assert_eq!(v.len(), 1, "{key}: {v:?}");
        v[0]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert!(
        one("ExecStart").starts_with("/usr/bin/calld run "),
        ".ci/ops-checks rewrites this path"
    );
    assert!(one("WatchdogSec").ends_with('s'));
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "calld"),
        ("ConfigurationDirectory", "calld"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("NoNewPrivileges", "yes"),
        ("SystemCallArchitectures", "native"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("UMask", "0077"),
    ] {
        assert_eq!(one(key), want, "{key}");
    }
    assert_eq!(
        values(&service, "SystemCallFilter"),
        ["@system-service", "~@privileged @resources"]
    );

    // The credential the unit loads is the one the example config reads.
    let creds = values(&service, "LoadCredential");
    assert_eq!(creds, ["client-secret:/etc/calld/client-secret"]);
    let config = Config::from_file(&root().join("examples/systemd/calld.yaml")).unwrap();
    assert_eq!(
        config.graph.client_secret,
        Some(SecretRef::Credential("client-secret".into()))
    );
    assert!(config.admin.listen.starts_with("127.0.0.1:"));
    assert_eq!(
        config.calls_dir.as_deref(),
        Some(Path::new("/etc/calld/calls.d"))
    );
    assert!(
        config.state_dir.is_none(),
        "stateDir comes from StateDirectory="
    );
    assert_eq!(
        values(&section(&unit, "Install"), "WantedBy"),
        ["multi-user.target"]
    );
}

#[test]
fn certificate_drop_in_replaces_the_secret_credential() {
    let conf = read("examples/systemd/calld.service.d/certificate.conf");
    let service = section(&conf, "Service");
    // The empty assignment first: it drops client-secret from the list.
    assert_eq!(
        values(&service, "LoadCredential"),
        [
            "",
            "client-key:/etc/calld/client.key",
            "client-cert:/etc/calld/client.crt"
        ]
    );
    // The paths its comment tells the operator to configure.
    assert!(conf.contains("keyFile: /run/credentials/calld.service/client-key"));
    assert!(conf.contains("certFile: /run/credentials/calld.service/client-cert"));
    let config = Config::from_yaml(
        "graph:\n  certificate:\n    keyFile: /run/credentials/calld.service/client-key\n    \
         certFile: /run/credentials/calld.service/client-cert\n",
    )
    .unwrap();
    assert!(config.graph.certificate.is_some());
}

fn calld(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cargo_bin("calld"))
        .args(args)
        .current_dir(dir)
        .env_remove("CALLD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn gitops_gate_passes_the_example_repo_and_fails_a_bad_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config-repo");
    copy_dir(&root().join("examples/gitops/config-repo"), &repo);

    // The workflow's two commands, from the repository root.
    let (code, out, err) = calld(
        &repo,
        &[
            "check",
            "calls.d",
            "--config",
            "calld.yaml",
            "--format",
            "github",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("::error"), "{out}");

    let (code, out, err) = calld(
        &repo,
        &[
            "plan",
            "calls.d",
            "--config",
            "calld.yaml",
            "--format",
            "json",
            "--count",
            "3",
            "--from",
            "2026-12-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = plan["specs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "oncall/primary-weekly-handover",
            "oncall/secondary-weekly-handover",
            "team-a/standup"
        ]
    );
    for spec in plan["specs"].as_array().unwrap() {
        assert_eq!(spec["runs"].as_array().unwrap().len(), 3, "{spec}");
        assert_eq!(spec["permissions"][0], "Calls.Initiate.All");
    }

    // A pull request adding a bad spec: exit 1 and annotations on its lines.
    std::fs::write(
        repo.join("calls.d/team-a/broken.yaml"),
        "targets:\n  - phone: \"+49\"\ntagets: []\n",
    )
    .unwrap();
    let (code, out, err) = calld(
        &repo,
        &[
            "check",
            "calls.d",
            "--config",
            "calld.yaml",
            "--format",
            "github",
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    let annotations: Vec<&str> = out.lines().filter(|l| l.starts_with("::error ")).collect();
    assert!(
        annotations
            .iter()
            .any(|l| l.starts_with("::error file=calls.d/team-a/broken.yaml,line=2,")),
        "{out}"
    );
    assert!(
        annotations
            .iter()
            .any(|l| l.starts_with("::error file=calls.d/team-a/broken.yaml,line=3,")),
        "{out}"
    );
    let (code, _, _) = calld(
        &repo,
        &[
            "plan",
            "calls.d",
            "--config",
            "calld.yaml",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 1, "plan fails too, so the job fails either way");
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn workflow_runs_the_gate_commands() {
    let docs = yaml_docs("examples/gitops/config-repo/.github/workflows/calld.yml");
    assert_eq!(docs.len(), 1);
    let wf = &docs[0];
    assert!(wf["on"]["pull_request"].is_object(), "{wf}");
    let steps = wf["jobs"]["check"]["steps"].as_array().unwrap();
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(
        runs.iter()
            .any(|r| r.contains("calld check calls.d --config calld.yaml --format github")),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .any(|r| r.contains("calld plan calls.d --config calld.yaml --format json")),
        "{runs:?}"
    );
}

#[test]
fn kubernetes_manifests_parse_and_their_config_and_spec_are_valid() {
    let git_sync = yaml_docs("examples/gitops/kubernetes/git-sync.yaml");
    let kinds: Vec<&str> = git_sync
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Deployment", "PersistentVolumeClaim"]);
    let pod = &git_sync[0]["spec"]["template"]["spec"];
    assert_eq!(git_sync[0]["spec"]["replicas"], 1, "one daemon per ledger");
    let containers: Vec<&str> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["calld", "git-sync"]);
    let args = pod["containers"][0]["args"].to_string();
    assert!(args.contains("/git/current/calls.d"), "{args}");

    let cm = yaml_docs("examples/gitops/kubernetes/configmap.yaml");
    let kinds: Vec<&str> = cm.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "ConfigMap", "Deployment"]);
    let config = Config::from_yaml(cm[0]["data"]["calld.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        config.calls_dir.as_deref(),
        Some(Path::new("/etc/calld/calls.d"))
    );
    // No subPath on the calls volume: subPath mounts never see updates.
    let mounts = cm[2]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].to_string();
    assert!(!mounts.contains("subPath"), "{mounts}");

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("calld.yaml"),
        cm[0]["data"]["calld.yaml"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("standup.yaml"),
        cm[1]["data"]["standup.yaml"].as_str().unwrap(),
    )
    .unwrap();
    let (code, out, err) = calld(
        tmp.path(),
        &["check", "standup.yaml", "--config", "calld.yaml"],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// Issue 13: `examples/kubernetes/replicas/calld.yaml`, two replicas on a
/// shared PostgreSQL ledger, each pod with its own git-sync checkout.
#[test]
fn kubernetes_replicas_manifest_is_consistent() {
    let rel = "examples/kubernetes/replicas/calld.yaml";
    let docs = yaml_docs(rel);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    );
    let (cm, deploy, svc, pdb) = (&docs[0], &docs[1], &docs[2], &docs[3]);

    // The configuration: valid, a ledger section without any secret in it.
    let text = cm["data"]["calld.yaml"].as_str().unwrap();
    let config = Config::from_yaml(text).unwrap_or_else(|e| panic!("{rel}: calld.yaml: {e}"));
    assert_eq!(
        config.calls_dir.as_deref(),
        Some(Path::new("/git/current/calls.d"))
    );
    let cfg: Value = serde_saphyr::from_str(text).unwrap();
    let ledger = &cfg["ledger"];
    assert!(ledger.is_object(), "no ledger section: {cfg}");
    assert!(ledger["url"].is_null(), "the URL comes from the Secret");
    let password_file = ledger["passwordFile"].as_str().unwrap();
    assert!(!text.to_lowercase().contains("password:"), "{text}");

    // Two replicas that roll (no Recreate), never fewer than one ready.
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_ne!(deploy["spec"]["strategy"]["type"], "Recreate");
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deploy["spec"]["selector"]["matchLabels"], labels);
    let pod = &deploy["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calld", "git-sync"]);
    let (calld, git_sync) = (&containers[0], &containers[1]);

    // git-sync and calld share an emptyDir; calld reads it read-only.
    let volume = |name: &str| -> &Value {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mount = |c: &Value, path_prefix: &str| -> Value {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| path_prefix.starts_with(m["mountPath"].as_str().unwrap()))
            .cloned()
            .unwrap_or_else(|| panic!("{} mounts nothing at {path_prefix}", c["name"]))
    };
    let git_mount = mount(calld, "/git/current/calls.d");
    assert_eq!(git_mount["readOnly"], true);
    assert!(volume(git_mount["name"].as_str().unwrap())["emptyDir"].is_object());
    assert_eq!(mount(git_sync, "/git")["name"], git_mount["name"]);
    assert!(
        git_sync["args"].to_string().contains("--link=current"),
        "{}",
        git_sync["args"]
    );

    // The ledger URL from a Secret; the password file on a mounted Secret.
    let env = calld["env"].as_array().unwrap();
    let url = env
        .iter()
        .find(|e| e["name"] == "CALLD_LEDGER_URL")
        .expect("CALLD_LEDGER_URL");
    assert!(url["value"].is_null(), "the URL is not inline");
    let secret = url["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap();
    let cred_mount = mount(calld, password_file);
    assert_eq!(cred_mount["readOnly"], true);
    let file = Path::new(password_file)
        .strip_prefix(cred_mount["mountPath"].as_str().unwrap())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let cred = volume(cred_mount["name"].as_str().unwrap()).to_string();
    assert!(
        cred.contains(secret) && cred.contains(&file),
        "{password_file} is not the Secret {secret}: {cred}"
    );

    // Readiness on /readyz (false while the database is unreachable).
    assert_eq!(calld["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(calld["livenessProbe"]["httpGet"]["path"], "/healthz");

    // The Service reaches the callback listener of every pod.
    assert_eq!(&svc["spec"]["selector"], labels);
    let target = svc["spec"]["ports"][0]["targetPort"].as_str().unwrap();
    let port = calld["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == target)
        .unwrap_or_else(|| panic!("no container port {target}"));
    let listen = cfg["callback"]["listen"].as_str().unwrap();
    assert!(
        listen.ends_with(&format!(":{}", port["containerPort"])),
        "{listen} vs {port}"
    );

    // Disruptions keep one pod.
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
}
