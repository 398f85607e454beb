//! `identity.v1.Directory` for internal callers (notifier): how to reach a user. Deadlines:
//! tonic's server ends a call when the caller's `grpc-timeout` passes, and the database read is
//! bounded by what is left of it.

use std::time::Duration;

use pulse_kit::grpc::status_from_error;
use pulse_proto::identity::v1 as pb;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::store;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct DirectoryService {
    pool: PgPool,
}

impl DirectoryService {
    /// The service over identity's pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The caller's deadline (`grpc-timeout`, e.g. `500m`), if it sent one.
fn deadline<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[tonic::async_trait]
impl pb::directory_server::Directory for DirectoryService {
    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let within = deadline(&request);
        let raw = &request.get_ref().user_id;
        let id: Uuid = raw.trim().parse().map_err(|_| {
            Status::invalid_argument(format!("`user_id` must be a UUID, got `{raw}`"))
        })?;
        let lookup = async {
            let mut conn = self.pool.acquire().await?;
            store::user(&mut conn, id).await
        };
        let found = match within {
            Some(left) => tokio::time::timeout(left, lookup).await.map_err(|_| {
                Status::deadline_exceeded("the deadline passed before the user was read")
            })?,
            None => lookup.await,
        };
        let user = found
            .map_err(|err| status_from_error(&err))?
            .ok_or_else(|| Status::not_found(format!("no user has the id {id}")))?;
        let email = match (&user.email, user.email_verified_at) {
            (Some(email), Some(_)) => email.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::Contact {
            user_id: user.id.to_string(),
            phone: user.phone,
            email,
            language: user.language,
            name: user.name.unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_read_from_grpc_timeout() {
        let mut request = Request::new(());
        assert_eq!(deadline(&request), None);
        request.set_timeout(Duration::from_millis(250));
        assert_eq!(deadline(&request), Some(Duration::from_millis(250)));
        request
            .metadata_mut()
            .insert("grpc-timeout", "2S".parse().expect("value"));
        assert_eq!(deadline(&request), Some(Duration::from_secs(2)));
        request
            .metadata_mut()
            .insert("grpc-timeout", "soon".parse().expect("value"));
        assert_eq!(deadline(&request), None);
    }
}
