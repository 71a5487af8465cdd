//! The `check`, `render`, `plan`, `schema` and `emulator` commands.
//! Each returns the process exit code: 0 success, 1 a problem found, 2 usage
//! or environment error.

use std::path::{Path, PathBuf};

pub fn check(_paths: &[PathBuf], _config: Option<&Path>, _json: bool) -> u8 {
    eprintln!("calld check: not built yet");
    2
}

pub fn render(_path: &Path, _name: Option<&str>, _api: Option<&str>, _config: Option<&Path>) -> u8 {
    eprintln!("calld render: not built yet");
    2
}

pub fn plan(
    _path: Option<&Path>,
    _config: Option<&Path>,
    _count: usize,
    _from: Option<&str>,
    _json: bool,
) -> u8 {
    eprintln!("calld plan: not built yet");
    2
}

pub fn schema() -> u8 {
    eprintln!("calld schema: not built yet");
    2
}

pub fn emulator(listen: &str, config: Option<&Path>) -> u8 {
    match crate::emulator::run_cli(listen, config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("calld emulator: {e:#}");
            2
        }
    }
}
