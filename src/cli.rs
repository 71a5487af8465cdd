//! The `check`, `render`, `plan`, `schema` and `emulator` commands
//! (`status`/`history` are in [`crate::status`], `auth check` in
//! [`crate::auth_check`]).
//! Each returns the process exit code: 0 success, 1 a problem found, 2 usage
//! or environment error.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::json;

use crate::config::{ApiVersion, Config};
use crate::spec::files::{MAX_SPEC_FILE_BYTES, list_spec_files};
use crate::spec::{Context, Diagnostic, Input, SetBuilder, Severity, SpecSet};

/// Output formats of `check` and `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    /// GitHub Actions workflow annotations (`::error file=...`).
    Github,
}

fn load_config(config: Option<&Path>) -> Result<Config, u8> {
    Config::load(config).map(|(c, _)| c).map_err(|e| {
        eprintln!("calld: configuration: {e}");
        2
    })
}

/// Reads a file, at most one byte over the spec size limit (the loader
/// reports oversized files without reading them whole).
pub fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // room for a spec file of a few KB up front: one read and one to see
    // the end, instead of a probe and a doubling buffer (and no stat)
    let mut bytes = Vec::with_capacity(8 * 1024);
    file.take(MAX_SPEC_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// The files named on a command line: directories are walked, files are
/// taken as they are. A file inside `calls_dir` is named relative to it (so
/// its default spec name matches the daemon's).
/// A file to load: (label, path relative to the calls dir, the path to read
/// or the error met listing it). Files are read one at a time while
/// loading, so a directory of 10,000 specs is never all in memory at once.
type ToRead = (String, String, Result<PathBuf, String>);

fn collect_inputs(paths: &[PathBuf], calls_dir: &Path) -> Result<Vec<ToRead>, String> {
    let mut out = Vec::new();
    let calls_canon = std::fs::canonicalize(calls_dir).ok();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            let (files, problems) =
                list_spec_files(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for p in problems {
                out.push((
                    p.path.display().to_string(),
                    p.path.display().to_string(),
                    Err(p.message),
                ));
            }
            // a folder inside the calls directory: names relative to the
            // calls directory, as the daemon gives them (`team-a/standup`)
            let prefix = rel_to_calls_dir(path, calls_canon.as_deref()).filter(|p| !p.is_empty());
            for f in files {
                let label = f.path.display().to_string();
                let rel = match &prefix {
                    Some(p) => format!("{p}/{}", f.rel),
                    None => f.rel,
                };
                out.push((label, rel, Ok(f.path)));
            }
        } else {
            let label = path.display().to_string();
            let rel = rel_to_calls_dir(path, calls_canon.as_deref())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| {
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
            out.push((label, rel, Ok(path.clone())));
        }
    }
    Ok(out)
}

/// `path` relative to the (canonical) calls directory, `/`-separated, when
/// it lies inside it.
fn rel_to_calls_dir(path: &Path, calls_canon: Option<&Path>) -> Option<String> {
    let canon = std::fs::canonicalize(path).ok()?;
    let rel = canon.strip_prefix(calls_canon?).ok()?;
    Some(rel.to_string_lossy().replace('\\', "/"))
}

/// Loads and validates the given paths (default: the calls directory).
pub fn load_paths(paths: &[PathBuf], config: &Config, now: Timestamp) -> Result<SpecSet, String> {
    let calls_dir = config.calls_dir();
    let paths = if paths.is_empty() {
        vec![calls_dir.clone()]
    } else {
        paths.to_vec()
    };
    let inputs = collect_inputs(&paths, &calls_dir)?;
    let public_url = config.effective_public_url();
    let ctx = Context {
        defaults: &config.defaults,
        public_url: public_url.as_deref(),
        now,
    };
    // read and validate on all cores (issue 12: parsing dominates `check`)
    let loads = crate::spec::incremental::par_map(inputs, |(label, rel, path)| {
        let bytes = path.and_then(|p| read_limited(&p));
        crate::spec::load_input(
            Input {
                label,
                rel,
                bytes: bytes.as_deref().map_err(Clone::clone),
            },
            &ctx,
        )
    });
    let mut builder = SetBuilder::default();
    for load in loads {
        builder.add(load);
    }
    Ok(builder.finish())
}

fn print_text_diagnostics(out: &mut impl Write, diags: &[Diagnostic]) {
    for d in diags {
        let _ = writeln!(out, "{d}");
    }
}

/// GitHub Actions annotation escaping (`%`, CR, LF; and `,` `:` in properties).
fn gh_escape(s: &str, property: bool) -> String {
    let mut out = s
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    if property {
        out = out.replace(':', "%3A").replace(',', "%2C");
    }
    out
}

pub fn github_annotation(d: &Diagnostic) -> String {
    let level = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let msg = if d.path.is_empty() {
        d.message.clone()
    } else {
        format!("{}: {}", d.path, d.message)
    };
    format!(
        "::{level} file={},line={},col={}::{}",
        gh_escape(&d.file, true),
        d.line,
        d.column,
        gh_escape(&msg, false)
    )
}

pub fn check(paths: &[PathBuf], config: Option<&Path>, format: Format) -> u8 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let set = match load_paths(paths, &config, Timestamp::now()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("calld check: {e}");
            return 2;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Json => {
            let doc = json!({
                "files": set.file_count,
                "specs": set.specs.keys().collect::<Vec<_>>(),
                "invalidFiles": set.invalid_files,
                "errors": set.error_count(),
                "warnings": set.warning_count(),
                "diagnostics": set.diagnostics,
            });
            let _ = writeln!(stdout, "{doc}");
        }
        Format::Github => {
            for d in &set.diagnostics {
                let _ = writeln!(stdout, "{}", github_annotation(d));
            }
        }
        Format::Text => {
            print_text_diagnostics(&mut stdout, &set.diagnostics);
            let _ = writeln!(
                stdout,
                "{} files, {} valid specs: {} errors, {} warnings",
                set.file_count,
                set.specs.len(),
                set.error_count(),
                set.warning_count()
            );
        }
    }
    if set.file_count == 0 {
        // a CI gate that checks nothing must not pass
        eprintln!(
            "calld check: warning: no spec files (*.yaml, *.yml) found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return 1;
    }
    u8::from(set.error_count() > 0)
}

/// `calld render [PATH]` (default: the calls directory).
pub fn render(
    path: Option<&Path>,
    name: Option<&str>,
    api: Option<&str>,
    config: Option<&Path>,
) -> u8 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config.calls_dir());
    let path = path.as_path();
    let api: ApiVersion = match api.map(str::parse).transpose() {
        Ok(a) => a.unwrap_or(config.graph.api_version),
        Err(e) => {
            eprintln!("calld render: --api: {e}");
            return 2;
        }
    };
    let set = match load_paths(&[path.to_path_buf()], &config, Timestamp::now()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("calld render: {e}");
            return 2;
        }
    };
    let errors: Vec<&Diagnostic> = set.diagnostics.iter().filter(|d| d.is_error()).collect();
    for d in &errors {
        eprintln!("{d}");
    }
    let mut stdout = std::io::stdout().lock();
    let mut printed = 0;
    for spec in set
        .specs
        .values()
        .filter(|s| name.is_none_or(|n| n == s.name))
    {
        let req = crate::spec::render::request(
            spec,
            &config.graph.base_url(),
            api,
            config.graph.legacy_app_endpoint,
        );
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string(&req).expect("serialisable")
        );
        printed += 1;
    }
    if let (Some(n), 0) = (name, printed) {
        eprintln!(
            "calld render: no valid spec named `{n}` in {}",
            path.display()
        );
        return 1;
    }
    // With --name, only that spec's validity decides (its own errors would
    // have kept it from rendering).
    u8::from(name.is_none() && !errors.is_empty())
}

