//! `cargo run --release -p herald-gateway --example fuzz -- [INPUTS] [SEED] [TARGET]`
//!
//! Runs INPUTS (default 1,000,000) mutated inputs through each fuzz target
//! (or only TARGET): the WebSocket frame parser, the server-API bodies,
//! user-JWT and channel-token verification, the Socket.IO packet decoder,
//! channel-definition patterns. Exits 1 on a panic.

use herald_gateway::fuzz;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let inputs: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let only = args.next();
    // Panics are caught and counted; keep their messages off the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for target in fuzz::TARGETS {
        if only.as_deref().is_some_and(|o| o != *target) {
            continue;
        }
        let started = Instant::now();
        let report = fuzz::run(target, inputs, seed);
        println!(
            "{target}: {} inputs in {:.1} s, {} panics, slowest input {:.2} ms",
            report.inputs,
            started.elapsed().as_secs_f64(),
            report.panics.len(),
            report.slowest.as_secs_f64() * 1000.0
        );
        for input in &report.panics {
            println!("  panicked on: {input:?}");
            failed = true;
        }
    }
    // Inputs are at most 64 KiB and nothing is kept between them: the
    // process's peak memory says whether any input made a target allocate
    // without bound.
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown".into());
    println!("peak resident memory: {peak}");
    std::process::exit(i32::from(failed));
}
