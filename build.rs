//! Build script: records the git commit for `calld --version` ("0.1.0 (abc1234)")
//! and the `calld_build_info` metric.
//!
//! `CALLD_GIT_COMMIT` set in the environment wins (for builds from a tarball,
//! e.g. a distribution package); else `git rev-parse --short HEAD`; else
//! "unknown". It never fails the build.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Re-run when this git file changes, but only if it exists (a missing path
/// would make cargo re-run the script on every build).
fn watch_git_path(name: &str) {
    if let Some(path) = git(&["rev-parse", "--git-path", name]) {
        let path = PathBuf::from(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CALLD_GIT_COMMIT");

    let commit = match std::env::var("CALLD_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // HEAD moves on checkout; the branch ref (or packed-refs) on commit.
            watch_git_path("HEAD");
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch_git_path(&r);
            }
            watch_git_path("packed-refs");
            git(&["rev-parse", "--short=7", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    // Only characters that are safe in a label value and a version string.
    let commit: String = commit
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(40)
        .collect();
    let commit = if commit.is_empty() {
        "unknown".to_string()
    } else {
        commit
    };
    println!("cargo:rustc-env=CALLD_GIT_COMMIT={commit}");
}
