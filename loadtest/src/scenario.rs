//! The scenarios.

use crate::drivers::{self, Driver, Kind};
use crate::proc_stats;
use crate::report::{Latency, Report, ServerCost};
use crate::timeline::{Recorder, Timeline};
use crate::wire::{self, Socket};
use crate::{Load, Target};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

const MIB: f64 = 1024.0 * 1024.0;
/// How long subscribers wait for the last deliveries after publishing ends.
const DRAIN: Duration = Duration::from_secs(5);

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Opens `count` connections round-robin over the URLs, each subscribed to
/// the channel `channel_of(i)` when given.
async fn open(
    target: &Target,
    count: usize,
    channel_of: Option<&(dyn Fn(usize) -> String + Sync)>,
) -> (Vec<(usize, Socket)>, usize, Duration) {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(target.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let url = target.urls[i % target.urls.len()].clone();
        let driver = target.driver();
        let channel = channel_of.map(|f| f(i));
        let permits = Arc::clone(&permits);
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let mut ws = driver.connect(&url).await.ok()?;
            if let Some(channel) = channel {
                driver.subscribe(&mut ws, &channel).await.ok()?;
            }
            Some((i, ws))
        }));
    }
    let mut sockets = Vec::with_capacity(count);
    let mut failed = 0;
    for task in tasks {
        match task.await.ok().flatten() {
            Some(s) => sockets.push(s),
            None => failed += 1,
        }
    }
    (sockets, failed, started.elapsed())
}

struct Received {
    histogram: Histogram<u64>,
    delivered: u64,
    duplicated: u64,
    /// Arrived after a later publication of the same channel.
    reordered: u64,
}

/// Reads one subscriber's events until all its channel's accepted
/// publications arrived (known once publishing ends) or `until`.
async fn receive(
    driver: Driver,
    mut ws: Socket,
    channel: usize,
    mut accepted: watch::Receiver<Option<Arc<Vec<u64>>>>,
    until: Instant,
    mut timeline: Recorder,
    warmup_seq: u64,
) -> Received {
    let mut r = Received {
        histogram: histogram(),
        delivered: 0,
        duplicated: 0,
        reordered: 0,
    };
    // Sequence numbers seen, as a bitset: a duplicate is one seen before;
    // one below the highest seen is reordered, not lost.
    let mut seen: Vec<u64> = Vec::new();
    let mut highest: Option<u64> = None;
    let mut expected = u64::MAX;
    while r.delivered < expected {
        let frame = tokio::select! {
            changed = accepted.changed(), if expected == u64::MAX => {
                if changed.is_err() {
                    break;
                }
                if let Some(counts) = accepted.borrow().as_ref() {
                    expected = counts[channel];
                }
                continue;
            }
            frame = tokio::time::timeout_at(until.into(), ws.next()) => match frame {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(_))) => continue,
                _ => break,
            },
        };
        if let Some(answer) = driver.answer(frame.as_str()) {
            let _ = ws.send(Message::Text(answer.into())).await;
            continue;
        }
        let Some((sent_us, seq)) = drivers::stamp(frame.as_str()) else {
            continue;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if seen.len() <= word {
            seen.resize(word + 1, 0);
        }
        if seen[word] & bit != 0 {
            r.duplicated += 1;
            continue;
        }
        seen[word] |= bit;
        if highest.is_some_and(|h| seq < h) {
            r.reordered += 1;
        }
        highest = highest.max(Some(seq));
        r.delivered += 1;
        let now = wire::now_us();
        let latency = now.saturating_sub(sent_us).max(1);
        if seq >= warmup_seq {
            let _ = r.histogram.record(latency);
        }
        timeline.record(now, latency);
    }
    let _ = ws.close(None).await;
    r
}

