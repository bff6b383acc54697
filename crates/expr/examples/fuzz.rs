//! A fuzzer for the expression parser and evaluator that runs on stable
//! Rust: random bytes, token soups, mutations of typical filters, and
//! generated programs, each checked by `herald_expr::testgen::check_input`
//! (no panic; printing and reparsing gives the same tree; evaluation stays
//! within its budget).
//!
//! ```sh
//! cargo run --release -p herald-expr --example fuzz -- 10000000 [seed]
//! ```
//!
//! Prints progress, the slowest input, the peak resident memory, and stops
//! at the first failure with the input that caused it.

use herald_expr::testgen::{self, Rng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let inputs: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = Rng::new(seed);
    let events = [
        serde_json::from_str(include_str!("../tests/events/issue-created.json")).expect("event"),
        serde_json::from_str(include_str!(
            "../tests/events/board-configuration-changed.json"
        ))
        .expect("event"),
        testgen::event(&mut rng, 4),
    ];
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut slowest = (Duration::ZERO, Vec::new());
    for n in 1..=inputs {
        let input = testgen::fuzz_input(&mut rng);
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| testgen::check_input(&input, &events)));
        let took = start.elapsed();
        if took > slowest.0 {
            slowest = (took, input.clone());
        }
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(panic) => Some(format!(
                "panic: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )),
        };
        if let Some(why) = failure {
            eprintln!(
                "input {n} (seed {seed}) failed: {why}\n{:?}",
                String::from_utf8_lossy(&input)
            );
            std::process::exit(1);
        }
        if n % 1_000_000 == 0 {
            eprintln!("{n} inputs, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{inputs} inputs in {secs:.1} s ({:.0}/s), no failure; slowest {:?}: {:?}; peak RSS {}",
        inputs as f64 / secs,
        slowest.0,
        String::from_utf8_lossy(&slowest.1),
        peak_rss()
    );
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
