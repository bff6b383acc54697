//! Filter expression benchmarks (docs/benchmarks.md):
//!
//! ```sh
//! cargo bench -p herald-expr --bench filter
//! ```

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use herald_expr::Expression;
use serde_json::{json, Value};

fn issue_event() -> Value {
    serde_json::from_str(include_str!("../tests/events/issue-created.json")).expect("event")
}

/// An issue update whose changelog has 100 items, none of them the one
/// the filter looks for (so every item is visited).
fn changelog_event() -> Value {
    let items: Vec<Value> = (0..100)
        .map(|i| {
            json!({"field": format!("customfield_{}", 10_000 + i), "fieldtype": "custom",
                   "from": null, "fromString": format!("{i}"), "to": null, "toString": format!("{}", i + 1)})
        })
        .collect();
    json!({"eventType": "avi:jira:updated:issue",
           "issue": {"id": "10074", "key": "SP-13", "fields": {"summary": "x"}},
           "changelog": {"id": "10232", "items": items}})
}

/// A 10,000-character program: many `let`s over the event and a final
/// combination, the shape a generated filter takes.
fn long_expression() -> String {
    let mut source = String::new();
    let mut names = Vec::new();
    for i in 0.. {
        let line = format!(
            "let k{i} = event.issue.fields?.issueType?.name == 'Type{i}' && event.issue.fields.labels.includes('label-{i}');\n"
        );
        let tail = format!("[{}].some(x => x)", names.join(", "));
        if source.len() + line.len() + tail.len() + 6 > 10_000 {
            break;
        }
        source.push_str(&line);
        names.push(format!("k{i}"));
    }
    source.push_str(&format!("[{}].some(x => x)", names.join(", ")));
    source
}

fn benches(c: &mut Criterion) {
    let issue = issue_event();
    let typical =
        Expression::compile("event.issue.fields?.issueType?.name == 'Bug'").expect("typical");
    assert_eq!(typical.evaluate(&issue).result, Ok(true));
    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("typical filter, 3 KB issue event", |b| {
        b.iter(|| typical.evaluate(black_box(&issue)))
    });

    let changelog = changelog_event();
    let list_heavy = Expression::compile(
        "event.changelog.items.some(i => i.field == 'status' && i.toString == 'Done')",
    )
    .expect("list-heavy");
    assert_eq!(list_heavy.evaluate(&changelog).result, Ok(false));
    group.bench_function("list filter, 100 changelog items", |b| {
        b.iter(|| list_heavy.evaluate(black_box(&changelog)))
    });
    group.finish();

    let source = long_expression();
    assert!(
        source.len() <= 10_000 && source.len() > 9_800,
        "{}",
        source.len()
    );
    let compiled = Expression::check(&source, &herald_expr::Limits::default()).expect("long");
    assert_eq!(compiled.evaluate(&issue).result, Ok(false));
    let mut group = c.benchmark_group("compile");
    group.throughput(Throughput::Bytes(source.len() as u64));
    group.bench_function("parse + analyse, 10,000 characters", |b| {
        b.iter(|| Expression::check(black_box(&source), &herald_expr::Limits::default()))
    });
    group.finish();
}

criterion_group!(filter, benches);
criterion_main!(filter);