fn progress(quiet: bool, total: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len}")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// Counts the publisher's replies: accepted publishes per channel, refused
/// ones by error code.
async fn count_replies(
    mut replies: SplitStream<Socket>,
    publishes: u64,
    channels: usize,
    until: Instant,
) -> (Vec<u64>, BTreeMap<String, u64>) {
    let mut accepted = vec![0u64; channels];
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut answered = 0;
    while answered < publishes {
        let frame = match tokio::time::timeout_at(until.into(), replies.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            _ => break,
        };
        let Some((id, outcome)) = wire::reply(frame.as_str()) else {
            continue;
        };
        answered += 1;
        match outcome {
            Ok(()) => accepted[((id - 1) % channels as u64) as usize] += 1,
            Err(code) => *refused.entry(code).or_default() += 1,
        }
    }
    (accepted, refused)
}

/// Publishes `rate` per second for `duration`, round-robin over the
/// channels; returns the accepted publishes per channel and the refused
/// ones by error code.
async fn publish_all(
    target: &Target,
    channels: usize,
    load: Load,
    until: Instant,
) -> Result<(Vec<u64>, BTreeMap<String, u64>), String> {
    let driver = target.driver();
    let publishes = u64::from(load.rate) * load.duration;
    let bar = progress(target.quiet, publishes, "publishing");
    let mut tick =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(load.rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let result = match driver.kind {
        Kind::Native | Kind::Socketio | Kind::Insforge => {
            let mut ws = driver.connect(&target.urls[0]).await?;
            if driver.kind == Kind::Insforge {
                // InsForge's surface takes publishes from subscribers only.
                for channel in 0..channels {
                    driver
                        .subscribe(&mut ws, &format!("bench-{channel}"))
                        .await?;
                }
            }
            let (mut sink, mut replies) = ws.split();
            // Herald acknowledges each publish; Socket.IO publishes are
            // fire-and-forget, so every one sent counts as accepted.
            let acks = match driver.kind {
                Kind::Native => Some(tokio::spawn(count_replies(
                    replies, publishes, channels, until,
                ))),
                Kind::Insforge => {
                    // Its own copies come back: read and drop them, or the
                    // server would disconnect it as a slow consumer.
                    tokio::spawn(async move { while let Some(Ok(_)) = replies.next().await {} });
                    None
                }
                _ => None,
            };
            let mut sent = vec![0u64; channels];
            for n in 0..publishes {
                tick.tick().await;
                let channel = (n % channels as u64) as usize;
                let payload = Driver::payload(n / channels as u64, load.size);
                let frame = driver.publish_frame(n + 1, &format!("bench-{channel}"), &payload);
                sink.send(Message::Text(frame.into()))
                    .await
                    .map_err(|e| format!("publisher: {e}"))?;
                sent[channel] += 1;
                bar.inc(1);
            }
            let result = match acks {
                Some(acks) => acks.await.map_err(|e| e.to_string())?,
                None => (sent, BTreeMap::new()),
            };
            let _ = sink.close().await;
            result
        }
        Kind::Pusher => {
            // One request in flight keeps publications in order, as the
            // WebSocket publishers do (concurrent requests would reach the
            // server, and subscribers, reordered). Publications that came
            // due while a request was out go together in the next one
            // (`batch_events`), so the rate is not capped by the HTTP
            // round trip.
            let (due, mut queued) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
            let sender = {
                let driver = driver.clone();
                let base = target.http_base();
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let mut accepted = vec![0u64; channels];
                    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
                    let event = |(c, payload): (usize, String)| (c, format!("bench-{c}"), payload);
                    while let Some(first) = queued.recv().await {
                        let mut batch = vec![event(first)];
                        while batch.len() < drivers::PUSHER_BATCH {
                            match queued.try_recv() {
                                Ok(next) => batch.push(event(next)),
                                Err(_) => break,
                            }
                        }
                        let events: Vec<(&str, &str)> = batch
                            .iter()
                            .map(|(_, channel, payload)| (channel.as_str(), payload.as_str()))
                            .collect();
                        let (url, body) = driver.pusher_batch_request(&base, &events);
                        let status = http
                            .post(url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .map(|r| r.status().as_u16());
                        for (channel, _, _) in &batch {
                            match &status {
                                Ok(200) => accepted[*channel] += 1,
                                Ok(code) => {
                                    *refused.entry(format!("HTTP {code}")).or_default() += 1
                                }
                                Err(e) => *refused.entry(e.to_string()).or_default() += 1,
                            }
                        }
                    }
                    (accepted, refused)
                })
            };
            for n in 0..publishes {
                tick.tick().await;
                let channel = (n % channels as u64) as usize;
                let payload = Driver::payload(n / channels as u64, load.size);
                let _ = due.send((channel, payload));
                bar.inc(1);
            }
            drop(due);
            sender.await.map_err(|e| e.to_string())?
        }
    };
    bar.finish_and_clear();
    Ok(result)
}

