//! `herald`: the Herald gateway and its small tools.
//!
//! - `herald serve`: run a gateway (embedded, single node, when no Redis is
//!   configured).
//! - `herald worker`: run only the dispatch workers (message log,
//!   webhooks, retention) of a cluster.
//! - `herald token`: mint a user JWT for testing.
//! - `herald check-config`: load and check a configuration file.
//! - `herald expr check|eval`: the filter-expression playground.
//!
//! The gateway itself is the `herald_gateway` library (`lib.rs`).

use clap::{Parser, Subcommand};
use herald_gateway::config::{self, Config, LogFormat, Overrides};
use herald_gateway::{auth, server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a clustered WebSocket broker for realtime events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway. With no configuration at all it starts a development
    /// app and prints its credentials.
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on (port 0 picks a free one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Redis URL to join a cluster (redis:// or redis-cluster://).
        #[arg(long)]
        redis: Option<String>,
        /// Database for channel definitions and realtime settings
        /// (postgres://… for a cluster; default: SQLite, in memory or
        /// under data_dir).
        #[arg(long)]
        database: Option<String>,
    },
    /// Run only the dispatch workers (message log, channel webhooks,
    /// retention), without serving clients: for deployments that scale
    /// delivery apart from connections. Needs Redis and a database.
    Worker {
        #[arg(long, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
        /// Address for /healthz, /readyz and /metrics.
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[arg(long)]
        redis: Option<String>,
        #[arg(long)]
        database: Option<String>,
    },
    /// Mint a user JWT signed with an app's jwt_secret, for testing.
    Token {
        #[arg(long, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
        /// App id (default: the only app, or the development app).
        #[arg(long)]
        app: Option<String>,
        /// User id (`sub`).
        #[arg(long, default_value = "u-1")]
        sub: String,
        /// Product context as a JSON object, e.g. '{"issue":"10001"}'.
        #[arg(long)]
        ctx: Option<String>,
        #[arg(long)]
        role: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Load a configuration file, check it, and print the effective values.
    CheckConfig {
        #[arg(long, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Filter expressions: check one, or evaluate it against an event.
    #[command(subcommand)]
    Expr(ExprCommand),
}

#[derive(Subcommand)]
enum ExprCommand {
    /// Check an expression's syntax and static cost, as a trigger is checked.
    Check {
        expression: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate an expression as a filter over an event.
    Eval {
        expression: String,
        /// The event: a JSON file, or `-` for standard input.
        #[arg(long)]
        event: PathBuf,
        /// The step budget.
        #[arg(long, default_value_t = 50_000)]
        max_steps: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            redis,
            database,
        } => serve(
            config,
            Overrides {
                listen,
                redis_url: redis,
                database_url: database,
            },
        ),
        Command::Worker {
            config,
            listen,
            redis,
            database,
        } => worker(
            config,
            Overrides {
                listen,
                redis_url: redis,
                database_url: database,
            },
        ),
        Command::Token {
            config,
            app,
            sub,
            ctx,
            role,
            ttl,
        } => token(config, app, sub, ctx, role, ttl),
        Command::CheckConfig { config } => check_config(config),
        Command::Expr(command) => return expr(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in collected logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(file: Option<PathBuf>, overrides: Overrides) -> Result<(), String> {
    let (config, dev) = config::load(file.as_deref(), &overrides).map_err(|e| e.to_string())?;
    init_logging(&config);
    for problem in config::secret_problems(&config) {
        tracing::warn!("{problem} (`herald check-config` refuses this configuration)");
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let server = server::Server::bind(config.clone()).await?;
        let addr = server.local_addr().map_err(|e| e.to_string())?;
        // Before saying so: a stop from now on is a clean one.
        let stop = server::signal();
        println!(
            "Herald listening on http://{addr} (node {}, {})",
            server.state().node.id(),
            server.mode()
        );
        if dev {
            print_dev_banner(addr, &config);
        }
        server.run(stop).await.map_err(|e| e.to_string())
    })
}

fn worker(file: Option<PathBuf>, overrides: Overrides) -> Result<(), String> {
    let (config, _) = config::load(file.as_deref(), &overrides).map_err(|e| e.to_string())?;
    init_logging(&config);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let stop = server::signal();
        herald_gateway::workers::run_worker(config, stop).await
    })
}

fn print_dev_banner(addr: SocketAddr, config: &Config) {
    let token = mint(config, None, "u-1".into(), None, None, 3600).unwrap_or_default();
    println!(
        "\nNo apps configured: serving the development app (its credentials are public; never use it in production).\n  \
         app id:     {app}\n  \
         API key:    {key}\n  \
         anon key:   {anon} (Socket.IO / @insforge/sdk: auth.token, or createClient({{ anonKey }}))\n  \
         user token: {token}\n  \
         (for sub u-1, valid 1 hour; `herald token --sub NAME` mints more)\n\n  \
         connect:    ws://{addr}/v1/ws?token=<user token>\n  \
         socket.io:  io(\"http://{addr}\", {{ auth: {{ token: \"{anon}\" }} }})\n  \
         publish:    curl -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n              \
         -d '{{\"channel\":\"news\",\"payload\":{{\"hello\":\"world\"}}}}' http://{addr}/api/v1/publish/global\n",
        app = config::DEV_APP,
        key = config::DEV_API_KEY,
        anon = config::DEV_ANON_KEY,
    );
}

fn mint(
    config: &Config,
    app: Option<String>,
    sub: String,
    ctx: Option<String>,
    role: Option<String>,
    ttl: u64,
) -> Result<String, String> {
    let app = match app {
        Some(id) => config
            .apps
            .iter()
            .find(|a| a.id == id)
            .ok_or_else(|| format!("no app `{id}` in the configuration"))?,
        None => match config.apps.as_slice() {
            [only] => only,
            _ => return Err("several apps are configured: name one with --app".into()),
        },
    };
    let secret = app
        .jwt_secret
        .as_deref()
        .ok_or_else(|| format!("app `{}` has no jwt_secret to sign with", app.id))?;
    let ctx = match ctx {
        None => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => return Err("--ctx must be a JSON object, e.g. '{\"issue\":\"10001\"}'".into()),
        },
    };
    let exp = jsonwebtoken::get_current_timestamp() + ttl;
    auth::mint_user_token(
        secret,
        &auth::UserClaims {
            sub,
            app: app.id.clone(),
            exp,
            nbf: None,
            iat: None,
            role,
            email: None,
            ctx,
        },
    )
}

fn token(
    file: Option<PathBuf>,
    app: Option<String>,
    sub: String,
    ctx: Option<String>,
    role: Option<String>,
    ttl: u64,
) -> Result<(), String> {
    let (config, _) =
        config::load(file.as_deref(), &Overrides::default()).map_err(|e| e.to_string())?;
    println!("{}", mint(&config, app, sub, ctx, role, ttl)?);
    Ok(())
}

fn check_config(file: Option<PathBuf>) -> Result<(), String> {
    let (config, dev) =
        config::load(file.as_deref(), &Overrides::default()).map_err(|e| e.to_string())?;
    auth::Apps::new(&config.apps)?;
    let problems = config::secret_problems(&config);
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let mut shown = config.clone();
    shown.redis_url = shown.redis_url.as_deref().map(herald_redis::redact);
    shown.database_url = shown.database_url.as_deref().map(herald_store::redact);
    if shown.metrics_token.is_some() {
        shown.metrics_token = Some("<redacted>".into());
    }
    for app in &mut shown.apps {
        app.api_keys = app
            .api_keys
            .iter()
            .map(|_| "<redacted>".to_owned())
            .collect();
        // Anonymous keys ship inside browser apps, but a printed config is
        // no place for any key.
        app.anon_keys = app
            .anon_keys
            .iter()
            .map(|_| "anon_<redacted>".to_owned())
            .collect();
        if app.jwt_secret.is_some() {
            app.jwt_secret = Some("<redacted>".into());
        }
    }
    for warning in config::history_warnings(&config) {
        eprintln!("warning: {warning}");
    }
    let text = toml_like(&shown)?;
    println!(
        "configuration is valid{}\n\n{text}",
        if dev {
            " (no apps: the development app would be served)"
        } else {
            ""
        }
    );
    Ok(())
}

fn toml_like(config: &Config) -> Result<String, String> {
    serde_json::to_string_pretty(config).map_err(|e| e.to_string())
}

/// `herald expr`: exits 0 when the expression is fine (and, for `eval`,
/// gives a Boolean), 1 otherwise.
fn expr(command: ExprCommand) -> ExitCode {
    let (source, event, limits, json) = match command {
        ExprCommand::Check { expression, json } => {
            (expression, None, herald_expr::Limits::default(), json)
        }
        ExprCommand::Eval {
            expression,
            event,
            max_steps,
            json,
        } => {
            let text = if event.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&event)
            };
            let parsed = text
                .map_err(|e| format!("cannot read {}: {e}", event.display()))
                .and_then(|t| {
                    serde_json::from_str::<serde_json::Value>(&t)
                        .map_err(|e| format!("{} is not JSON: {e}", event.display()))
                });
            match parsed {
                Ok(v) => {
                    let limits = herald_expr::Limits {
                        max_steps,
                        ..Default::default()
                    };
                    (expression, Some(v), limits, json)
                }
                Err(e) => {
                    eprintln!("herald: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let (report, error) = herald_expr::report::report(&source, event.as_ref(), &limits);
    let fine = error.is_none()
        && report.complexity_error.is_none()
        && (event.is_none() || report.result.is_some());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_report(&source, &report, error.as_ref(), event.is_some());
    }
    if fine {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_report(
    source: &str,
    report: &herald_expr::report::Report,
    error: Option<&herald_expr::ExprError>,
    evaluated: bool,
) {
    if let Some(result) = report.result {
        println!("result:     {result}");
    }
    if let Some(e) = error {
        println!("error:      {e}");
        for line in e.caret(source).lines() {
            println!("  {line}");
        }
    }
    if evaluated && report.complexity.is_some() {
        println!("steps:      {}", report.steps);
    }
    if let Some(complexity) = &report.complexity {
        println!("complexity: {complexity}");
        let mut variables: Vec<_> = report.variables.iter().collect();
        variables.sort_by_key(|(name, _)| "NMLKJIHGFEDC".find(name.as_str()).unwrap_or(usize::MAX));
        for (name, list) in variables {
            println!("  {name} = size of {list}");
        }
    }
    match &report.complexity_error {
        Some(why) => println!("refused:    {why}"),
        None if error.is_none() && !evaluated => println!("ok"),
        None => {}
    }
}
