//! Which files in a calls directory are spec files (SPEC 1).
//!
//! Every `*.yaml` / `*.yml` file below the directory, recursively, symlinks
//! followed. Skipped: names starting with `.` (files and folders, so
//! Kubernetes' `..data` internals are skipped while the visible symlinks are
//! read) and editor leftovers (`*~`, `*.swp`, `*.swx`, `*.tmp`, `#*#`, `4913`).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

/// The largest spec file calld reads. Bigger files are reported, not parsed:
/// a call spec is a few hundred bytes, and the limit bounds memory and time.
pub const MAX_SPEC_FILE_BYTES: u64 = 1024 * 1024;

/// Whether a file name (not a path) is skipped by the rules above.
pub fn is_skipped_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
}

/// Whether a file name is a spec file name (`*.yaml` / `*.yml`, not skipped).
pub fn is_spec_file_name(name: &str) -> bool {
    !is_skipped_name(name) && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// One spec file found below a calls directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecFile {
    /// Path relative to the calls directory, `/`-separated (`team-a/standup.yaml`).
    pub rel: String,
    /// The path to open (the calls directory joined with `rel`).
    pub path: PathBuf,
}

/// A problem met while listing (an unreadable folder, a symlink loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkProblem {
    pub path: PathBuf,
    pub message: String,
}

/// Lists every spec file below `dir`, sorted by relative path. Symlinks to
/// files and folders are followed; a folder reached twice through symlinks
/// (a loop) is listed once. Errors inside the tree are returned beside the
/// files, so one unreadable folder does not hide the others; only an
/// unreadable `dir` itself is an `Err`.
pub fn list_spec_files(dir: &Path) -> io::Result<(Vec<SpecFile>, Vec<WalkProblem>)> {
    list_spec_files_noting_links(dir).map(|(f, p, _)| (f, p))
}

/// [`list_spec_files`], and whether the tree holds a symlink (to a file or
/// a folder) among the entries it walked: a change behind a symlink is not
/// an event at the path the symlink has in the tree.
pub fn list_spec_files_noting_links(
    dir: &Path,
) -> io::Result<(Vec<SpecFile>, Vec<WalkProblem>, bool)> {
    let mut links = false;
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut seen_dirs = HashSet::new();
    let root_meta = std::fs::metadata(dir)?;
    if !root_meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory",
        ));
    }
    seen_dirs.insert(dir_identity(&root_meta));
    walk(
        dir,
        "",
        &mut seen_dirs,
        &mut files,
        &mut problems,
        &mut links,
        true,
    )?;
    files.sort();
    Ok((files, problems, links))
}

#[cfg(unix)]
fn dir_identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dir_identity(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

fn walk(
    dir: &Path,
    rel_prefix: &str,
    seen_dirs: &mut HashSet<(u64, u64)>,
    files: &mut Vec<SpecFile>,
    problems: &mut Vec<WalkProblem>,
    links: &mut bool,
    is_root: bool,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_root => return Err(e),
        Err(e) => {
            problems.push(WalkProblem {
                path: dir.to_path_buf(),
                message: e.to_string(),
            });
            return Ok(());
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(WalkProblem {
                    path: dir.to_path_buf(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            problems.push(WalkProblem {
                path: entry.path(),
                message: "file name is not UTF-8; rename it".into(),
            });
            continue;
        };
        if is_skipped_name(name) {
            continue;
        }
        let path = entry.path();
        // d_type from the listing: no extra system call
        let file_type = entry.file_type().ok();
        if file_type.is_some_and(|t| t.is_symlink()) {
            *links = true;
        }
        let rel = |name: &str| {
            if rel_prefix.is_empty() {
                name.to_string()
            } else {
                format!("{rel_prefix}/{name}")
            }
        };
        // a plain file, as the listing says: no stat needed (symlinks,
        // folders and unknown types are resolved below)
        if file_type.is_some_and(|t| t.is_file()) {
            if is_spec_file_name(name) {
                files.push(SpecFile {
                    rel: rel(name),
                    path,
                });
            }
            continue;
        }
        // follow symlinks: metadata() resolves them
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                // a dangling symlink to a spec-looking name is worth reporting
                if is_spec_file_name(name) {
                    problems.push(WalkProblem {
                        path,
                        message: e.to_string(),
                    });
                }
                continue;
            }
        };
        let rel = rel(name);
        if meta.is_dir() {
            if seen_dirs.insert(dir_identity(&meta)) {
                walk(&path, &rel, seen_dirs, files, problems, links, false)?;
            }
        } else if meta.is_file() && is_spec_file_name(name) {
            files.push(SpecFile { rel, path });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_rules() {
        for skipped in [
            ".hidden.yaml",
            "..data",
            "a.yaml~",
            ".a.yaml.swp",
            "x.swx",
            "x.tmp",
            "#a.yaml#",
            "4913",
        ] {
            assert!(!is_spec_file_name(skipped), "{skipped}");
        }
        for kept in ["a.yaml", "b.yml", "team-a.standup.yaml"] {
            assert!(is_spec_file_name(kept), "{kept}");
        }
        assert!(!is_spec_file_name("notes.txt"));
    }

    #[test]
    fn walks_recursively_following_symlinks_and_skipping_dot_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("team-a")).unwrap();
        std::fs::create_dir_all(d.join("..2026_11_26/sub")).unwrap();
        std::fs::write(d.join("team-a/standup.yaml"), "x").unwrap();
        std::fs::write(d.join("..2026_11_26/cm.yaml"), "x").unwrap();
        std::fs::write(d.join("..2026_11_26/sub/deep.yml"), "x").unwrap();
        std::fs::write(d.join("readme.md"), "x").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("..2026_11_26", d.join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/cm.yaml", d.join("cm.yaml")).unwrap();
            std::os::unix::fs::symlink("..data/sub", d.join("sub")).unwrap();
            std::os::unix::fs::symlink(".", d.join("team-a/loop")).unwrap();
        }
        let (files, problems) = list_spec_files(d).unwrap();
        let rels: Vec<_> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["cm.yaml", "sub/deep.yml", "team-a/standup.yaml"]);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