/// `fanout` (one channel) and `channels` (several): subscribers spread over
/// the channels, one publisher at a steady rate, round-robin over channels.
pub async fn fanout(target: &Target, channels: usize, load: Load) -> Result<Report, String> {
    let total_subscribers = channels * load.subscribers;
    let before = proc_stats::total(&target.pids);
    let channel_of = |i: usize| format!("bench-{}", i % channels);
    let (sockets, connect_errors, connect_time) =
        open(target, total_subscribers, Some(&channel_of)).await;
    if sockets.is_empty() {
        return Err("no subscriber could connect".into());
    }
    let connected = proc_stats::total(&target.pids);

    let until = Instant::now() + load.duration() + DRAIN + Duration::from_secs(2);
    let timeline = Timeline::start();
    // Publications are numbered per channel.
    let warmup_seq = u64::from(load.rate) * load.warmup.min(load.duration) / channels as u64;
    let (accepted_tx, accepted_rx) = watch::channel(None);
    let mut subscribers_on = vec![0u64; channels];
    let mut readers = Vec::with_capacity(sockets.len());
    for (i, ws) in sockets {
        let channel = i % channels;
        subscribers_on[channel] += 1;
        readers.push(tokio::spawn(receive(
            target.driver(),
            ws,
            channel,
            accepted_rx.clone(),
            until,
            timeline.recorder(),
            warmup_seq,
        )));
    }

    let started = Instant::now();
    let (accepted, refused) = publish_all(target, channels, load, until).await?;
    let publish_time = started.elapsed();
    let accepted = Arc::new(accepted);
    let _ = accepted_tx.send(Some(Arc::clone(&accepted)));
    let expected_deliveries: u64 = accepted
        .iter()
        .zip(&subscribers_on)
        .map(|(a, s)| a * s)
        .sum();

    let mut histogram = histogram();
    let (mut got, mut duplicated, mut reordered) = (0, 0, 0);
    for reader in readers {
        if let Ok(r) = reader.await {
            let _ = histogram.add(&r.histogram);
            got += r.delivered;
            duplicated += r.duplicated;
            reordered += r.reordered;
        }
    }
    let delivery_time = started.elapsed();
    let after = proc_stats::total(&target.pids);

    let connections = total_subscribers - connect_errors;
    Ok(Report {
        scenario: if channels == 1 {
            "fanout".into()
        } else {
            "channels".into()
        },
        parameters: json!({
            "urls": target.urls, "channels": channels, "subscribers_per_channel": load.subscribers,
            "rate": load.rate, "size": load.size, "duration": load.duration,
            "warmup": load.warmup,
        }),
        connections,
        connect_errors,
        connect_seconds: connect_time.as_secs_f64(),
        connects_per_second: connections as f64 / connect_time.as_secs_f64().max(1e-9),
        published: accepted.iter().sum(),
        publish_errors: refused,
        expected_deliveries,
        delivered: got,
        lost: expected_deliveries.saturating_sub(got),
        duplicated,
        reordered,
        publish_seconds: publish_time.as_secs_f64(),
        deliveries_per_second: got as f64 / delivery_time.as_secs_f64().max(1e-9),
        latency_ms: Latency::of(&histogram),
        timeline: timeline.seconds(),
        server: cost(target, before, connected, after, connections, got),
        ..Report::default()
    })
}

