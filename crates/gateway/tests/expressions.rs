//! The filter-expression playground, black-box: `herald expr` and
//! `POST /api/v1/expressions/evaluate` on a real `herald` process.

mod common;

use common::Herald;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

const BUG: &str = "event.issue.fields?.issueType?.name == 'Bug'";

fn issue(kind: &str) -> Value {
    json!({"eventType": "avi:jira:created:issue",
           "issue": {"id": "10073", "key": "SP-12",
                     "fields": {"issueType": {"name": kind}, "storyPoints": 5}}})
}

#[tokio::test]
async fn evaluate_answers_result_steps_and_complexity() {
    let herald = Herald::start().await;
    let path = "/api/v1/expressions/evaluate";
    let body = |expression: &str, event: Value| json!({"expression": expression, "event": event});

    let (status, report, _) = herald.post(path, "key-app1", body(BUG, issue("Bug"))).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"result": true, "steps": 6, "complexity": "6"})
    );

    let (_, report, _) = herald
        .post(path, "key-app1", body(BUG, issue("Story")))
        .await;
    assert_eq!(report["result"], false);

    // An expression that fails is answered with its error and location.
    let failing = "event.issue.fields.storyPoints == event.issue.id";
    let (status, report, _) = herald
        .post(path, "key-app1", body(failing, issue("Bug")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(report["result"], Value::Null);
    assert_eq!(
        report["error"],
        json!({"location": "1:32", "line": 1, "column": 32,
               "message": "Can't compare Number to String."})
    );
    let (_, report, _) = herald
        .post(path, "key-app1", body("event.issue.key ==", issue("Bug")))
        .await;
    assert_eq!(
        report["error"]["message"],
        "The expression ended unexpectedly."
    );
    assert_eq!(report["complexity"], Value::Null);
    let (_, report, _) = herald
        .post(path, "key-app1", body("event.issue.key", issue("Bug")))
        .await;
    assert_eq!(
        report["error"]["message"],
        "The expression must evaluate to a Boolean, got String."
    );

    // The static analysis, with what each variable counts.
    let four = "event.a.some(x => x) || event.b.some(x => x) || event.c.some(x => x) || event.d.some(x => x)";
    let event = json!({"a": [], "b": [], "c": [], "d": [true]});
    let (_, report, _) = herald.post(path, "key-app1", body(four, event)).await;
    assert_eq!(report["result"], true);
    assert_eq!(report["complexity"], "2*N + 2*M + 2*L + 2*K + 15");
    assert_eq!(report["variables"]["N"], "event.a");
    assert!(report["complexityError"]
        .as_str()
        .unwrap()
        .contains("At most 3 inferred variables are allowed, found 4."));

    // The step budget.
    let quadratic = format!("{l}.map(x => {l}.map(y => {l}.map(z => x)))", l = "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40]");
    let (_, report, _) = herald
        .post(path, "key-app1", body(&quadratic, json!({})))
        .await;
    assert_eq!(report["steps"], 50_000);
    assert_eq!(
        report["error"]["message"],
        "Evaluation exceeded the limit of 50000 steps."
    );
}

#[tokio::test]
async fn evaluate_refuses_bad_calls() {
    let herald = Herald::start().await;
    let path = "/api/v1/expressions/evaluate";
    let (status, body, _) = herald
        .post(path, "wrong-key", json!({"expression": BUG, "event": {}}))
        .await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    for bad in [
        json!({"expression": BUG}),
        json!({"event": {}}),
        json!({"expression": 1, "event": {}}),
        json!({"expression": BUG, "event": {}, "evnt": {}}),
    ] {
        let (status, body, _) = herald.post(path, "key-app1", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(
            body["errors"][0]["code"], "REALTIME_INVALID_CHANNEL_REQUEST",
            "{bad}"
        );
    }
    // Evaluations draw from the app's operations budget (burst 3).
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, _, _) = herald
            .post(path, "key-limited", json!({"expression": BUG, "event": {}}))
            .await;
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(statuses[4], 429);
}

fn herald_expr(args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("expr")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("herald expr");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn herald_expr_check_and_eval() {
    assert_eq!(
        herald_expr(&["check", BUG], ""),
        (0, "complexity: 6\nok\n".into())
    );

    let (code, out) = herald_expr(&["check", "event.issue.key =="], "");
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "error:      1:19: The expression ended unexpectedly.\n  event.issue.key ==\n                    ^\n"
    );

    let event = issue("Bug").to_string();
    let (code, out) = herald_expr(&["eval", BUG, "--event", "-"], &event);
    assert_eq!(
        (code, out.as_str()),
        (0, "result:     true\nsteps:      6\ncomplexity: 6\n")
    );

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("event.json");
    std::fs::write(&file, &event).expect("event file");
    let failing = "event.issue.fields.storyPoints > 'x'";
    let (code, out) = herald_expr(&["eval", failing, "--event", file.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "error:      1:32: Can't compare Number to String.\n  event.issue.fields.storyPoints > 'x'\n                                 ^\nsteps:      5\ncomplexity: 5\n"
    );

    let (code, out) = herald_expr(
        &[
            "eval",
            "event.issue.key == 'SP-12'",
            "--event",
            "-",
            "--json",
        ],
        &event,
    );
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        report,
        json!({"result": true, "steps": 4, "complexity": "4"})
    );

    let (code, _) = herald_expr(&["eval", BUG, "--event", "-"], "not json");
    assert_eq!(code, 1);
}
