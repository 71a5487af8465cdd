//! The `calld` binary: argument parsing, logging and exit codes; the work is
//! in the library.
//!
//! Exit codes: 0 success, 1 the command ran and found a problem (an invalid
//! spec, an unknown spec or run, a call that did not complete), 2 usage or
//! environment error (clap's usage errors exit 2 as well).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

// `--features system-alloc`: the system allocator, for heap profilers that
// hook malloc (heaptrack); mimalloc keeps the daemon's resident set smaller.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// `check` and `plan`: text, JSON or GitHub annotations.
#[derive(Clone, Copy, ValueEnum)]
enum CheckFormat {
    /// Human-readable
    Text,
    /// One JSON document (see the README's JSON section)
    Json,
    /// GitHub Actions annotations (`::error file=...,line=...,col=...::message`)
    Github,
}

/// `status`, `history`: text or JSON.
#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    /// Human-readable
    Text,
    /// One JSON document (see the README's JSON section)
    Json,
}

impl From<CheckFormat> for calld::cli::Format {
    fn from(f: CheckFormat) -> Self {
        match f {
            CheckFormat::Text => calld::cli::Format::Text,
            CheckFormat::Json => calld::cli::Format::Json,
            CheckFormat::Github => calld::cli::Format::Github,
        }
    }
}

impl From<OutFormat> for calld::cli::Format {
    fn from(f: OutFormat) -> Self {
        match f {
            OutFormat::Text => calld::cli::Format::Text,
            OutFormat::Json => calld::cli::Format::Json,
        }
    }
}

const CONFIG_HELP: &str =
    "Configuration file (default: $CALLD_CONFIG, else /etc/calld/calld.yaml when it exists)";
const STATE_HELP: &str = "State directory holding ledger.db (default: as `calld run` finds it: $CALLD_STATE_DIR, the configuration's stateDir, $STATE_DIRECTORY, ./.calld)";
const ADMIN_HELP: &str = "Ask a running daemon's admin endpoint instead of reading the ledger (e.g. http://127.0.0.1:9464)";

#[derive(Subcommand)]
enum Command {
    /// The daemon: watch the calls directory, place calls, record outcomes.
    Run {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// The calls directory (default: the configuration's callsDir, else ./calls.d)
        #[arg(long)]
        calls_dir: Option<PathBuf>,
        /// The state directory (default: the configuration's stateDir, else $STATE_DIRECTORY, else ./.calld)
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Place what is due now, wait for the outcomes, print them, exit
        /// (0 only if every call completed).
        #[arg(long)]
        once: bool,
        /// With --once: how long to wait for the outcomes (default 5m).
        #[arg(long, requires = "once")]
        timeout: Option<String>,
    },
    /// Per spec: state, schedule, next run (in its time zone), last run, last success, reason.
    Status {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        #[arg(long, help = STATE_HELP, conflicts_with = "admin")]
        state_dir: Option<PathBuf>,
        #[arg(long, help = ADMIN_HELP, value_name = "URL")]
        admin: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: OutFormat,
        /// Do not cut the REASON column to the terminal's width
        #[arg(long)]
        wide: bool,
    },
    /// The runs, attempts and call states of one spec, newest first.
    History {
        /// The spec's name (as `calld status` lists it)
        name: String,
        /// At most this many runs; 0: all of them
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        #[arg(long, help = STATE_HELP, conflicts_with = "admin")]
        state_dir: Option<PathBuf>,
        #[arg(long, help = ADMIN_HELP, value_name = "URL")]
        admin: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: OutFormat,
    },
    /// Place one run of a spec now, outside its schedule, through the running daemon (recorded like any run).
    Trigger {
        /// The spec's name
        name: String,
        /// An id for this request: the same id never places two runs (default: a fresh one)
        #[arg(long)]
        request_id: Option<String>,
        /// Wait for the run's outcome and print it; exit 0 only if it completed
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to wait (default 5m)
        #[arg(long, requires = "wait")]
        timeout: Option<String>,
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// The daemon's admin endpoint (default: the configuration's admin.listen)
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: OutFormat,
    },
    /// Place a finished run's call again (outcome failed, missed or notEstablished; unknown with --force).
    Retry {
        /// The run's id (as `calld history` shows it)
        run: String,
        /// Also retry a run that ended `unknown` (its call may have rung already)
        #[arg(long)]
        force: bool,
        /// Wait for the new run's outcome and print it; exit 0 only if it completed
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to wait (default 5m)
        #[arg(long, requires = "wait")]
        timeout: Option<String>,
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// The daemon's admin endpoint (default: the configuration's admin.listen)
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: OutFormat,
    },
    /// What the running daemon would do if its calls directory became PATH (exit 0: nothing would change, 1: something would).
    Diff {
        /// The proposed calls directory (default: the calls directory)
        path: Option<PathBuf>,
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        #[arg(long, help = STATE_HELP, conflicts_with = "admin")]
        state_dir: Option<PathBuf>,
        #[arg(long, help = ADMIN_HELP, value_name = "URL")]
        admin: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: OutFormat,
    },
    /// Validate spec files or directories (default: the calls directory). No network.
    Check {
        /// Files or directories (default: the calls directory)
        paths: Vec<PathBuf>,
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: CheckFormat,
    },
    /// Print the Graph create-call request of each spec, one JSON object per line.
    Render {
        /// A file or directory (default: the calls directory)
        path: Option<PathBuf>,
        /// Only the spec with this name.
        #[arg(long)]
        name: Option<String>,
        /// Graph API version: v1.0 or beta (default: the configuration's, else v1.0).
        #[arg(long)]
        api: Option<String>,
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
    },
    /// Per spec: the next run times, required permissions and warnings.
    Plan {
        /// A file or directory (default: the calls directory)
        path: Option<PathBuf>,
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// How many run times per spec.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Plan from this time (RFC 3339) instead of now.
        #[arg(long)]
        from: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: CheckFormat,
    },
    /// Graph credentials: get a token and compare its roles with what the specs need.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// The Graph emulator alone.
    Emulator {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8700")]
        listen: String,
        /// Emulator configuration (see docs/emulator.md)
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
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page of calld or of one command (roff), or write them all to a directory.
    Man {
        /// The command whose page to print (default: calld itself)
        command: Option<String>,
        /// Write calld.1 and one calld-COMMAND.1 per command into this directory
        #[arg(long, conflicts_with = "command")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Get a token with the configured credentials and print its roles against what each spec needs (exit 1 if one is missing).
    Check {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// Spec files or directories (default: the calls directory)
        paths: Vec<PathBuf>,
    },
}

fn man(command: Option<&str>, dir: Option<&std::path::Path>) -> u8 {
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    if let Some(dir) = dir {
        if let Err(e) =
            std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd.clone(), dir))
        {
            eprintln!("calld man: {}: {e}", dir.display());
            return 2;
        }
        return 0;
    }
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                eprintln!("calld man: no command `{name}`");
                return 2;
            }
        },
    };
    match clap_mangen::Man::new(page).render(&mut std::io::stdout()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("calld man: {e}");
            2
        }
    }
}

