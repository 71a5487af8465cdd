//! `calld auth check`: gets a token with the configured credentials (as
//! the daemon would: file, `CALLD_*` environment) and prints its roles
//! against the permissions each spec needs. Exit 0 when every spec's
//! permissions are granted, 1 when one is missing (or the token carries no
//! readable roles), 2 when no token can be had (the error says why; the
//! secret is never printed).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{Config, GraphMode};
use crate::graph::GraphClient;
use crate::spec::model::role_granted;

/// One spec's line: its name, each needed role and whether it is granted.
pub fn spec_lines(
    specs: &[(String, Vec<&'static str>)],
    granted: &[String],
) -> (Vec<String>, bool) {
    let mut ok = true;
    let lines = specs
        .iter()
        .map(|(name, needs)| {
            let parts: Vec<String> = needs
                .iter()
                .map(|r| {
                    if role_granted(granted, r) {
                        format!("{r} ok")
                    } else {
                        ok = false;
                        format!("{r} MISSING")
                    }
                })
                .collect();
            format!("  {name}: {}", parts.join(", "))
        })
        .collect();
    (lines, ok)
}

pub fn run(config: Option<&Path>, paths: &[PathBuf]) -> u8 {
    let (mut cfg, _) = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calld auth check: configuration: {e}");
            return 2;
        }
    };
    if let Err(e) = crate::daemon::apply_env_overrides(&mut cfg, &|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    }) {
        eprintln!("calld auth check: configuration: {e}");
        return 2;
    }
    let set = match crate::cli::load_paths(paths, &cfg, jiff::Timestamp::now()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("calld auth check: {e}");
            return 2;
        }
    };
    let specs: Vec<(String, Vec<&'static str>)> = set
        .specs
        .values()
        .map(|s| (s.name.clone(), s.permissions.to_vec()))
        .collect();
    let mut out = std::io::stdout().lock();
    if cfg.graph.effective_mode() == GraphMode::Sandbox {
        let _ = writeln!(
            out,
            "sandbox mode (no graph.clientId): the built-in emulator grants every role; nothing to check"
        );
        return 0;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match GraphClient::from_config(&cfg.graph) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calld auth check: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("calld auth check: {e}");
            return 2;
        }
    };
    let token = match rt.block_on(client.tokens().token()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("calld auth check: no token: {e}");
            return 2;
        }
    };
    let _ = writeln!(
        out,
        "token: obtained for tenant {} (client {}), expires {}",
        token
            .tenant_id()
            .or(cfg.graph.tenant_id.as_deref())
            .unwrap_or("?"),
        cfg.graph.client_id.as_deref().unwrap_or("?"),
        token.expires_at()
    );
    let Some(granted) = token.roles().map(<[String]>::to_vec) else {
        let _ = writeln!(
            out,
            "roles: unknown (the token is not a readable JWT); Graph checks permissions itself"
        );
        return 1;
    };
    let _ = writeln!(
        out,
        "roles: {}",
        if granted.is_empty() {
            "(none)".to_string()
        } else {
            granted.join(", ")
        }
    );
    if specs.is_empty() {
        let _ = writeln!(out, "no valid spec to check");
        return 0;
    }
    let _ = writeln!(out, "specs ({}):", specs.len());
    let (lines, ok) = spec_lines(&specs, &granted);
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    if !ok {
        let _ = writeln!(
            out,
            "some specs need a role the application lacks: grant it (application permission, admin consent) or their runs are `rejected`"
        );
    }
    u8::from(!ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_roles_are_marked() {
        let specs = vec![
            ("a".to_string(), vec!["Calls.Initiate.All"]),
            (
                "b".to_string(),
                vec!["Calls.JoinGroupCall.All", "Calls.AccessMedia.All"],
            ),
        ];
        let (lines, ok) = spec_lines(&specs, &["Calls.Initiate.All".to_string()]);
        assert!(!ok);
        assert_eq!(lines[0], "  a: Calls.Initiate.All ok");
        assert!(lines[1].contains("Calls.JoinGroupCall.All MISSING"));
        let (_, ok) = spec_lines(&specs[..1], &["calls.initiate.all".to_string()]);
        assert!(ok, "case-insensitive");
    }
}
