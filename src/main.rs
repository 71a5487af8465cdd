//! The `calld` binary: argument parsing, logging and exit codes; the work is
//! in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "calld",
    version,
    about = "Declarative call orchestration on Microsoft Graph"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    /// GitHub Actions annotations (`::error file=...,line=...,col=...::message`)
    Github,
}

impl From<Format> for calld::cli::Format {
    fn from(f: Format) -> Self {
        match f {
            Format::Text => calld::cli::Format::Text,
            Format::Json => calld::cli::Format::Json,
            Format::Github => calld::cli::Format::Github,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Validate spec files or directories (default: the calls directory). No network.
    Check {
        paths: Vec<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print the Graph create-call request of each spec, one JSON object per line.
    Render {
        path: PathBuf,
        /// Only the spec with this name.
        #[arg(long)]
        name: Option<String>,
        /// Graph API version (default: the configuration's, else v1.0).
        #[arg(long)]
        api: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Per spec: the next run times, required permissions and warnings.
    Plan {
        path: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// How many run times per spec.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Plan from this time (RFC 3339) instead of now.
        #[arg(long)]
        from: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// The Graph emulator alone.
    Emulator {
        #[arg(long, default_value = "127.0.0.1:8700")]
        listen: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of the spec format.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check {
            paths,
            config,
            format,
        } => calld::cli::check(&paths, config.as_deref(), format.into()),
        Command::Render {
            path,
            name,
            api,
            config,
        } => calld::cli::render(&path, name.as_deref(), api.as_deref(), config.as_deref()),
        Command::Plan {
            path,
            config,
            count,
            from,
            format,
        } => calld::cli::plan(
            path.as_deref(),
            config.as_deref(),
            count,
            from.as_deref(),
            format.into(),
        ),
        Command::Emulator { listen, config } => calld::cli::emulator(&listen, config.as_deref()),
        Command::Schema => calld::cli::schema(),
    };
    ExitCode::from(code)
}
