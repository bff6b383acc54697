//! Token attacks: every forged, stolen, stale or misapplied token is
//! refused with its documented code, on every surface that takes it
//! (connect, refresh, channel requests on the WebSocket, the server API).

mod common;

use common::{now_secs, secret, sign_hs256, user_token, Herald};
use serde_json::{json, Value};

const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESlXN/wQW4JC4UjqqI1j7E72VaPlF\nwZaSm4iBK7Z9bBSMSPWdprdZWMweFvh3z+iVSpkV+BfDoD8bJi76MuERxg==\n-----END PUBLIC KEY-----\n";

fn config() -> String {
    let apps = common::APPS;
    let kid_secret = secret("kid");
    format!(
        r#"{apps}
[[apps]]
id = "pk"
api_keys = ["key-pk"]
jwt_public_key = """
{EC_PUBLIC}"""

[[apps]]
id = "kid"
api_keys = ["key-kid"]
jwt_secret = "{kid_secret}"
jwt_key_id = "k1"
"#
    )
}

/// The code a refused upgrade answers with.
async fn connect_code(h: &Herald, token: &str) -> Result<(), (u16, String)> {
    use tokio_tungstenite::tungstenite::Error;
    match tokio_tungstenite::connect_async(h.ws_url(&format!("token={token}"))).await {
        Ok(_) => Ok(()),
        Err(Error::Http(response)) => {
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .unwrap_or(Value::Null);
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Err((response.status().as_u16(), code))
        }
        Err(e) => panic!("{e}"),
    }
}

fn claims(app: &str, sub: &str, exp_in: i64) -> Value {
    json!({"sub": sub, "app": app, "exp": (now_secs() as i64 + exp_in) as u64})
}

