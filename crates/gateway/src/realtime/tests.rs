//! The session rules, driven directly on an embedded node: no process, no
//! socket.

use super::history::history_limit;
use super::*;
use crate::auth::Identity;
use crate::config::{AppConfig, Config};
use herald_broker_node::{ConnId, EncodedFrame, Node, Outbound, Receiver, Recovery, NATIVE};
use herald_protocol::client::ChannelRef;
use herald_protocol::now_ms;
use serde_json::value::RawValue;
use std::sync::Arc;

const SECRET: &str = "unit-test-secret";

fn app(edit: impl FnOnce(&mut AppConfig)) -> AppConfig {
    let mut app = AppConfig {
        id: "a1".into(),
        api_keys: vec!["key-a1".into()],
        jwt_secret: Some(SECRET.into()),
        ops_per_second: 0,
        history_size: 100,
        ..AppConfig::default()
    };
    edit(&mut app);
    app
}

fn state(config: impl FnOnce(&mut Config), app: AppConfig) -> Arc<AppState> {
    let mut c = Config {
        apps: vec![app],
        ..Config::default()
    };
    config(&mut c);
    AppState::new(c, Node::embedded("n1"), "127.0.0.1:0".into(), None).unwrap()
}

fn user(sub: &str, exp: u64) -> Identity {
    Identity::User {
        sub: sub.into(),
        ctx: Default::default(),
        exp,
        profile: None,
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn session(state: &Arc<AppState>, identity: Identity) -> (Session, Receiver) {
    let (outbound, rx, _kick) = Outbound::new(256, &NATIVE);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let app = Arc::clone(state.apps.get("a1").unwrap());
    let conn = ConnId::new(n, format!("c-{n:016x}"));
    let ip = std::net::Ipv4Addr::LOCALHOST.into();
    let session = Session::new(Arc::clone(state), app, identity, conn, outbound, "test", ip);
    (session, rx)
}

fn global(name: &str) -> ChannelRef {
    ChannelRef {
        channel: name.into(),
        global: true,
        token: None,
        context_overrides: None,
    }
}

async fn subscribe(s: &mut Session, channel: &ChannelRef) -> Result<(), ErrorBody> {
    s.subscribe(channel, Recovery::None, |_| None).await
}

fn payload(n: u32) -> Box<RawValue> {
    RawValue::from_string(n.to_string()).unwrap()
}

#[tokio::test]
async fn the_subscription_cap_counts_channels_not_resubscribes() {
    let state = state(|c| c.max_subscriptions_per_connection = 2, app(|_| {}));
    let (mut s, _rx) = session(&state, Identity::System);
    subscribe(&mut s, &global("a")).await.unwrap();
    subscribe(&mut s, &global("b")).await.unwrap();
    // The same channel again replaces nothing and takes no slot.
    subscribe(&mut s, &global("a")).await.unwrap();
    assert_eq!(s.subscription_count(), 2);
    let refused = subscribe(&mut s, &global("c")).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::RealtimeInvalidChannelRequest);
    assert!(refused.message.contains("at most 2"), "{}", refused.message);
    s.unsubscribe(&global("a")).await.unwrap();
    subscribe(&mut s, &global("c")).await.unwrap();
}

#[tokio::test]
async fn a_scoped_and_a_global_channel_of_one_name_are_two_subscriptions() {
    let state = state(|_| {}, app(|_| {}));
    let (mut s, _rx) = session(&state, user("u1", now_ms() / 1000 + 60));
    let scoped = ChannelRef {
        global: false,
        ..global("x")
    };
    subscribe(&mut s, &scoped).await.unwrap();
    subscribe(&mut s, &global("x")).await.unwrap();
    assert_eq!(s.subscription_count(), 2);
    s.close().await;
    assert_eq!(s.subscription_count(), 0);
    assert_eq!(state.node.stats().subscriptions, 0);
}

#[tokio::test]
async fn unsubscribing_what_was_never_subscribed_is_refused() {
    let state = state(|_| {}, app(|_| {}));
    let (mut s, _rx) = session(&state, Identity::System);
    let e = s.unsubscribe(&global("nope")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RealtimeNotSubscribed);
}

#[tokio::test]
async fn publish_requires_subscription_where_the_app_says_so() {
    let state = state(|_| {}, app(|a| a.publish_requires_subscription = true));
    let (mut s, _rx) = session(&state, Identity::System);
    let e = s
        .publish(&global("p"), None, payload(1), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RealtimeNotSubscribed);
    subscribe(&mut s, &global("p")).await.unwrap();
    let accepted = s
        .publish(&global("p"), None, payload(2), None)
        .await
        .unwrap();
    assert!(accepted.event_id.is_some());

    let open = self::state(|_| {}, app(|_| {}));
    let (mut s, _rx) = session(&open, Identity::System);
    s.publish(&global("p"), None, payload(3), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_presence_id_is_the_user_or_else_the_connection() {
    let state = state(|_| {}, app(|_| {}));
    let (s, _rx) = session(&state, user("alice", now_ms() / 1000 + 60));
    assert_eq!(s.presence_id().as_deref(), Some("alice"));
    let (s, _rx) = session(&state, Identity::Anonymous);
    assert_eq!(s.presence_id().as_deref(), Some(s.conn().as_str()));
    let quiet = self::state(|_| {}, app(|a| a.presence = false));
    let (mut s, _rx) = session(&quiet, user("alice", now_ms() / 1000 + 60));
    assert_eq!(s.presence_id(), None);
    subscribe(&mut s, &global("q")).await.unwrap();
    assert!(s.presence(&global("q")).await.unwrap().members.is_empty());
}

#[tokio::test]
async fn two_connections_of_one_user_are_one_member() {
    let state = state(|_| {}, app(|_| {}));
    let exp = now_ms() / 1000 + 60;
    let (mut a, _ra) = session(&state, user("bob", exp));
    let (mut b, _rb) = session(&state, user("bob", exp));
    subscribe(&mut a, &global("m")).await.unwrap();
    subscribe(&mut b, &global("m")).await.unwrap();
    let members = a.presence(&global("m")).await.unwrap().members;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].presence_id, "bob");
    a.close().await;
    assert_eq!(b.presence(&global("m")).await.unwrap().members.len(), 1);
    b.close().await;
}

#[tokio::test]
async fn member_lists_are_capped_and_say_so() {
    let state = state(|c| c.max_presence_members = 2, app(|_| {}));
    let exp = now_ms() / 1000 + 60;
    let mut sessions = Vec::new();
    for n in 0..3 {
        let (mut s, rx) = session(&state, user(&format!("u{n}"), exp));
        subscribe(&mut s, &global("big")).await.unwrap();
        sessions.push((s, rx));
    }
    let list = sessions[0].0.presence(&global("big")).await.unwrap();
    assert_eq!(list.members.len(), 2);
    assert!(list.truncated);
    assert_eq!(list.members[0].presence_id, "u0", "earliest joined first");
    let all = capped(list.members.clone(), 2);
    assert!(!all.truncated);
}

#[tokio::test]
async fn recovery_replays_what_was_missed_and_says_so() {
    let state = state(|_| {}, app(|_| {}));
    let (mut publisher, _rx) = session(&state, Identity::System);
    let mut epoch = String::new();
    for n in 1..=3 {
        publisher
            .publish(&global("r"), None, payload(n), None)
            .await
            .unwrap();
    }
    let (mut s, _rx) = session(&state, Identity::System);
    let page = s.history(&global("r"), None, None).await.unwrap();
    assert_eq!(page.read.position.offset, 3);
    assert_eq!(page.recovered, None);
    epoch.push_str(&page.read.position.epoch);
    let since = herald_protocol::StreamPosition { epoch, offset: 1 };
    let mut seen = None;
    s.subscribe(&global("r"), Recovery::Since(since.clone()), |sub| {
        let offsets: Vec<u64> = sub.outcome.publications.iter().map(|p| p.offset).collect();
        seen = Some((sub.outcome.recovered, offsets));
        Some(EncodedFrame::from_string("reply".into()))
    })
    .await
    .unwrap();
    assert_eq!(seen, Some((Some(true), vec![2, 3])));
    let page = s.history(&global("r"), Some(since), None).await.unwrap();
    assert_eq!(page.recovered, Some(true));
    assert_eq!(page.read.publications.len(), 2);
}

#[test]
fn since_wins_over_replay_seconds_and_seconds_become_milliseconds() {
    let at = herald_protocol::StreamPosition {
        epoch: "e".into(),
        offset: 4,
    };
    assert_eq!(
        recovery(Some(at.clone()), Some(9)),
        Recovery::Since(at.clone())
    );
    assert_eq!(recovery(None, Some(9)), Recovery::Window(9_000));
    assert_eq!(recovery(None, Some(u64::MAX)), Recovery::Window(u64::MAX));
    assert_eq!(recovery(None, None), Recovery::None);
}

#[tokio::test]
async fn history_reads_at_most_the_gateway_limit() {
    assert_eq!(history_limit(None, 1000), 100);
    assert_eq!(history_limit(Some(5), 1000), 5);
    assert_eq!(history_limit(Some(5000), 1000), 1000);
    let state = state(|c| c.history_max_limit = 2, app(|_| {}));
    let (mut s, _rx) = session(&state, Identity::System);
    for n in 1..=5 {
        s.publish(&global("h"), None, payload(n), None)
            .await
            .unwrap();
    }
    let page = s.history(&global("h"), None, Some(50)).await.unwrap();
    assert_eq!(page.read.publications.len(), 2);
}

fn token(sub: &str, app: &str, exp: u64) -> String {
    crate::auth::mint_user_token(
        SECRET,
        &crate::auth::UserClaims {
            sub: sub.into(),
            app: app.into(),
            exp,
            nbf: None,
            iat: None,
            role: None,
            email: None,
            ctx: None,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_refresh_is_for_the_same_user_and_moves_the_expiry() {
    let state = state(|_| {}, app(|_| {}));
    let soon = now_ms() / 1000 + 30;
    let (mut s, _rx) = session(&state, user("carol", soon));
    let before = s.expiry();
    let later = soon + 3600;
    let refreshed = s.refresh(&token("carol", "a1", later)).await.unwrap();
    assert_eq!(refreshed.expires_at, Some(later));
    assert!(s.expiry() > before + std::time::Duration::from_secs(3000));
    let e = s.refresh(&token("mallory", "a1", later)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    let e = s.refresh(&token("carol", "a1", 1)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::TokenExpired);
    // A system connection has no user to refresh.
    let (mut system, _rx) = session(&state, Identity::System);
    let e = system
        .refresh(&token("carol", "a1", later))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn a_flood_is_told_once_then_dropped_then_disconnected() {
    let state = state(
        |c| {
            c.connection_frames_per_second = 1;
            c.connection_frames_burst = 2;
            c.flood_disconnect_after = 3;
        },
        app(|_| {}),
    );
    let mut gate = FloodGate::new(&state);
    assert_eq!(gate.check(&state, "a1"), Gate::Pass);
    assert_eq!(gate.check(&state, "a1"), Gate::Pass);
    let Gate::Refuse(e) = gate.check(&state, "a1") else {
        panic!("the first refused frame is answered");
    };
    assert_eq!(e.code, ErrorCode::RateLimitExceeded);
    assert!(e.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1000));
    assert_eq!(gate.check(&state, "a1"), Gate::Drop);
    assert_eq!(gate.check(&state, "a1"), Gate::Drop);
    assert_eq!(gate.check(&state, "a1"), Gate::Disconnect);

    let unlimited = self::state(|c| c.connection_frames_per_second = 0, app(|_| {}));
    let mut gate = FloodGate::new(&unlimited);
    for _ in 0..10_000 {
        assert_eq!(gate.check(&unlimited, "a1"), Gate::Pass);
    }
}

#[tokio::test]
async fn operations_are_charged_to_the_app_and_reads_are_not() {
    let state = state(
        |_| {},
        app(|a| {
            a.ops_per_second = 1;
            a.ops_burst = 2;
        }),
    );
    let (mut s, _rx) = session(&state, Identity::System);
    subscribe(&mut s, &global("o")).await.unwrap();
    s.publish(&global("o"), None, payload(1), None)
        .await
        .unwrap();
    // Reads cost nothing.
    for _ in 0..5 {
        s.presence(&global("o")).await.unwrap();
        s.history(&global("o"), None, None).await.unwrap();
    }
    let e = s
        .publish(&global("o"), None, payload(2), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimitExceeded);
}