fn cost(
    target: &Target,
    before: proc_stats::Sample,
    connected: proc_stats::Sample,
    after: proc_stats::Sample,
    connections: usize,
    deliveries: u64,
) -> Option<ServerCost> {
    if target.pids.is_empty() {
        return None;
    }
    let cpu = after.cpu.saturating_sub(before.cpu).as_secs_f64();
    Some(ServerCost {
        rss_before_mib: before.rss as f64 / MIB,
        rss_connected_mib: connected.rss as f64 / MIB,
        rss_after_mib: after.rss as f64 / MIB,
        rss_per_connection_bytes: connected.rss.saturating_sub(before.rss) as f64
            / connections.max(1) as f64,
        cpu_seconds: cpu,
        cpu_seconds_per_million_deliveries: if deliveries > 0 {
            cpu * 1_000_000.0 / deliveries as f64
        } else {
            0.0
        },
    })
}

/// Sockets one connect-storm worker process holds by default: well under
/// the usual open-file limits (20,000 in the sandbox this was built in).
pub const SOCKETS_PER_WORKER: usize = 16_000;

/// Opens connections as fast as the server accepts them and holds them,
/// in this process or spread over `workers` child processes.
pub async fn connect_storm(
    target: &Target,
    connections: usize,
    hold: Duration,
    workers: usize,
) -> Result<Report, String> {
    let before = proc_stats::total(&target.pids);
    let (open_count, connect_errors, connect_time, connected) = if workers <= 1 {
        let (sockets, errors, time) = open(target, connections, None).await;
        tokio::time::sleep(hold).await;
        let connected = proc_stats::total(&target.pids);
        let open_count = sockets.len();
        for (_, mut ws) in sockets {
            let _ = ws.close(None).await;
        }
        (open_count, errors, time, connected)
    } else {
        let mut pool = WorkerPool::start(target, connections, workers).await?;
        tokio::time::sleep(hold).await;
        let connected = proc_stats::total(&target.pids);
        pool.finish().await;
        (pool.open, pool.failed, pool.connect_time, connected)
    };
    let after = proc_stats::total(&target.pids);
    Ok(Report {
        scenario: "connect-storm".into(),
        parameters: json!({
            "urls": target.urls, "connections": connections, "hold": hold.as_secs(),
            "workers": workers,
        }),
        connections: open_count,
        connect_errors,
        connect_seconds: connect_time.as_secs_f64(),
        connects_per_second: open_count as f64 / connect_time.as_secs_f64().max(1e-9),
        server: cost(target, before, connected, after, open_count, 0),
        ..Report::default()
    })
}

/// Child processes of this binary, each holding a share of the
/// connect-storm's sockets.
struct WorkerPool {
    children: Vec<tokio::process::Child>,
    open: usize,
    failed: usize,
    connect_time: Duration,
}

