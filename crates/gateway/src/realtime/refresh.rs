//! Replacing a connection's user token before it expires.

use super::{error, Session};
use crate::auth::verify_user_token_fetching;
use herald_protocol::{ErrorBody, ErrorCode};

/// A token refreshed.
#[derive(Debug)]
pub struct Refreshed {
    /// The new token's expiry, epoch seconds.
    pub expires_at: Option<u64>,
}

impl Session {
    /// Takes a new user token for the same user of the same app; the
    /// connection's expiry moves to the new token's.
    pub async fn refresh(&mut self, token: &str) -> Result<Refreshed, ErrorBody> {
        let (app, identity) = verify_user_token_fetching(&self.state.apps, token).await?;
        let same_user = app.id() == self.app.id()
            && identity.sub().is_some()
            && identity.sub() == self.identity.sub();
        if !same_user {
            return Err(error(ErrorCode::Unauthorized, ""));
        }
        let expires_at = identity.expires_at();
        self.identity = identity;
        Ok(Refreshed { expires_at })
    }
}
