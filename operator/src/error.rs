//! Why a reconciliation failed: one error type for both reconcilers, with the `error` label of
//! the failure metric and the reason of the `Ready`/`Degraded` conditions and Warning Events.

use crate::marketing::MarketingError;
use crate::resources::SpecError;

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tenant cannot be turned into objects.
    #[error("invalid CountryTenant: {0}")]
    Tenant(#[from] SpecError),
    /// The campaign cannot be sent to `marketing` as it is.
    #[error("invalid SeckillCampaign: {0}")]
    Campaign(String),
    /// The namespace is not a country's, or that country has no `CountryTenant`.
    #[error("no country for namespace {namespace}: {why}")]
    NoCountry {
        /// The campaign's namespace.
        namespace: String,
        /// What is missing.
        why: String,
    },
    /// A call to `marketing` failed.
    #[error(transparent)]
    Marketing(#[from] MarketingError),
    /// `Close` failed while the campaign is being deleted.
    #[error(
        "cannot close the campaign in marketing, so finalizer {finalizer} stays and Close is retried with backoff (remove the finalizer by hand to give up): {source}"
    )]
    Close {
        /// The finalizer that stays.
        finalizer: &'static str,
        /// Why `Close` failed.
        #[source]
        source: MarketingError,
    },
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing (`apply Deployment pulse-fr/booking`).
        action: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// An object could not be serialised.
    #[error("cannot serialise an object: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer {finalizer}: {source}")]
    Finalizer {
        /// The finalizer.
        finalizer: &'static str,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The finalizer helper reported an internal error.
    #[error("finalizer {finalizer}: {message}")]
    FinalizerState {
        /// The finalizer.
        finalizer: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// A failed Kubernetes call made while doing `action`.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube {
            action,
            source: Box::new(source),
        }
    }

    /// What `kube::runtime::finalizer` reported, unwrapped: the reconciler's own error as it
    /// was, a failed finalizer patch as [`Error::Finalizer`].
    pub fn from_finalizer(
        finalizer: &'static str,
        err: kube::runtime::finalizer::Error<Error>,
    ) -> Self {
        use kube::runtime::finalizer::Error as F;
        match err {
            F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
            F::AddFinalizer(source) | F::RemoveFinalizer(source) => Self::Finalizer {
                finalizer,
                source: Box::new(source),
            },
            other => Self::FinalizerState {
                finalizer,
                message: other.to_string(),
            },
        }
    }

    /// Short kind used as the `error` label of the failure metric.
    pub fn metric_label(&self) -> String {
        match self {
            Self::Tenant(_) | Self::Campaign(_) => "invalid_spec".to_owned(),
            Self::NoCountry { .. } => "no_country".to_owned(),
            Self::Marketing(err) | Self::Close { source: err, .. } => err.metric_label().to_owned(),
            Self::Kube { source, .. } | Self::Finalizer { source, .. } => kube_label(source),
            Self::Serialize(_) => "serialize".to_owned(),
            Self::FinalizerState { .. } => "finalizer".to_owned(),
        }
    }

    /// Reason of the `Ready`/`Degraded` conditions and of the Warning Event.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Tenant(err) => err.reason(),
            Self::Campaign(_) => "InvalidSpec",
            Self::NoCountry { .. } => "NoCountry",
            Self::Marketing(err) => err.reason(),
            Self::Close { .. } => "CloseFailed",
            Self::Kube { .. }
            | Self::Serialize(_)
            | Self::Finalizer { .. }
            | Self::FinalizerState { .. } => "ReconcileFailed",
        }
    }
}

/// The metric label of a Kubernetes API error (`api_409`, or `kube_client` without an answer).
pub fn kube_label(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("api_{}", status.code),
        _ => "kube_client".to_owned(),
    }
}

/// Whether the API server answered 404.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}