impl WorkerPool {
    async fn start(target: &Target, connections: usize, workers: usize) -> Result<Self, String> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut pool = WorkerPool {
            children: Vec::with_capacity(workers),
            open: 0,
            failed: 0,
            connect_time: Duration::ZERO,
        };
        let mut lines = Vec::with_capacity(workers);
        let mut first = 0;
        for w in 0..workers {
            let share = connections / workers + usize::from(w < connections % workers);
            let mut cmd = tokio::process::Command::new(&exe);
            for url in &target.urls {
                cmd.args(["--url", url]);
            }
            let driver = clap::ValueEnum::to_possible_value(&target.driver)
                .ok_or("worker: unnamed driver")?;
            cmd.args(["--driver", driver.get_name()])
                .args(["--api-key", &target.api_key])
                .args(["--app-id", &target.app_id])
                .args(["--app-secret", &target.app_secret])
                .args([
                    "--connect-concurrency",
                    &(target.connect_concurrency / workers).max(1).to_string(),
                ])
                .args(["hold-connections", "--connections", &share.to_string()])
                .args(["--first", &first.to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd.spawn().map_err(|e| format!("worker: {e}"))?;
            let stdout = child.stdout.take().ok_or("worker: no stdout")?;
            lines.push(tokio::io::BufReader::new(stdout).lines());
            pool.children.push(child);
            first += share;
        }
        for mut line in lines {
            let ready = tokio::time::timeout(Duration::from_secs(300), line.next_line())
                .await
                .map_err(|_| "a worker did not report within 300 s".to_owned())?
                .map_err(|e| e.to_string())?
                .ok_or("a worker exited before reporting")?;
            let v: serde_json::Value = serde_json::from_str(&ready).map_err(|e| e.to_string())?;
            pool.open += v["open"].as_u64().unwrap_or(0) as usize;
            pool.failed += v["failed"].as_u64().unwrap_or(0) as usize;
        }
        pool.connect_time = started.elapsed();
        Ok(pool)
    }

    /// Closes the workers' stdin (they close their sockets and exit) and
    /// waits for them.
    async fn finish(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// `hold-connections`: a connect-storm worker (see [`WorkerPool`]).
pub async fn hold_connections(
    target: &Target,
    connections: usize,
    first: usize,
    max_hold: Duration,
) -> std::process::ExitCode {
    use tokio::io::AsyncReadExt;
    let mut target = target.clone();
    let len = target.urls.len();
    target.urls.rotate_left(first % len);
    let (sockets, failed, _) = open(&target, connections, None).await;
    println!("{}", json!({"open": sockets.len(), "failed": failed}));
    // Hold until the parent closes stdin (or goes away), bounded in time.
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(max_hold, tokio::io::stdin().read_to_end(&mut sink)).await;
    for (_, mut ws) in sockets {
        let _ = ws.close(None).await;
    }
    std::process::ExitCode::SUCCESS
}

/// One user's loop: subscribe, unsubscribe, until `until`; returns the
/// round-trip times.
async fn churn(mut ws: Socket, until: Instant) -> Result<Histogram<u64>, String> {
    let mut h = histogram();
    let mut id = 0u64;
    while Instant::now() < until {
        for kind in ["subscribe", "unsubscribe"] {
            id += 1;
            let frame = format!(r#"{{"id":{id},"type":"{kind}","channel":"room","global":true}}"#);
            let sent = wire::now_us();
            ws.send(Message::Text(frame.into()))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let text = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => t,
                    Ok(Some(Ok(_))) => continue,
                    other => return Err(format!("connection ended: {other:?}")),
                };
                match wire::reply(text.as_str()) {
                    Some((reply_id, Ok(()))) if reply_id == id => break,
                    Some((reply_id, Err(code))) if reply_id == id => return Err(code),
                    _ => {}
                }
            }
            let _ = h.record(wire::now_us().saturating_sub(sent).max(1));
        }
    }
    let _ = ws.close(None).await;
    Ok(h)
}

/// `presence-churn`: users join and leave one channel while a watcher
/// counts the announcements.
pub async fn presence_churn(
    target: &Target,
    users: usize,
    duration: Duration,
) -> Result<Report, String> {
    if target.driver != Kind::Native {
        return Err("presence-churn speaks Herald's protocol only (--driver native)".into());
    }
    let driver = target.driver();
    let mut watcher = driver.connect(&target.urls[0]).await?;
    driver.subscribe(&mut watcher, "room").await?;
    let before = proc_stats::total(&target.pids);
    let (sockets, connect_errors, connect_time) = open(target, users, None).await;
    let connected = proc_stats::total(&target.pids);
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|(_, ws)| tokio::spawn(churn(ws, until)))
        .collect();
    let watching = tokio::spawn(async move {
        let (mut joins, mut leaves) = (0u64, 0u64);
        let quiet_after = until + Duration::from_secs(2);
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout_at(quiet_after.into(), watcher.next()).await
        {
            if let Message::Text(t) = message {
                if t.as_str().starts_with("{\"type\":\"presence:join\"") {
                    joins += 1;
                } else if t.as_str().starts_with("{\"type\":\"presence:leave\"") {
                    leaves += 1;
                }
            }
        }
        (joins, leaves)
    });
    let mut histogram = histogram();
    let mut failures = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(Ok(h)) => {
                let _ = histogram.add(&h);
            }
            Ok(Err(e)) => *failures.entry(e).or_insert(0u64) += 1,
            Err(e) => *failures.entry(e.to_string()).or_insert(0u64) += 1,
        }
    }
    let elapsed = started.elapsed();
    let (presence_joins, presence_leaves) = watching.await.map_err(|e| e.to_string())?;
    let after = proc_stats::total(&target.pids);
    let operations = histogram.len();
    Ok(Report {
        scenario: "presence-churn".into(),
        parameters: json!({"urls": target.urls, "users": users, "duration": duration.as_secs()}),
        connections: users - connect_errors,
        connect_errors,
        connect_seconds: connect_time.as_secs_f64(),
        connects_per_second: (users - connect_errors) as f64 / connect_time.as_secs_f64().max(1e-9),
        publish_errors: failures,
        latency_ms: Latency::of(&histogram),
        operations,
        operations_per_second: operations as f64 / elapsed.as_secs_f64().max(1e-9),
        presence_joins,
        presence_leaves,
        server: cost(target, before, connected, after, users - connect_errors, 0),
        ..Report::default()
    })
}

