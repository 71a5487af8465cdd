//! The built-in Graph emulator (owned by the Graph work).

use std::path::Path;

/// `calld emulator --listen ADDR [--config F]`: serve until interrupted.
pub fn run_cli(_listen: &str, _config: Option<&Path>) -> anyhow::Result<()> {
    anyhow::bail!("the emulator is not built yet")
}
