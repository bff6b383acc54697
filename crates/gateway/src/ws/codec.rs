//! The native protocol's side of a connection: client frames in, the
//! realtime session's outcomes out as `reply` and `error` frames
//! (`docs/protocol.md`). Requests are handled one at a time, in the order
//! the client sent them. Deliveries are written by
//! `herald_broker_node::codec::Native`, which renders replayed and historic
//! publications here too.

use crate::realtime::{capped, error, recovery, HistoryPage, Session, Subscribed};
use herald_broker_node::codec::Native;
use herald_broker_node::EncodedFrame;
use herald_protocol::client::{self, Request};
use herald_protocol::server::{ErrorFrame, Reply, ServerFrame};
use herald_protocol::{ErrorBody, ErrorCode, StreamPosition};
use tracing::Instrument;

/// Handles one text frame.
pub async fn handle_text(session: &mut Session, text: &str) {
    let max = session_max_frame(session);
    if text.len() > max {
        let e = error(
            ErrorCode::PayloadTooLarge,
            format!("frame is {} bytes; at most {max} allowed", text.len()),
        );
        return answer_error(session, client::salvage_id(text), None, e).await;
    }
    match client::parse(text) {
        Ok((id, request)) => {
            let channel = request_channel(&request);
            let span = tracing::debug_span!(
                "request",
                kind = request.kind(),
                id,
                channel = channel.as_deref().unwrap_or("")
            );
            match handle(session, id, request).instrument(span).await {
                Ok(Some(reply)) => {
                    if let Some(id) = id {
                        send(session, ServerFrame::Reply(Box::new(Reply { id, ..reply }))).await;
                    }
                }
                Ok(None) => {}
                Err(e) => answer_error(session, id, channel, e).await,
            }
        }
        Err(rejected) => answer_error(session, rejected.id, None, rejected.error).await,
    }
}

fn session_max_frame(session: &Session) -> usize {
    session.state().config.max_frame_bytes
}

/// Answers a failed request: a `reply` when it carried an `id`, an `error`
/// frame otherwise.
pub async fn answer_error(
    session: &Session,
    id: Option<u64>,
    channel: Option<String>,
    e: ErrorBody,
) {
    session.state().metrics.error(e.code);
    let frame = match id {
        Some(id) => ServerFrame::Reply(Box::new(Reply {
            channel,
            ..Reply::err(id, e)
        })),
        None => ServerFrame::Error(ErrorFrame { channel, error: e }),
    };
    send(session, frame).await;
}

async fn send(session: &Session, frame: ServerFrame) {
    session.outbound().send(Native::encode(&frame)).await;
}

/// Runs a request; `Some(reply)` to be sent (when the request has an
/// `id`), `None` when the reply is already queued (a subscribe's).
async fn handle(
    session: &mut Session,
    id: Option<u64>,
    request: Request,
) -> Result<Option<Reply>, ErrorBody> {
    let reply = match request {
        Request::Subscribe {
            channel,
            since,
            replay_seconds,
        } => {
            let recovery = recovery(since, replay_seconds);
            // The node queues the reply itself, ahead of the live
            // publications that follow it.
            let max_members = session.state().config.max_presence_members;
            let render = |s: Subscribed<'_>| id.map(|id| subscribed(id, max_members, &s));
            session.subscribe(&channel, recovery, render).await?;
            return Ok(None);
        }
        Request::Unsubscribe { channel } => {
            session.unsubscribe(&channel).await?;
            Reply {
                channel: Some(channel.channel),
                ..Reply::ok(0)
            }
        }
        Request::Publish {
            channel,
            event,
            payload,
            idempotency_key,
        } => {
            let accepted = session
                .publish(&channel, event, payload, idempotency_key.as_deref())
                .await?;
            Reply {
                channel: Some(channel.channel),
                event_id: accepted.event_id,
                event_timestamp: accepted.event_timestamp,
                ..Reply::ok(0)
            }
        }
        Request::Presence { channel } => {
            let presence = session.presence(&channel).await?;
            Reply {
                channel: Some(channel.channel),
                presence: Some(presence),
                ..Reply::ok(0)
            }
        }
        Request::History {
            channel,
            since,
            limit,
        } => {
            let page = session.history(&channel, since, limit).await?;
            history(channel.channel, page)
        }
        Request::Refresh { token } => Reply {
            expires_at: session.refresh(&token).await?.expires_at,
            ..Reply::ok(0)
        },
    };
    Ok(Some(reply))
}

/// A subscribe's reply: members, position, recovery and replay.
fn subscribed(id: u64, max_members: usize, s: &Subscribed<'_>) -> EncodedFrame {
    let outcome = s.outcome;
    let publications: Vec<_> = outcome
        .publications
        .iter()
        .map(|p| {
            let position = StreamPosition {
                epoch: outcome.position.epoch.clone(),
                offset: p.offset,
            };
            Native::event(s.key, &p.publication, &position)
        })
        .collect();
    let reply = Reply {
        channel: Some(s.channel.channel.clone()),
        presence: Some(capped(outcome.members.clone(), max_members)),
        epoch: Some(outcome.position.epoch.clone()),
        offset: Some(outcome.position.offset),
        recovered: outcome.recovered,
        publications: (!publications.is_empty()).then_some(publications),
        ..Reply::ok(id)
    };
    Native::encode(&ServerFrame::Reply(Box::new(reply)))
}

/// A history request's reply.
fn history(channel: String, page: HistoryPage) -> Reply {
    let HistoryPage {
        key,
        read,
        recovered,
    } = page;
    let publications = read
        .publications
        .iter()
        .map(|s| {
            let position = StreamPosition {
                epoch: read.position.epoch.clone(),
                offset: s.offset,
            };
            Native::event(&key, &s.publication, &position)
        })
        .collect();
    Reply {
        channel: Some(channel),
        epoch: Some(read.position.epoch),
        offset: Some(read.position.offset),
        recovered,
        publications: Some(publications),
        ..Reply::ok(0)
    }
}

fn request_channel(request: &Request) -> Option<String> {
    match request {
        Request::Subscribe { channel, .. }
        | Request::Unsubscribe { channel }
        | Request::Publish { channel, .. }
        | Request::Presence { channel }
        | Request::History { channel, .. } => Some(channel.channel.clone()),
        Request::Refresh { .. } => None,
    }
}