struct Survivor {
    /// Publish-to-delivery latency, recovered publications included.
    latency: Histogram<u64>,
    delivered: u64,
    duplicated: u64,
    reconnects: Vec<u64>,
    not_recovered: u64,
}

/// One reconnecting subscriber: counts publications by offset and times
/// each reconnect (from the disconnect to the resubscribe).
async fn survive(
    client: herald_client::Client,
    mut events: tokio::sync::mpsc::Receiver<herald_client::Event>,
    mut accepted: watch::Receiver<Option<Arc<Vec<u64>>>>,
    until: Instant,
    mut timeline: Recorder,
) -> Survivor {
    use herald_client::Event;
    let mut s = Survivor {
        latency: histogram(),
        delivered: 0,
        duplicated: 0,
        reconnects: Vec::new(),
        not_recovered: 0,
    };
    let mut last_offset = 0u64;
    let mut lost_at: Option<Instant> = None;
    let mut expected = u64::MAX;
    while s.delivered < expected {
        let event = tokio::select! {
            changed = accepted.changed(), if expected == u64::MAX => {
                if changed.is_err() {
                    break;
                }
                if let Some(counts) = accepted.borrow().as_ref() {
                    expected = counts[0];
                }
                continue;
            }
            event = tokio::time::timeout_at(until.into(), events.recv()) => match event {
                Ok(Some(event)) => event,
                _ => break,
            },
        };
        match event {
            Event::Publication(p) => {
                if p.meta.offset <= last_offset {
                    s.duplicated += 1;
                } else {
                    last_offset = p.meta.offset;
                    s.delivered += 1;
                    if let Some(sent) = p.payload["t"].as_u64() {
                        let now = wire::now_us();
                        let latency = now.saturating_sub(sent).max(1);
                        let _ = s.latency.record(latency);
                        timeline.record(now, latency);
                    }
                }
            }
            Event::Disconnected { .. } => {
                lost_at.get_or_insert_with(Instant::now);
            }
            Event::Resubscribed { recovered, .. } => {
                if let Some(at) = lost_at.take() {
                    s.reconnects.push(at.elapsed().as_micros() as u64);
                }
                if !recovered {
                    s.not_recovered += 1;
                }
            }
            _ => {}
        }
    }
    client.close();
    s
}

