//! `herald-loadtest`: load Herald the way an application would, and report
//! latency, throughput, losses and the server's cost.
//!
//! Scenarios ([`scenario`]): `fanout` (one channel, many subscribers),
//! `channels` (many channels, few subscribers each), `presence-churn` (users
//! joining and leaving), `connect-storm` (open connections as fast as the
//! server accepts them), `reconnect` (kill a gateway mid-stream and judge
//! the recovery by offsets). Connections go
//! round-robin over the `--url`s given (gateways, or one load balancer).
//! Publish timestamps travel in the payload; every delivery's latency goes
//! into an HDR histogram. With `--pid`, the gateways' RSS and CPU are
//! sampled from `/proc`. Every loop is bounded by count and time, and only
//! loopback targets are accepted.

mod drivers;
mod plot;
mod proc_stats;
mod report;
mod scenario;
mod timeline;
mod wire;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "herald-loadtest",
    version,
    about = "Load-test harness for Herald"
)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Args, Clone)]
pub struct Target {
    /// Gateway base URL (ws://host:port); repeat for several gateways.
    #[arg(long = "url", default_value = "ws://127.0.0.1:8080", global = true)]
    pub urls: Vec<String>,
    /// Protocol of the server under test.
    #[arg(long, value_enum, default_value = "native", global = true)]
    pub driver: drivers::Kind,
    /// Herald: the app's API key (subscribers connect with it, the
    /// publisher publishes with it). Pusher: the app key.
    #[arg(long, default_value = "dev-key", global = true)]
    pub api_key: String,
    /// Pusher: the app id and secret for the HTTP publish API.
    #[arg(long, default_value = "app", global = true)]
    pub app_id: String,
    #[arg(long, default_value = "", global = true)]
    pub app_secret: String,
    /// Pusher: base URL of the HTTP API (default: the first --url over http).
    #[arg(long, global = true)]
    pub http_url: Option<String>,
    /// Gateway PIDs whose RSS and CPU to sample from /proc (repeat).
    #[arg(long = "pid", global = true)]
    pub pids: Vec<u32>,
    /// Write the result as JSON here, and PNG plots beside it
    /// (`<name>-latency.png`: percentiles per second; `<name>-deliveries.png`:
    /// deliveries per second).
    #[arg(long, global = true)]
    pub out: Option<std::path::PathBuf>,
    /// With --out: no PNG plots.
    #[arg(long, global = true)]
    pub no_plots: bool,
    /// Connections opened at once while setting up.
    #[arg(long, default_value_t = 256, global = true)]
    pub connect_concurrency: usize,
    /// Exit non-zero when any publication was lost or duplicated.
    #[arg(long, global = true)]
    pub fail_on_loss: bool,
    /// No progress bar (for logs and CI).
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub enum Scenario {
    /// One channel, N subscribers, R publishes per second of S bytes.
    Fanout(Load),
    /// C channels with K subscribers each; publishes go round-robin over
    /// the channels at R per second.
    Channels {
        #[arg(long, default_value_t = 100)]
        channels: usize,
        #[command(flatten)]
        load: Load,
    },
    /// Subscribers (Rust client, reconnecting across the --url gateways)
    /// receive a steady stream while the gateway with PID --kill is killed
    /// (SIGKILL) after --kill-after seconds; reports the time to reconnect
    /// and resubscribe, and losses or duplicates judged by offsets. The
    /// publisher uses the last --url: kill another gateway. The app needs
    /// history (history_size) for the missed range to be recovered.
    Reconnect {
        #[command(flatten)]
        load: Load,
        #[arg(long)]
        kill: u32,
        #[arg(long, default_value_t = 3)]
        kill_after: u64,
    },
    /// U users join and leave one presence channel in a loop (subscribe,
    /// unsubscribe) for D seconds while a watcher counts the joins and
    /// leaves it is told of. Native driver only.
    PresenceChurn {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Open N connections as fast as the server accepts them, hold them,
    /// report the connect rate and memory per connection. Above 16,000
    /// connections the sockets are spread over worker processes (this
    /// binary, started again), since one process may hold only as many
    /// sockets as its open-file limit allows.
    ConnectStorm {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold the connections open (memory is sampled then).
        #[arg(long, default_value_t = 3)]
        hold: u64,
        /// Worker processes holding the sockets (0: one per 16,000
        /// connections; 1: all in this process).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// Internal: a connect-storm worker. Opens N connections, prints one
    /// JSON line when they are open, holds them until stdin closes (at
    /// most --max-hold seconds), then closes them.
    #[command(hide = true)]
    HoldConnections {
        #[arg(long)]
        connections: usize,
        /// Index of this worker's first connection (for round-robin).
        #[arg(long, default_value_t = 0)]
        first: usize,
        #[arg(long, default_value_t = 600)]
        max_hold: u64,
    },
}

#[derive(Args, Clone, Copy)]
pub struct Load {
    /// Subscribers (per channel, for `channels`).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publishes per second.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds at the start of publishing whose deliveries count (lost,
    /// duplicated, per-second timeline) but stay out of the latency
    /// percentiles: the first second carries start-up costs (new buffers,
    /// tasks, TCP windows) that a short run would otherwise report as its
    /// p99.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
}

impl Target {
    pub fn driver(&self) -> drivers::Driver {
        drivers::Driver {
            kind: self.driver.clone(),
            key: self.api_key.clone(),
            app_id: self.app_id.clone(),
            secret: self.app_secret.clone(),
        }
    }

    pub fn http_base(&self) -> String {
        self.http_url.clone().unwrap_or_else(|| {
            self.urls[0]
                .replacen("ws://", "http://", 1)
                .trim_end_matches('/')
                .to_owned()
        })
    }
}

impl Load {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration)
    }
}

fn loopback_only(urls: &[String]) -> Result<(), String> {
    for url in urls {
        let host = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .unwrap_or_default();
        let loopback =
            host == "localhost" || host == "[" || host.starts_with("127.") || url.contains("[::1]");
        if !loopback {
            return Err(format!(
                "{url}: only loopback targets (127.0.0.0/8, localhost, [::1]) are allowed"
            ));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = loopback_only(&cli.target.urls) {
        eprintln!("herald-loadtest: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.scenario {
        Scenario::Fanout(load) => scenario::fanout(&cli.target, 1, load).await,
        Scenario::Channels { channels, load } => {
            scenario::fanout(&cli.target, channels.max(1), load).await
        }
        Scenario::Reconnect {
            load,
            kill,
            kill_after,
        } => scenario::reconnect(&cli.target, load, kill, Duration::from_secs(kill_after)).await,
        Scenario::PresenceChurn { users, duration } => {
            scenario::presence_churn(&cli.target, users, Duration::from_secs(duration)).await
        }
        Scenario::ConnectStorm {
            connections,
            hold,
            workers,
        } => {
            let workers = if workers == 0 {
                connections.div_ceil(scenario::SOCKETS_PER_WORKER).max(1)
            } else {
                workers
            };
            scenario::connect_storm(&cli.target, connections, Duration::from_secs(hold), workers)
                .await
        }
        Scenario::HoldConnections {
            connections,
            first,
            max_hold,
        } => {
            return scenario::hold_connections(
                &cli.target,
                connections,
                first,
                Duration::from_secs(max_hold),
            )
            .await;
        }
    };
    match result {
        Ok(report) => {
            print!("{}", report.table());
            if let Some(path) = &cli.target.out {
                if let Err(e) = std::fs::write(path, report.json()) {
                    eprintln!("herald-loadtest: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                if !cli.target.no_plots {
                    match plot::write(&report, path) {
                        Ok(plots) => {
                            for plot in plots {
                                println!("{:<28} {}", "plot", plot.display());
                            }
                        }
                        Err(e) => {
                            eprintln!("herald-loadtest: plots: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
            }
            if cli.target.fail_on_loss && (report.lost > 0 || report.duplicated > 0) {
                eprintln!(
                    "herald-loadtest: {} lost, {} duplicated",
                    report.lost, report.duplicated
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}
