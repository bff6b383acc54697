//! A connection's frame allowance, and what happens to a client that keeps
//! sending past it.

use crate::edge::rate_limited;
use crate::state::AppState;
use herald_protocol::ErrorBody;
use herald_rate_limiter::{Cell, Limit};

/// What to do with a frame the client sent.
#[derive(Debug, PartialEq)]
pub enum Gate {
    /// Within the allowance: handle it.
    Pass,
    /// Over the allowance, the first of a streak: tell the client, once.
    Refuse(ErrorBody),
    /// Over the allowance again: drop it without answering (answering
    /// every flooded frame would only flood the other way).
    Drop,
    /// Refused more than `flood_disconnect_after` frames in a row: close
    /// the connection.
    Disconnect,
}

/// Counts a connection's request frames against
/// `connection_frames_per_second` (burst `connection_frames_burst`).
pub struct FloodGate {
    cell: Option<Cell>,
    refused_in_a_row: u32,
    disconnect_after: u32,
}

impl FloodGate {
    pub fn new(state: &AppState) -> Self {
        let config = &state.config;
        FloodGate {
            cell: Cell::new(Limit {
                per_second: config.connection_frames_per_second,
                burst: config.connection_frames_burst.max(1),
            }),
            refused_in_a_row: 0,
            disconnect_after: config.flood_disconnect_after,
        }
    }

    /// Takes one frame from the allowance; `app` labels the metrics.
    pub fn check(&mut self, state: &AppState, app: &str) -> Gate {
        let Some(cell) = &self.cell else {
            return Gate::Pass;
        };
        let decision = cell.check();
        state
            .metrics
            .ratelimit_checks
            .with_label_values(&["frames"])
            .inc();
        if decision.allowed {
            self.refused_in_a_row = 0;
            return Gate::Pass;
        }
        self.refused_in_a_row += 1;
        state
            .metrics
            .ratelimit_rejections
            .with_label_values(&["frames", app])
            .inc();
        if self.refused_in_a_row > self.disconnect_after {
            Gate::Disconnect
        } else if self.refused_in_a_row == 1 {
            Gate::Refuse(rate_limited(decision.retry_after))
        } else {
            Gate::Drop
        }
    }
}
