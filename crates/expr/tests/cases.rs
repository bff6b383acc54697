//! Runs every case in `cases.toml` against the events in `events/`.

use herald_expr::{Expression, Limits};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
struct File {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    expr: String,
    event: Option<String>,
    event_json: Option<String>,
    want: Option<String>,
    error: Option<String>,
    steps: Option<u64>,
    complexity: Option<String>,
    refused: Option<String>,
    max_steps: Option<u64>,
}

fn events() -> HashMap<String, Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/events");
    std::fs::read_dir(&dir)
        .expect("tests/events")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("event file");
            (name, serde_json::from_str(&text).expect("event JSON"))
        })
        .collect()
}

/// Expands `<<TEXT*N>>` in a case's expression to TEXT repeated N times,
/// for the cases about size and depth.
fn expand(source: &str) -> String {
    let mut out = String::new();
    let mut rest = source;
    while let Some(start) = rest.find("<<") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(">>").expect("closing >>") + start;
        let (text, times) = rest[start + 2..end].rsplit_once('*').expect("TEXT*N");
        out.push_str(&text.repeat(times.parse().expect("N")));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Checks one case; the mismatches it found, if any.
fn run(case: &Case, events: &HashMap<String, Value>) -> Vec<String> {
    let expr = expand(&case.expr);
    let mut problems = Vec::new();
    let limits = Limits {
        max_steps: case.max_steps.unwrap_or(50_000),
        ..Limits::default()
    };
    let event = match &case.event_json {
        Some(text) => serde_json::from_str(text).expect("event_json"),
        None => events[case.event.as_deref().unwrap_or("issue-created")].clone(),
    };
    let compiled = match Expression::compile_with(&expr, &limits) {
        Ok(e) => e,
        Err(e) => {
            if case.error.as_deref() != Some(e.to_string().as_str()) {
                problems.push(format!("compile error: {e}"));
            }
            if case.refused.is_some() {
                problems.push("refused case does not compile".into());
            }
            return problems;
        }
    };
    let (result, steps) = compiled.evaluate_value(&event);
    match (&result, &case.want, &case.error) {
        (Ok(v), Some(want), _) => match serde_json::from_str::<Value>(want) {
            Ok(want) if *v == want => {}
            Ok(want) => problems.push(format!("value {v}, want {want}")),
            Err(e) => problems.push(format!("`want` is not JSON: {e}")),
        },
        (Ok(v), None, Some(_)) => problems.push(format!("no error, value {v}")),
        (Ok(_), None, None) => {}
        (Err(e), _, want) if want.as_deref() != Some(e.to_string().as_str()) => {
            problems.push(format!("error: {e}"))
        }
        (Err(_), _, _) => {}
    }
    if case.steps.is_some_and(|want| want != steps) {
        problems.push(format!("steps {steps}, want {:?}", case.steps));
    }
    // As a filter: the value when it is a Boolean, an error otherwise.
    let filter = compiled.evaluate(&event);
    match (&result, &filter.result) {
        (Ok(Value::Bool(v)), Ok(b)) if v == b => {}
        (Ok(Value::Bool(_)), _) | (_, Ok(_)) => {
            problems.push(format!("filter said {:?} for {result:?}", filter.result))
        }
        (_, Err(_)) => {}
    }
    if let Some(want) = &case.complexity {
        if compiled.complexity().to_string() != *want {
            problems.push(format!("complexity {}, want {want}", compiled.complexity()));
        }
    }
    let checked = Expression::check(&expr, &limits);
    match (&checked, &case.refused) {
        (Err(e), Some(want)) if e.to_string() == *want => {}
        (Err(e), Some(_)) => problems.push(format!("refused: {e}")),
        (Ok(_), Some(_)) => problems.push("not refused".into()),
        (Err(e), None) => problems.push(format!("refused: {e}")),
        _ => {}
    }
    problems
}

#[test]
fn every_case_behaves_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases.toml");
    let file: File = toml::from_str(&std::fs::read_to_string(path).expect("cases.toml"))
        .unwrap_or_else(|e| panic!("cases.toml: {}", e.message()));
    assert!(file.case.len() >= 150, "{} cases", file.case.len());
    let events = events();
    let mut failures = Vec::new();
    for case in &file.case {
        assert!(
            case.want.is_some()
                || case.error.is_some()
                || case.complexity.is_some()
                || case.refused.is_some(),
            "case {:?} expects nothing",
            case.expr
        );
        let problems = run(case, &events);
        if !problems.is_empty() {
            failures.push(format!(
                "{}\n    {}\n    {}",
                case.name.as_deref().unwrap_or(""),
                case.expr.trim(),
                problems.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        file.case.len(),
        failures.join("\n")
    );
}

/// The example payloads of the Jira Software reference page, which lives
/// in the project's `shared/reference/` beside the repository.
fn reference_examples() -> Option<Vec<Value>> {
    let page = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/jira-software-events.txt");
    let text = std::fs::read_to_string(page).ok()?;
    let mut examples = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match (&mut block, line) {
            (None, "{") => block = Some("{".into()),
            (Some(b), "}") => {
                b.push('}');
                examples.push(serde_json::from_str(b).expect("an example is JSON"));
                block = None;
            }
            (Some(b), _) => b.push_str(line),
            (None, _) => {}
        }
    }
    Some(examples)
}

#[test]
fn the_jira_software_examples_are_among_the_events() {
    let events = events();
    let Some(examples) = reference_examples() else {
        eprintln!(
            "shared/reference/ is not beside the repository: checked the fixtures' types only"
        );
        for name in [
            "board-created",
            "board-configuration-changed",
            "sprint-updated",
        ] {
            assert!(events[name]["eventType"].is_string());
        }
        return;
    };
    assert_eq!(examples.len(), 3, "the page has three examples");
    for example in &examples {
        assert!(
            events.values().any(|e| e == example),
            "no event file is the example {}",
            example["eventType"]
        );
    }
}