/// User JWTs: on connect and on refresh.
#[tokio::test]
async fn forged_and_stale_user_tokens_are_refused_on_connect_and_refresh() {
    let h = Herald::start_config(&config()).await;
    let hs = json!({"alg":"HS256","typ":"JWT"});
    let none = {
        use base64::Engine;
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        format!(
            "{}.{}.",
            b64(&json!({"alg":"none"})),
            b64(&claims("app1", "u", 60))
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", none, "INVALID_TOKEN"),
        (
            "HS256 signed with the app's public key",
            sign_hs256(&hs, &claims("pk", "u", 60), EC_PUBLIC.as_bytes()),
            "INVALID_TOKEN",
        ),
        (
            "signed with another app's key",
            sign_hs256(&hs, &claims("app1", "u", 60), secret("app2").as_bytes()),
            "INVALID_TOKEN",
        ),
        (
            "expired",
            user_token("app1", "u", json!({}), -30),
            "TOKEN_EXPIRED",
        ),
        (
            "not yet valid",
            sign_hs256(
                &hs,
                &json!({"sub":"u","app":"app1","exp":now_secs()+600,"nbf":now_secs()+300}),
                secret("app1").as_bytes(),
            ),
            "INVALID_TOKEN",
        ),
        (
            "a kid naming no key",
            sign_hs256(
                &json!({"alg":"HS256","kid":"nope"}),
                &claims("kid", "u", 60),
                secret("kid").as_bytes(),
            ),
            "INVALID_TOKEN",
        ),
        ("malformed", "not.a.jwt".into(), "INVALID_TOKEN"),
        ("empty segments", "..".into(), "INVALID_TOKEN"),
        (
            "oversized, though rightly signed",
            sign_hs256(
                &hs,
                &json!({"sub":"u","app":"app1","exp":now_secs()+60,
                        "ctx":{"pad":"x".repeat(10_000)}}),
                secret("app1").as_bytes(),
            ),
            "INVALID_TOKEN",
        ),
        (
            "oversized junk",
            format!("{}.{}.x", "a".repeat(30_000), "b".repeat(30_000)),
            "INVALID_TOKEN",
        ),
    ];
    let mut user = h.user("app1", "u", json!({})).await;
    for (what, token, code) in &cases {
        let (status, got) = connect_code(&h, token).await.expect_err(what);
        assert_eq!((status, got.as_str()), (401, *code), "connect: {what}");
        user.fails(json!({"type":"refresh","token": token}), code)
            .await;
    }
    // The right kid is fine.
    let good = sign_hs256(
        &json!({"alg":"HS256","kid":"k1"}),
        &claims("kid", "u", 60),
        secret("kid").as_bytes(),
    );
    connect_code(&h, &good).await.expect("the app's key id");
    // Where the app names no key id, a `kid` (identity providers send one)
    // is not looked at.
    let with_kid = sign_hs256(
        &json!({"alg":"HS256","kid":"idp-key-7"}),
        &claims("app1", "u", 60),
        secret("app1").as_bytes(),
    );
    connect_code(&h, &with_kid)
        .await
        .expect("kid without jwt_key_id");
    // Refresh takes only the same user of the same app.
    user.fails(
        json!({"type":"refresh","token": user_token("app1", "someone-else", json!({}), 60)}),
        "UNAUTHORIZED",
    )
    .await;
    user.fails(
        json!({"type":"refresh","token": user_token("app2", "u", json!({}), 60)}),
        "UNAUTHORIZED",
    )
    .await;
}

/// Channel tokens: for another channel, another app, expired, forged,
/// claims swapped, scoped and global crossed: on WebSocket subscribe and
/// publish, and on the server API.
#[tokio::test]
async fn misapplied_channel_tokens_are_refused_on_every_surface() {
    let h = Herald::start_config(&config()).await;
    let token = h
        .channel_token("app1", "vault", json!({"team":"a"}), None)
        .await;
    let other_app = h
        .channel_token("app2", "vault", json!({"team":"a"}), None)
        .await;
    let expired = sign_hs256(
        &json!({"alg":"HS256"}),
        &json!({"typ":"herald.channel","app":"app1","ch":"vault","claims":{"team":"a"},
                "perms":["subscribe","publish"],"iat":now_secs()-120,"exp":now_secs()-60}),
        secret("app1").as_bytes(),
    );
    let unsigned = {
        use base64::Engine;
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        let claims = json!({"typ":"herald.channel","app":"app1","ch":"vault",
            "claims":{"team":"a"},"perms":["subscribe","publish"],
            "iat":now_secs(),"exp":now_secs()+60});
        format!("{}.{}.", b64(&json!({"alg":"none"})), b64(&claims))
    };
    let forged = sign_hs256(
        &json!({"alg":"HS256"}),
        &json!({"typ":"herald.channel","app":"app1","ch":"vault","claims":{"team":"a"},
                "perms":["subscribe","publish"],"iat":now_secs(),"exp":now_secs()+60}),
        b"a key that is not the app's secret at all",
    );
    let cases = [
        (
            "another channel",
            "other",
            token.as_str(),
            "CHANNEL_NAME_MISMATCH",
        ),
        ("another app", "vault", other_app.as_str(), "INVALID_TOKEN"),
        ("expired", "vault", expired.as_str(), "TOKEN_EXPIRED"),
        ("forged", "vault", forged.as_str(), "INVALID_TOKEN"),
        ("alg none", "vault", unsigned.as_str(), "INVALID_TOKEN"),
        ("malformed", "vault", "x.y.z", "INVALID_TOKEN"),
    ];
    let mut c = h.user("app1", "u", json!({})).await;
    for (what, channel, token, code) in cases {
        for kind in ["subscribe", "publish"] {
            let frame = json!({"type": kind, "channel": channel, "global": true,
                               "token": token, "payload": 1});
            let r = c.request(frame).await;
            assert_eq!(r["error"]["code"], code, "{kind}, {what}: {r}");
        }
        let (status, body, _) = h
            .post(
                "/api/v1/publish/global",
                "key-app1",
                json!({"channel": channel, "payload": 1, "options": {"token": token}}),
            )
            .await;
        assert_eq!(
            body["errors"][0]["code"], code,
            "server API, {what}: {body}"
        );
        assert!(status >= 400, "server API, {what}: {status}");
    }

    // Claims swapped: a publisher holding team b's token does not reach
    // team a's subscribers.
    let team_b = h
        .channel_token("app1", "vault", json!({"team":"b"}), None)
        .await;
    let mut a = h.user("app1", "a", json!({})).await;
    a.ok(json!({"type":"subscribe","channel":"vault","global":true,"token": token}))
        .await;
    let mut b = h.user("app1", "b", json!({})).await;
    b.ok(json!({"type":"publish","channel":"vault","global":true,"token": team_b,"payload":"b"}))
        .await;
    // Scoped and global crossed: the same token, on the scoped channel of
    // that name, does not reach the global channel's subscribers.
    b.ok(json!({"type":"publish","channel":"vault","global":false,"token": token,"payload":"s"}))
        .await;
    a.expect_no_event(std::time::Duration::from_millis(400))
        .await;
    // The rightful publish arrives.
    b.ok(json!({"type":"publish","channel":"vault","global":true,"token": token,"payload":"a"}))
        .await;
    assert_eq!(a.expect("event").await["payload"], "a");
}