/// `--wait [--timeout D]`.
fn parse_wait(wait: bool, timeout: Option<&str>) -> Result<Option<std::time::Duration>, u8> {
    if !wait {
        return Ok(None);
    }
    calld::duration::parse_duration(timeout.unwrap_or("5m"))
        .map(Some)
        .map_err(|e| {
            eprintln!("calld: --timeout: {e}");
            2
        })
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
            let timeout = match calld::duration::parse_duration(timeout.as_deref().unwrap_or("5m"))
            {
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
            admin,
            format,
            wide,
        } => calld::status::status(
            config.as_deref(),
            state_dir.as_deref(),
            admin.as_deref(),
            format.into(),
            wide,
        ),
        Command::History {
            name,
            limit,
            config,
            state_dir,
            admin,
            format,
        } => calld::status::history(
            &name,
            limit,
            config.as_deref(),
            state_dir.as_deref(),
            admin.as_deref(),
            format.into(),
        ),
        Command::Trigger {
            name,
            request_id,
            wait,
            timeout,
            config,
            admin,
            format,
        } => match parse_wait(wait, timeout.as_deref()) {
            Ok(wait) => calld::trigger::trigger_cmd(
                &name,
                request_id.as_deref(),
                config.as_deref(),
                admin.as_deref(),
                matches!(format, OutFormat::Json),
                wait,
            ),
            Err(code) => code,
        },
        Command::Retry {
            run,
            force,
            wait,
            timeout,
            config,
            admin,
            format,
        } => match parse_wait(wait, timeout.as_deref()) {
            Ok(wait) => calld::trigger::retry_cmd(
                &run,
                force,
                config.as_deref(),
                admin.as_deref(),
                matches!(format, OutFormat::Json),
                wait,
            ),
            Err(code) => code,
        },
        Command::Diff {
            path,
            config,
            state_dir,
            admin,
            format,
        } => calld::diff::run(
            path.as_deref(),
            config.as_deref(),
            state_dir.as_deref(),
            admin.as_deref(),
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
        } => calld::cli::render(
            path.as_deref(),
            name.as_deref(),
            api.as_deref(),
            config.as_deref(),
        ),
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
        Command::Auth {
            command: AuthCommand::Check { config, paths },
        } => calld::auth_check::run(config.as_deref(), &paths),
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
        Command::Man { command, dir } => man(command.as_deref(), dir.as_deref()),
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and every flag or argument of every command has help.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "calld", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }
}
