//! A short fuzz run of each target in CI; the long run is the `fuzz`
//! example (docs/benchmarks.md).

use herald_gateway::fuzz;

#[test]
fn a_short_fuzz_run_of_every_target_finds_no_panic() {
    for target in fuzz::TARGETS {
        let report = fuzz::run(target, 20_000, 42);
        assert_eq!(report.inputs, 20_000);
        assert!(report.panics.is_empty(), "{target}: {:?}", report.panics);
    }
}
