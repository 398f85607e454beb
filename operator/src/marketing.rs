//! The operator's client of `marketing.v1.CampaignAdmin`, the gRPC API through which a country's
//! `marketing` component is told about campaigns.
//!
//! Each country runs its own `marketing`, reached through Kubernetes Service DNS: the URL comes
//! from a template with a `{namespace}` placeholder (by default the cluster convention of
//! `pulse_kit::settings::cluster::grpc_url`, `http://marketing.{namespace}.svc:50051`;
//! `PULSE_MARKETING_GRPC_URL_TEMPLATE` changes it, e.g. for another cluster domain).
//! Every call has a deadline (sent as `grpc-timeout` and enforced here too), and every error
//! says which URL and call failed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use pulse_kit::settings::cluster;
use pulse_proto::marketing::v1 as pb;
use pulse_proto::marketing::v1::campaign_admin_client::CampaignAdminClient;
use tonic::transport::{Channel, Endpoint};

use crate::crd::Component;

/// Placeholder of the namespace in the URL template.
pub const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// Where `marketing` listens in a country namespace (the Service the tenant reconciler creates):
/// `http://marketing.{namespace}.svc:50051`.
pub fn default_url_template() -> String {
    cluster::grpc_url(Component::Marketing.name(), NAMESPACE_PLACEHOLDER)
}

/// Default deadline of one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach `marketing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketingSettings {
    /// URL template; `{namespace}` is replaced by the campaign's namespace.
    pub url_template: String,
    /// Deadline of one call (connecting included).
    pub timeout: Duration,
}

impl Default for MarketingSettings {
    fn default() -> Self {
        Self {
            url_template: default_url_template(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl MarketingSettings {
    /// The URL of `marketing` in `namespace`.
    pub fn url_for(&self, namespace: &str) -> String {
        self.url_template.replace(NAMESPACE_PLACEHOLDER, namespace)
    }

    /// Checks the template and the deadline (at start-up, so a typo stops the operator with a
    /// clear message instead of degrading every campaign).
    pub fn validate(&self) -> Result<(), MarketingError> {
        endpoint(&self.url_for("pulse-fr"), self.timeout)?;
        if self.timeout.is_zero() {
            return Err(MarketingError::BadSettings(
                "the marketing gRPC timeout must be more than zero".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Why a call to `marketing` failed.
#[derive(Debug, thiserror::Error)]
pub enum MarketingError {
    /// The settings cannot work.
    #[error("{0}")]
    BadSettings(String),
    /// The URL built from the template is not a usable gRPC URL.
    #[error(
        "`{url}` is not a usable marketing gRPC URL (check PULSE_MARKETING_GRPC_URL_TEMPLATE): {reason}"
    )]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("marketing at {url} did not answer {call} within {} ms", timeout.as_millis())]
    Timeout {
        /// The call (`CampaignAdmin/Upsert`).
        call: &'static str,
        /// Where it was sent.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// `marketing` cannot be reached or cannot serve now (connection refused, DNS, its
    /// PostgreSQL or Redis down); retrying later may work.
    #[error("marketing at {url} is unavailable ({call} failed with {code:?}): {message}")]
    Unavailable {
        /// The call.
        call: &'static str,
        /// Where it was sent.
        url: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// `marketing` answered with something this operator cannot use (a phase it does not know:
    /// a newer `marketing`?).
    #[error("marketing at {url} answered with {what}: is marketing newer than this operator?")]
    Incompatible {
        /// Where the call was sent.
        url: String,
        /// What it answered.
        what: String,
    },
    /// `marketing` refused the request (bad field, unknown campaign for an update, …): the
    /// object has to change.
    #[error("marketing at {url} refused {call} ({code:?}): {message}")]
    Rejected {
        /// The call.
        call: &'static str,
        /// Where it was sent.
        url: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message (it names the field).
        message: String,
    },
}

impl MarketingError {
    /// The `error` label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::BadSettings(_) | Self::BadUrl { .. } => "marketing_url",
            Self::Timeout { .. } => "marketing_timeout",
            Self::Unavailable { .. } => "marketing_unavailable",
            Self::Rejected { .. } => "marketing_rejected",
            Self::Incompatible { .. } => "marketing_incompatible",
        }
    }

    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadSettings(_) | Self::BadUrl { .. } => "InvalidMarketingURL",
            Self::Timeout { .. } | Self::Unavailable { .. } => "MarketingUnavailable",
            Self::Rejected { .. } => "MarketingRejected",
            Self::Incompatible { .. } => "MarketingIncompatible",
        }
    }

    /// Whether `marketing` could not be reached or could not answer (as opposed to a refusal).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unavailable { .. })
    }
}

fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, MarketingError> {
    let bad = |reason: String| MarketingError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad("it must start with http:// or https://".to_owned()));
    }
    if url.contains(NAMESPACE_PLACEHOLDER) {
        return Err(bad(
            "the {namespace} placeholder was not replaced".to_owned()
        ));
    }
    // The deadline is enforced around each whole call, connecting included (see
    // `MarketingClient::call`), so that an expired deadline is always reported as a timeout; the
    // longer connect timeout only bounds a hanging connection attempt between calls.
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|err| bad(err.to_string()))?;
    Ok(endpoint.connect_timeout(timeout.saturating_mul(2)))
}

