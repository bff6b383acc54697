//! The size, depth and budget limits: no input can overflow the stack,
//! exhaust memory or run for long.

use herald_expr::{Expression, Limits};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn error_of(source: &str) -> String {
    Expression::compile(source)
        .expect_err("refused")
        .to_string()
}

#[test]
fn input_over_10000_characters_is_refused_before_parsing() {
    let ok = format!("'{}'", "a".repeat(9_998));
    assert!(Expression::compile(&ok).is_ok());
    let long = format!("'{}'", "a".repeat(9_999));
    assert_eq!(
        error_of(&long),
        "1:1: The expression is too long: 10001 characters, at most 10000."
    );
    // Characters, not bytes.
    let wide = format!("'{}'", "é".repeat(9_998));
    assert!(Expression::compile(&wide).is_ok());
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    for source in [
        format!("{}1{}", "(".repeat(4_999), ")".repeat(4_999)),
        format!("{}1{}", "[".repeat(4_999), "]".repeat(4_999)),
        "!".repeat(9_000) + "true",
        "-".repeat(9_000) + "1",
        format!("{}1{}", "{a: ".repeat(1_900), "}".repeat(1_900)),
        "if (true) { ".repeat(700) + &"}".repeat(700),
        format!("event{}", ".a".repeat(4_000)),
        format!("1{}", " + 1".repeat(2_000)),
        format!("x => {}", "x => ".repeat(1_800)) + "1",
        format!("`{}1{}`", "${`".repeat(1_900), "`}".repeat(1_900)),
    ] {
        let error = error_of(&source);
        assert!(
            error.contains("nested too deeply"),
            "{}...: {error}",
            &source[..40]
        );
    }
}

#[test]
fn node_count_is_capped() {
    let limits = Limits {
        max_nodes: 100,
        ..Limits::default()
    };
    let source = format!("[{}]", vec!["1"; 100].join(","));
    let error = Expression::compile_with(&source, &limits).expect_err("refused");
    assert_eq!(
        error.message,
        "The expression is too large: more than 100 nodes."
    );
}

/// The deepest programs the limits allow, evaluated on a thread with the
/// stack of a tokio worker (2 MiB), in whatever profile the tests run.
#[test]
fn the_deepest_allowed_programs_evaluate_on_a_small_stack() {
    let depth = Limits::default().max_depth as usize;
    let programs = vec![
        format!("{}true{}", "(".repeat(depth - 2), ")".repeat(depth - 2)),
        format!("{}1{}", "[".repeat(depth - 2), "]".repeat(depth - 2)),
        format!("{}true", "!".repeat(depth - 2)),
        format!("1{}", " + 1".repeat(depth - 2)),
        format!("event.a{}", "?.a".repeat(depth - 3)),
        // Functions calling functions: limited by the evaluation depth.
        "let f = g => g(g); f(f)".to_owned(),
        "let f = g => [1].map(x => g(g)); f(f)".to_owned(),
        "let f = g => [1].some(x => g(g).length > 0); f(f)".to_owned(),
        "let f = g => `${g(g)}`; f(f)".to_owned(),
        "let f = g => {a: g(g)}; f(f)".to_owned(),
        "let f = g => [1].reduce((a, x) => g(g), 0); f(f)".to_owned(),
        "let f = g => g(g) ?? g(g); try { f(f) } catch (e) { 1 }".to_owned(),
        format!(
            "let f = g => {}g(g){}; f(f)",
            "(".repeat(depth - 10),
            ")".repeat(depth - 10)
        ),
    ];
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let mut event = json!(1);
            for _ in 0..120 {
                event = json!({ "a": event });
            }
            for source in &programs {
                let expression = match Expression::compile(source) {
                    Ok(e) => e,
                    Err(e) => panic!("{source}: {e}"),
                };
                let _ = expression.evaluate(&event);
                let _ = expression.evaluate_value(&event);
            }
        })
        .expect("thread")
        .join()
        .expect("no stack overflow");
}

/// Expressions built to be slow per step: each must finish within a fixed
/// multiple of the time 50,000 plain steps take. The multiple is generous
/// because this runs beside other tests on a shared machine; what it
/// catches is an operation that is not charged for its work, which shows
/// up as hundreds or thousands of times slower.
#[test]
fn the_budget_bounds_time() {
    let event: Value = serde_json::from_str(include_str!("events/issue-created.json")).unwrap();
    let hundred = format!(
        "[{}]",
        (0..100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let baseline = format!("{hundred}.map(x => {hundred}.map(y => x + y))");
    let hostile = [
        // Text that doubles: charged per 64 bytes.
        format!("{hundred}.reduce((s, x) => s + s, 'abcdefgh').length"),
        format!("{hundred}.reduce((s, x) => `${{s}}${{s}}`, 'abcdefgh').length"),
        // Long text through every string method.
        format!("let s = {hundred}.reduce((s, x) => s + s, 'ab c').length; 1"),
        format!("let s = {hundred}.slice(0, 20).reduce((s, x) => s + s, 'Ab, '); {hundred}.map(x => [s.toUpperCase(), s.toLowerCase(), s.trim(), s.includes('zz'), s.split(','), s.split(''), s.match('b'), s.length])"),
        // Whole-event work: equality and text of the event.
        format!("{hundred}.map(x => event == event)"),
        format!("{hundred}.map(x => `${{event}}`.length)"),
        format!("{hundred}.map(x => [event, event, event].includes({{}}))"),
        // Lists that grow.
        format!("{hundred}.reduce((l, x) => l.flatMap(y => [y, y]), [1])"),
        format!("{hundred}.map(x => {hundred}.slice(0))"),
        // Regular expressions compiled while evaluating.
        format!("{hundred}.map(x => 'abcdefgh'.match('(a|b|c|d|e|f|g|h){{' + x + '}}'))"),
        format!("{hundred}.map(x => 'aaaaaaaaaaaaaaaaaaaaaaaa'.match('(a*)*b' + x))"),
        // Functions calling functions.
        "let f = g => g(g); f(f)".to_owned(),
    ];
    let time = |source: &str| {
        let expression = Expression::compile(source).unwrap_or_else(|e| panic!("{source}: {e}"));
        (0..3)
            .map(|_| {
                let start = Instant::now();
                let outcome = expression.evaluate(&event);
                assert!(outcome.steps <= 50_000);
                (start.elapsed(), outcome)
            })
            .min_by_key(|(t, _)| *t)
            .expect("three runs")
    };
    let (base, outcome) = time(&baseline);
    assert_eq!(outcome.steps, 50_000, "the baseline uses the whole budget");
    let ceiling = (base * 40).max(Duration::from_millis(200));
    for source in &hostile {
        let (took, _) = time(source);
        eprintln!(
            "{:>6.1} x baseline: {source:.70}",
            took.as_secs_f64() / base.as_secs_f64()
        );
        assert!(
            took <= ceiling,
            "{source}: {took:?}, more than 40 x {base:?} (50,000 plain steps)"
        );
    }
}