pub fn plan(
    path: Option<&Path>,
    config: Option<&Path>,
    count: usize,
    from: Option<&str>,
    format: Format,
) -> u8 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let now = match from {
        None => Timestamp::now(),
        Some(text) => match crate::schedule::parse_time(text, &jiff::tz::TimeZone::UTC) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("calld plan: --from: {e}");
                return 2;
            }
        },
    };
    let paths: Vec<PathBuf> = path.map(|p| vec![p.to_path_buf()]).unwrap_or_default();
    let set = match load_paths(&paths, &config, now) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("calld plan: {e}");
            return 2;
        }
    };
    let plans: Vec<crate::plan::SpecPlan> = set
        .specs
        .values()
        .map(|s| crate::plan::plan_spec(s, now, count, &set.diagnostics))
        .collect();
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Json => {
            let doc = json!({
                "from": now.to_string(),
                "specs": plans,
                "errors": set.error_count(),
                "diagnostics": set.diagnostics,
            });
            let _ = writeln!(stdout, "{doc}");
        }
        Format::Github => {
            for d in &set.diagnostics {
                let _ = writeln!(stdout, "{}", github_annotation(d));
            }
        }
        Format::Text => {
            let _ = write!(stdout, "{}", crate::plan::plans_text(&plans));
            let errors: Vec<Diagnostic> = set
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .cloned()
                .collect();
            if !errors.is_empty() {
                let _ = writeln!(stdout, "\ninvalid:");
                print_text_diagnostics(&mut stdout, &errors);
            }
        }
    }
    u8::from(set.error_count() > 0)
}

pub fn schema() -> u8 {
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&crate::spec::schema::json_schema()).expect("JSON")
    );
    0
}

pub fn emulator(listen: &str, config: Option<&Path>, tls: Option<crate::config::TlsConfig>) -> u8 {
    match crate::emulator::run_cli(listen, config, tls) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("calld emulator: {e:#}");
            2
        }
    }
}
