//! The `calld` binary: argument parsing, logging and exit codes; the work is
//! in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "calld",
    version = calld::VERSION_LONG,
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
    /// The daemon: watch the calls directory, place calls, record outcomes.
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        calls_dir: Option<PathBuf>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Place what is due now, wait for the outcomes, print them, exit
        /// (0 only if every call completed).
        #[arg(long)]
        once: bool,
        /// With --once: how long to wait for the outcomes.
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
    /// Per spec: last run and outcome, next run, problems (reads the ledger).
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// The runs and attempts of one spec, newest first.
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
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
        /// Serve HTTPS with this PEM certificate chain (with --tls-key)
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Print the JSON Schema of the spec format.
    Schema,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run {
            config,
            calls_dir,
            state_dir,
            once,
            timeout,
        } => {
            let timeout = match calld::duration::parse_duration(&timeout) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("calld run: --timeout: {e}");
                    return ExitCode::from(2);
                }
            };
            calld::daemon::run(calld::daemon::RunArgs {
                config,
                calls_dir,
                state_dir,
                once,
                timeout,
            })
        }
        Command::Status {
            config,
            state_dir,
            format,
        } => calld::status::status(config.as_deref(), state_dir.as_deref(), format.into()),
        Command::History {
            name,
            limit,
            config,
            state_dir,
            format,
        } => calld::status::history(
            &name,
            limit,
            config.as_deref(),
            state_dir.as_deref(),
            format.into(),
        ),
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
        Command::Emulator {
            listen,
            config,
            tls_cert,
            tls_key,
        } => {
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert_file, key_file)| calld::config::TlsConfig {
                    cert_file,
                    key_file,
                });
            calld::cli::emulator(&listen, config.as_deref(), tls)
        }
        Command::Schema => calld::cli::schema(),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "calld", &mut std::io::stdout());
            0
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("calld man: {e}");
                    2
                }
            }
        }
    };
    ExitCode::from(code)
}