/// `reconnect`: kill a gateway under a steady stream and judge recovery.
pub async fn reconnect(
    target: &Target,
    load: Load,
    kill: u32,
    kill_after: Duration,
) -> Result<Report, String> {
    if target.driver != Kind::Native || target.urls.len() < 2 {
        return Err("reconnect needs --driver native and at least two --url gateways".into());
    }
    let until = Instant::now() + load.duration() + DRAIN + Duration::from_secs(10);
    let (accepted_tx, accepted_rx) = watch::channel(None);
    let timeline = Timeline::start();
    let started_connecting = Instant::now();
    let mut survivors = Vec::new();
    let mut connect_errors = 0;
    for i in 0..load.subscribers {
        // Each subscriber starts on a different gateway and knows them all.
        let n = target.urls.len();
        let urls: Vec<String> = (0..n)
            .map(|k| {
                format!(
                    "{}/v1/ws?apiKey={}",
                    target.urls[(i + k) % n].trim_end_matches('/'),
                    target.api_key
                )
            })
            .collect();
        let config = herald_client::ClientConfig {
            urls,
            token: None,
            backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            event_buffer: 65536,
        };
        match herald_client::connect(config).await {
            Ok((client, events)) => {
                let options = herald_client::SubscribeOptions::global();
                if client.subscribe("bench-0", options).await.is_err() {
                    connect_errors += 1;
                    continue;
                }
                survivors.push(tokio::spawn(survive(
                    client,
                    events,
                    accepted_rx.clone(),
                    until,
                    timeline.recorder(),
                )));
            }
            Err(_) => connect_errors += 1,
        }
    }
    let connect_time = started_connecting.elapsed();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(kill_after).await;
        let _ = std::process::Command::new("kill")
            .args(["-9", &kill.to_string()])
            .status();
    });
    let mut last_url = target.clone();
    last_url.urls = vec![target.urls[target.urls.len() - 1].clone()];
    let started = Instant::now();
    let (accepted, refused) = publish_all(&last_url, 1, load, until).await?;
    let publish_time = started.elapsed();
    let _ = killer.await;
    let expected_each = accepted[0];
    let _ = accepted_tx.send(Some(Arc::new(accepted.clone())));
    let mut reconnects = histogram();
    let mut latency = histogram();
    let (mut delivered, mut duplicated, mut not_recovered) = (0, 0, 0);
    let connections = survivors.len();
    for survivor in survivors {
        if let Ok(s) = survivor.await {
            let _ = latency.add(&s.latency);
            delivered += s.delivered;
            duplicated += s.duplicated;
            not_recovered += s.not_recovered;
            for us in s.reconnects {
                let _ = reconnects.record(us.max(1));
            }
        }
    }
    let expected_deliveries = expected_each * connections as u64;
    Ok(Report {
        scenario: "reconnect".into(),
        parameters: json!({"urls": target.urls, "subscribers": load.subscribers, "rate": load.rate,
                           "duration": load.duration, "kill": kill, "kill_after": kill_after.as_secs()}),
        connections,
        connect_errors,
        connect_seconds: connect_time.as_secs_f64(),
        connects_per_second: connections as f64 / connect_time.as_secs_f64().max(1e-9),
        published: expected_each,
        publish_errors: refused,
        expected_deliveries,
        delivered,
        lost: expected_deliveries.saturating_sub(delivered),
        duplicated,
        publish_seconds: publish_time.as_secs_f64(),
        deliveries_per_second: delivered as f64 / started.elapsed().as_secs_f64().max(1e-9),
        latency_ms: Latency::of(&latency),
        reconnect_ms: (!reconnects.is_empty()).then(|| Latency::of(&reconnects)),
        not_recovered,
        timeline: timeline.seconds(),
        ..Report::default()
    })
}