/// The client: one lazily connected channel per marketing URL, reused across reconciliations.
#[derive(Debug)]
pub struct MarketingClient {
    settings: MarketingSettings,
    channels: Mutex<HashMap<String, Channel>>,
}

impl MarketingClient {
    /// A client with `settings`.
    pub fn new(settings: MarketingSettings) -> Self {
        Self {
            settings,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &MarketingSettings {
        &self.settings
    }

    /// The URL of `marketing` in `namespace`.
    pub fn url_for(&self, namespace: &str) -> String {
        self.settings.url_for(namespace)
    }

    fn channel(&self, url: &str) -> Result<Channel, MarketingError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = endpoint(url, self.settings.timeout)?.connect_lazy();
        channels.insert(url.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Sends `message` to `marketing` in `namespace` with the deadline (`send` picks the
    /// method). `NOT_FOUND` is `Ok(None)`; every other error is classified.
    async fn call<M, T, F, Fut>(
        &self,
        namespace: &str,
        call: &'static str,
        message: M,
        send: F,
    ) -> Result<Option<T>, MarketingError>
    where
        F: FnOnce(CampaignAdminClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let url = self.url_for(namespace);
        let client = CampaignAdminClient::new(self.channel(&url)?);
        let timeout = self.settings.timeout;
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        let answer = tokio::time::timeout(timeout, send(client, request)).await;
        let status = match answer {
            Err(_elapsed) => {
                return Err(MarketingError::Timeout { call, url, timeout });
            }
            Ok(Ok(response)) => return Ok(Some(response.into_inner())),
            Ok(Err(status)) => status,
        };
        use tonic::Code;
        let code = status.code();
        let message = status.message().to_owned();
        match code {
            Code::NotFound => Ok(None),
            // tonic reports the `grpc-timeout` it enforces on the client side as CANCELLED
            // ("Timeout expired"), the server as DEADLINE_EXCEEDED.
            Code::DeadlineExceeded | Code::Cancelled => {
                Err(MarketingError::Timeout { call, url, timeout })
            }
            Code::Unavailable
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::DataLoss => Err(MarketingError::Unavailable {
                call,
                url,
                code,
                message,
            }),
            _ => Err(MarketingError::Rejected {
                call,
                url,
                code,
                message,
            }),
        }
    }

    /// `CampaignAdmin/Upsert`.
    pub async fn upsert(
        &self,
        namespace: &str,
        request: pb::UpsertCampaignRequest,
    ) -> Result<pb::CampaignStatus, MarketingError> {
        const CALL: &str = "CampaignAdmin/Upsert";
        let id = request.campaign_id.clone();
        self.call(namespace, CALL, request, |mut client, request| async move {
            client.upsert(request).await
        })
        .await?
        .ok_or_else(|| MarketingError::Rejected {
            call: CALL,
            url: self.url_for(namespace),
            code: tonic::Code::NotFound,
            message: format!("campaign `{id}` not found"),
        })
    }

    /// `CampaignAdmin/GetStatus`; `None` when `marketing` does not know the campaign.
    pub async fn get_status(
        &self,
        namespace: &str,
        campaign_id: &str,
    ) -> Result<Option<pb::CampaignStatus>, MarketingError> {
        let message = pb::GetCampaignStatusRequest {
            campaign_id: campaign_id.to_owned(),
        };
        self.call(
            namespace,
            "CampaignAdmin/GetStatus",
            message,
            |mut c, r| async move { c.get_status(r).await },
        )
        .await
    }

    /// `CampaignAdmin/Close` (idempotent); `None` when `marketing` does not know the campaign.
    pub async fn close(
        &self,
        namespace: &str,
        campaign_id: &str,
    ) -> Result<Option<pb::CampaignStatus>, MarketingError> {
        let message = pb::CloseCampaignRequest {
            campaign_id: campaign_id.to_owned(),
        };
        self.call(
            namespace,
            "CampaignAdmin/Close",
            message,
            |mut c, r| async move { c.close(r).await },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_come_from_the_template() {
        let settings = MarketingSettings::default();
        assert_eq!(
            settings.url_for("pulse-fr"),
            "http://marketing.pulse-fr.svc:50051"
        );
        settings.validate().expect("the default is valid");
        let other = MarketingSettings {
            url_template: "http://marketing.{namespace}.svc.cluster.example:50051".into(),
            ..MarketingSettings::default()
        };
        assert_eq!(
            other.url_for("pulse-de"),
            "http://marketing.pulse-de.svc.cluster.example:50051"
        );
        other.validate().expect("another cluster domain is valid");
    }

    #[test]
    fn bad_settings_are_refused_with_a_hint() {
        for template in ["marketing.{namespace}.svc:50051", "http://{namespace {x}"] {
            let settings = MarketingSettings {
                url_template: template.into(),
                ..MarketingSettings::default()
            };
            let err = settings.validate().expect_err(template);
            assert!(
                err.to_string()
                    .contains("PULSE_MARKETING_GRPC_URL_TEMPLATE"),
                "{err}"
            );
            assert_eq!(err.reason(), "InvalidMarketingURL");
        }
        let zero = MarketingSettings {
            timeout: Duration::ZERO,
            ..MarketingSettings::default()
        };
        assert!(zero.validate().is_err());
    }

    #[tokio::test]
    async fn an_unreachable_marketing_is_unavailable_and_names_the_url() {
        // Nothing listens on a port we just bound and released.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let client = MarketingClient::new(MarketingSettings {
            url_template: format!("http://127.0.0.1:{port}/{{namespace}}"),
            timeout: Duration::from_secs(2),
        });
        let err = client
            .get_status("pulse-fr", "pulse-fr/x")
            .await
            .expect_err("nothing listens");
        assert!(err.is_unreachable(), "{err:?}");
        assert_eq!(err.reason(), "MarketingUnavailable");
        let text = err.to_string();
        assert!(
            text.contains(&format!("127.0.0.1:{port}")) && text.contains("CampaignAdmin/GetStatus"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_silent_marketing_times_out() {
        // Accepts connections but never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client = MarketingClient::new(MarketingSettings {
            url_template: format!("http://{addr}"),
            timeout: Duration::from_millis(300),
        });
        let started = std::time::Instant::now();
        let err = client
            .close("pulse-fr", "pulse-fr/x")
            .await
            .expect_err("no answer");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(err.is_unreachable(), "{err:?}");
        assert_eq!(err.metric_label(), "marketing_timeout", "{err}");
        holder.abort();
    }
}
