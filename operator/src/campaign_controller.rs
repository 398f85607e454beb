//! The `SeckillCampaign` reconciler.
//!
//! A campaign lives in its country's namespace `pulse-<code>`; its id in `marketing` is
//! `<namespace>/<name>`. Each pass talks to that country's `marketing` through
//! `marketing.v1.CampaignAdmin` ([`crate::marketing`]):
//! - when the object's generation is not yet in `marketing` (a new object, a changed spec), when
//!   `marketing` does not know the campaign, or when it holds another stock or other times, the
//!   spec is sent with `Upsert` (prices in the currency of the namespace's `CountryTenant`);
//! - otherwise `GetStatus` reads the sales.
//!
//! Phase, sold and remaining are mirrored into the status subresource with `Ready`/`Degraded`
//! conditions; the campaign is looked at again when it opens, when it ends, and every `poll`
//! while it is open, so the status follows the sales. Errors set `Degraded` (the message names the
//! marketing URL and call), count in the failure metric and retry with exponential backoff.
//! The finalizer closes the campaign in `marketing` on deletion and is only removed once `Close`
//! succeeded (or the whole namespace is going away and `marketing` with it).
//!
//! Status writes happen on every poll, so the controller only wakes up for changes that matter
//! (generation, finalizers, deletion; see [`worth_reconciling`]) and its own timers.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use pulse_proto::marketing::v1 as pb;

use crate::campaign::{phase_at, requeue_after};
use crate::controller::{Failures, backoff_delay, is_not_found, kube_label, publish_event};
use crate::crd::condition::{self, DEGRADED, READY};
use crate::crd::{
    CampaignPhase, Condition, ConditionStatus, CountryTenant, SeckillCampaign, SeckillCampaignSpec,
    SeckillCampaignStatus,
};
use crate::marketing::{MarketingClient, MarketingError};
use crate::metrics::Metrics;
use crate::resources::MANAGER;

/// Finalizer that closes the campaign in `marketing`.
pub const FINALIZER: &str = "pulse.dev/campaign-close";
/// Metric label of this controller.
pub const CONTROLLER: &str = "seckillcampaign";
/// How often an open campaign's sales are read by default.
pub const DEFAULT_POLL: Duration = Duration::from_secs(10);
/// How soon to look again when `marketing` has not yet seen a start or end the operator's
/// clock has passed (clock skew between nodes).
pub const SKEW_RETRY: Duration = Duration::from_secs(1);
/// Prefix of a country namespace (`pulse-fr`).
pub const COUNTRY_NAMESPACE_PREFIX: &str = "pulse-";

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The campaign cannot be sent to `marketing` as it is.
    #[error("invalid SeckillCampaign: {0}")]
    Spec(String),
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
        "cannot close the campaign in marketing, so finalizer {FINALIZER} stays and Close is retried with backoff (remove the finalizer by hand to give up): {0}"
    )]
    Close(#[source] MarketingError),
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing.
        action: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Adding or removing the finalizer failed.
    #[error("finalizer {FINALIZER}: {0}")]
    Finalizer(#[source] Box<kube::Error>),
    /// The finalizer helper reported an internal error.
    #[error("finalizer {FINALIZER}: {0}")]
    FinalizerState(String),
}

impl Error {
    /// Short kind used as the `error` label of the failure metric.
    pub fn metric_label(&self) -> String {
        match self {
            Self::Spec(_) => "invalid_spec".to_owned(),
            Self::NoCountry { .. } => "no_country".to_owned(),
            Self::Marketing(err) | Self::Close(err) => err.metric_label().to_owned(),
            Self::Kube { source, .. } | Self::Finalizer(source) => kube_label(source),
            Self::FinalizerState(_) => "finalizer".to_owned(),
        }
    }

    /// Reason of the `Ready`/`Degraded` conditions and of the Warning Event.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Spec(_) => "InvalidSpec",
            Self::NoCountry { .. } => "NoCountry",
            Self::Marketing(err) => err.reason(),
            Self::Close(_) => "CloseFailed",
            Self::Kube { .. } | Self::Finalizer(_) | Self::FinalizerState(_) => "ReconcileFailed",
        }
    }

    fn from_finalizer(err: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match err {
            F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
            F::AddFinalizer(source) | F::RemoveFinalizer(source) => {
                Self::Finalizer(Box::new(source))
            }
            other => Self::FinalizerState(other.to_string()),
        }
    }
}

/// The clock of the reconciler (the real one outside tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every campaign reconciliation shares.
pub struct CampaignContext {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics (shared with the tenant controller).
    pub metrics: Arc<Metrics>,
    /// Publishes Events on campaigns.
    pub recorder: Recorder,
    /// The `marketing.v1.CampaignAdmin` client.
    pub marketing: MarketingClient,
    /// How often an open campaign's sales are read.
    pub poll: Duration,
    clock: Clock,
    failures: Failures,
}

impl CampaignContext {
    /// A context for `client`, reporting Events as `reporter`.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        reporter: Reporter,
        marketing: MarketingClient,
        poll: Duration,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            metrics,
            recorder,
            marketing,
            poll,
            clock: Arc::new(Utc::now),
            failures: Failures::default(),
        }
    }

    /// The same context reading time from `clock` (tests freeze it to check requeue times).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    async fn publish(
        &self,
        campaign: &SeckillCampaign,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        publish_event(&self.recorder, campaign, type_, reason, note).await;
    }
}

/// `<namespace>/<name>`: the campaign's id in `marketing`, and its key here.
pub fn campaign_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn key(campaign: &SeckillCampaign) -> String {
    campaign_id(
        campaign.namespace().as_deref().unwrap_or_default(),
        &campaign.name_any(),
    )
}

fn namespace_of(campaign: &SeckillCampaign) -> Result<String, Error> {
    campaign.namespace().ok_or_else(|| {
        Error::Spec("a SeckillCampaign is namespaced: it has no namespace".to_owned())
    })
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn from_timestamp(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

/// The `Upsert` request for a campaign, with prices in `currency`.
pub fn upsert_request(
    spec: &SeckillCampaignSpec,
    id: &str,
    currency: &str,
) -> Result<pb::UpsertCampaignRequest, Error> {
    let stock = u32::try_from(spec.stock).map_err(|_| {
        Error::Spec(format!(
            "spec.stock {} is out of range (0 to {})",
            spec.stock,
            u32::MAX
        ))
    })?;
    let per_user_limit = u32::try_from(spec.per_user_limit).map_err(|_| {
        Error::Spec(format!(
            "spec.perUserLimit {} is out of range",
            spec.per_user_limit
        ))
    })?;
    Ok(pb::UpsertCampaignRequest {
        campaign_id: id.to_owned(),
        voucher_title: spec.voucher.title.clone(),
        voucher_value_minor: spec.voucher.value,
        currency: currency.to_owned(),
        price_minor: spec.price,
        stock,
        per_user_limit,
        starts_at: Some(timestamp(spec.starts_at)),
        ends_at: Some(timestamp(spec.ends_at)),
    })
}

/// What `marketing` holds that differs from the spec (stock, start, end), if anything.
/// Times are compared to the microsecond, the precision `marketing` stores.
pub fn drift(spec: &SeckillCampaignSpec, marketing: &pb::CampaignStatus) -> Option<String> {
    let micros = |at: Option<DateTime<Utc>>| at.map(|t| t.timestamp_micros());
    let mut differences = Vec::new();
    if i64::from(marketing.stock) != spec.stock {
        differences.push(format!(
            "stock {} instead of {}",
            marketing.stock, spec.stock
        ));
    }
    if micros(from_timestamp(marketing.starts_at.as_ref()))
        != Some(spec.starts_at.timestamp_micros())
    {
        differences.push("another start".to_owned());
    }
    if micros(from_timestamp(marketing.ends_at.as_ref())) != Some(spec.ends_at.timestamp_micros()) {
        differences.push("another end".to_owned());
    }
    (!differences.is_empty()).then(|| {
        format!(
            "marketing differed from the spec ({})",
            differences.join(", ")
        )
    })
}

/// The phase `marketing` reports (a closed campaign has ended); the spec's clock decides when
/// `marketing` does not say.
pub fn marketing_phase(
    spec: &SeckillCampaignSpec,
    marketing: &pb::CampaignStatus,
    now: DateTime<Utc>,
) -> CampaignPhase {
    if marketing.closed {
        return CampaignPhase::Ended;
    }
    match marketing.phase() {
        pb::CampaignPhase::Scheduled => CampaignPhase::Scheduled,
        pb::CampaignPhase::Active => CampaignPhase::Active,
        pb::CampaignPhase::SoldOut => CampaignPhase::SoldOut,
        pb::CampaignPhase::Ended => CampaignPhase::Ended,
        pb::CampaignPhase::Unspecified => phase_at(spec, now, Some(i64::from(marketing.remaining))),
    }
}

/// When to look at a campaign again after a successful pass at `now`: at `startsAt` while
/// scheduled, every `poll` (and at the latest at `endsAt`) while open, never once ended or
/// closed; soon when `marketing` lags behind a start or end the operator's clock has passed.
pub fn next_action(
    spec: &SeckillCampaignSpec,
    marketing: &pb::CampaignStatus,
    now: DateTime<Utc>,
    poll: Duration,
) -> Action {
    if marketing.closed {
        return Action::await_change();
    }
    let reported = marketing_phase(spec, marketing, now);
    let expected = phase_at(spec, now, None);
    let lagging = matches!(
        (reported, expected),
        (
            CampaignPhase::Scheduled,
            CampaignPhase::Active | CampaignPhase::SoldOut | CampaignPhase::Ended
        ) | (
            CampaignPhase::Active | CampaignPhase::SoldOut,
            CampaignPhase::Ended
        )
    );
    if lagging {
        return Action::requeue(SKEW_RETRY.min(poll));
    }
    match requeue_after(spec, now, poll) {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    }
}

fn summary(phase: CampaignPhase, marketing: &pb::CampaignStatus, url: &str) -> String {
    format!(
        "{}: {} of {} sold, {} left{} (marketing at {url})",
        phase.as_str(),
        marketing.sold,
        marketing.stock,
        marketing.remaining,
        if marketing.closed {
            ", closed in marketing"
        } else {
            ""
        }
    )
}

/// The status after a successful sync with `marketing` (reachable at `url`).
pub fn synced_status(
    campaign: &SeckillCampaign,
    marketing: &pb::CampaignStatus,
    url: &str,
    now: DateTime<Utc>,
) -> SeckillCampaignStatus {
    let generation = campaign.metadata.generation;
    let previous = campaign.status.clone().unwrap_or_default();
    let phase = marketing_phase(&campaign.spec, marketing, now);
    let fresh = vec![
        Condition::new(
            READY,
            ConditionStatus::True,
            "Synced",
            summary(phase, marketing, url),
            generation,
            now,
        ),
        Condition::new(
            DEGRADED,
            ConditionStatus::False,
            "AsExpected",
            "",
            generation,
            now,
        ),
    ];
    SeckillCampaignStatus {
        observed_generation: generation,
        conditions: condition::merge(&previous.conditions, fresh),
        phase: Some(phase),
        sold: Some(i64::from(marketing.sold)),
        remaining: Some(i64::from(marketing.remaining)),
        last_sync_time: Some(now),
    }
}

/// The status after a failed pass: `Ready` false and `Degraded` true with the error; the last
/// mirrored sales and `observedGeneration` (the generation last sent to `marketing`) stay.
pub fn failed_status(
    campaign: &SeckillCampaign,
    err: &Error,
    now: DateTime<Utc>,
) -> SeckillCampaignStatus {
    let generation = campaign.metadata.generation;
    let previous = campaign.status.clone().unwrap_or_default();
    let message = err.to_string();
    let fresh = vec![
        Condition::new(
            READY,
            ConditionStatus::False,
            err.reason(),
            message.clone(),
            generation,
            now,
        ),
        Condition::new(
            DEGRADED,
            ConditionStatus::True,
            err.reason(),
            message,
            generation,
            now,
        ),
    ];
    SeckillCampaignStatus {
        conditions: condition::merge(&previous.conditions, fresh),
        ..previous
    }
}

async fn patch_status(
    campaign: &SeckillCampaign,
    status: &SeckillCampaignStatus,
    ctx: &CampaignContext,
) -> Result<(), Error> {
    let namespace = namespace_of(campaign)?;
    let api: Api<SeckillCampaign> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": SeckillCampaign::api_version(&()),
        "kind": SeckillCampaign::kind(&()),
        "status": status,
    });
    api.patch_status(
        &campaign.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!("update status of SeckillCampaign {}", key(campaign)),
        source: Box::new(source),
    })?;
    Ok(())
}

/// Writes `Degraded` and publishes a Warning; failures here are only logged, the original
/// error is what the reconciliation reports.
async fn degrade(campaign: &SeckillCampaign, err: &Error, ctx: &CampaignContext) {
    let status = failed_status(campaign, err, ctx.now());
    if let Err(status_err) = patch_status(campaign, &status, ctx).await {
        tracing::warn!(campaign = %key(campaign), error = %status_err, "cannot record the failure in the status");
    }
    ctx.publish(campaign, EventType::Warning, err.reason(), err.to_string())
        .await;
}

/// The currency of the country owning `namespace` (`pulse-fr` → `CountryTenant` `fr`).
async fn country_currency(namespace: &str, ctx: &CampaignContext) -> Result<String, Error> {
    let Some(tenant) = namespace
        .strip_prefix(COUNTRY_NAMESPACE_PREFIX)
        .filter(|t| !t.is_empty())
    else {
        return Err(Error::NoCountry {
            namespace: namespace.to_owned(),
            why: format!(
                "a SeckillCampaign lives in the namespace of its country, {COUNTRY_NAMESPACE_PREFIX}<code>"
            ),
        });
    };
    match Api::<CountryTenant>::all(ctx.client.clone())
        .get(tenant)
        .await
    {
        Ok(tenant) => Ok(tenant.spec.country.currency),
        Err(err) if is_not_found(&err) => Err(Error::NoCountry {
            namespace: namespace.to_owned(),
            why: format!(
                "there is no CountryTenant `{tenant}`, whose currency the price and the voucher value are in"
            ),
        }),
        Err(source) => Err(Error::Kube {
            action: format!("get CountryTenant {tenant}"),
            source: Box::new(source),
        }),
    }
}

/// What `marketing` said, and why the spec was upserted (when it was).
struct Synced {
    marketing: pb::CampaignStatus,
    upserted: Option<String>,
}

async fn sync(
    campaign: &SeckillCampaign,
    namespace: &str,
    ctx: &CampaignContext,
) -> Result<Synced, Error> {
    let id = campaign_id(namespace, &campaign.name_any());
    let generation = campaign.metadata.generation;
    let observed = campaign.status.as_ref().and_then(|s| s.observed_generation);
    let why = if generation.is_some() && observed == generation {
        match ctx.marketing.get_status(namespace, &id).await? {
            Some(marketing) => match drift(&campaign.spec, &marketing) {
                None => {
                    return Ok(Synced {
                        marketing,
                        upserted: None,
                    });
                }
                Some(drift) => drift,
            },
            None => "marketing did not know the campaign".to_owned(),
        }
    } else {
        match generation {
            Some(generation) => format!("generation {generation} is new"),
            None => "first sync".to_owned(),
        }
    };
    let currency = country_currency(namespace, ctx).await?;
    let request = upsert_request(&campaign.spec, &id, &currency)?;
    let marketing = ctx.marketing.upsert(namespace, request).await?;
    Ok(Synced {
        marketing,
        upserted: Some(why),
    })
}

async fn apply(campaign: Arc<SeckillCampaign>, ctx: &CampaignContext) -> Result<Action, Error> {
    let namespace = namespace_of(&campaign)?;
    let url = ctx.marketing.url_for(&namespace);
    let synced = match sync(&campaign, &namespace, ctx).await {
        Ok(synced) => synced,
        Err(err) => {
            degrade(&campaign, &err, ctx).await;
            return Err(err);
        }
    };
    let now = ctx.now();
    let status = synced_status(&campaign, &synced.marketing, &url, now);
    patch_status(&campaign, &status, ctx).await?;

    let m = &synced.marketing;
    if let Some(why) = &synced.upserted {
        ctx.publish(
            &campaign,
            EventType::Normal,
            "Upserted",
            format!(
                "{why}: upserted as {} into marketing at {url}: stock {}, {} per user, from {} to {}",
                m.campaign_id,
                m.stock,
                campaign.spec.per_user_limit,
                campaign.spec.starts_at.to_rfc3339(),
                campaign.spec.ends_at.to_rfc3339()
            ),
        )
        .await;
    }
    let before = campaign.status.as_ref().and_then(|s| s.phase);
    if let Some(phase) = status.phase
        && before != Some(phase)
    {
        ctx.publish(
            &campaign,
            EventType::Normal,
            phase.as_str(),
            summary(phase, m, &url),
        )
        .await;
    }
    let was_degraded = campaign
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, DEGRADED))
        .is_some_and(|c| c.status == ConditionStatus::True);
    if was_degraded {
        ctx.publish(
            &campaign,
            EventType::Normal,
            "Recovered",
            format!("synced with marketing at {url} again"),
        )
        .await;
    }
    Ok(next_action(&campaign.spec, m, now, ctx.poll))
}

/// Whether `namespace` is being deleted (or gone): then its `marketing` is going away too.
async fn namespace_terminating(namespace: &str, ctx: &CampaignContext) -> bool {
    match Api::<Namespace>::all(ctx.client.clone())
        .get(namespace)
        .await
    {
        Ok(ns) => ns.metadata.deletion_timestamp.is_some(),
        Err(err) if is_not_found(&err) => true,
        Err(err) => {
            tracing::warn!(namespace, error = %err, "cannot read the namespace");
            false
        }
    }
}

async fn cleanup(campaign: Arc<SeckillCampaign>, ctx: &CampaignContext) -> Result<Action, Error> {
    let namespace = namespace_of(&campaign)?;
    let id = campaign_id(&namespace, &campaign.name_any());
    let url = ctx.marketing.url_for(&namespace);
    match ctx.marketing.close(&namespace, &id).await {
        Ok(Some(m)) => {
            ctx.publish(
                &campaign,
                EventType::Normal,
                "Closed",
                format!(
                    "closed {id} in marketing at {url}: {} of {} sold",
                    m.sold, m.stock
                ),
            )
            .await;
            Ok(Action::await_change())
        }
        Ok(None) => {
            ctx.publish(
                &campaign,
                EventType::Normal,
                "Closed",
                format!("marketing at {url} does not know {id}: nothing to close"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(err) => {
            if !(err.is_unreachable() && namespace_terminating(&namespace, ctx).await) {
                let err = Error::Close(err);
                degrade(&campaign, &err, ctx).await;
                return Err(err);
            }
            ctx.publish(
                &campaign,
                EventType::Warning,
                "CloseSkipped",
                format!(
                    "namespace {namespace} is being deleted and {err}: removing the finalizer without closing; {id} stays open in marketing's database until closed there (POST /v1/campaigns/{{id}}/close)"
                ),
            )
            .await;
            Ok(Action::await_change())
        }
    }
}

/// Reconciles one campaign (the `Controller`'s reconcile function).
pub async fn reconcile(
    campaign: Arc<SeckillCampaign>,
    ctx: Arc<CampaignContext>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.start(CONTROLLER);
    let key = key(&campaign);
    let result = async {
        let namespace = namespace_of(&campaign)?;
        let api: Api<SeckillCampaign> = Api::namespaced(ctx.client.clone(), &namespace);
        finalizer(&api, FINALIZER, campaign, |event| async {
            match event {
                FinalizerEvent::Apply(campaign) => apply(campaign, &ctx).await,
                FinalizerEvent::Cleanup(campaign) => cleanup(campaign, &ctx).await,
            }
        })
        .await
        .map_err(Error::from_finalizer)
    }
    .await;
    match &result {
        Ok(_) => ctx.failures.reset(&key),
        Err(err) => {
            ctx.metrics.failure(CONTROLLER, &err.metric_label());
            tracing::warn!(campaign = %key, error = %err, "reconcile failed");
        }
    }
    result
}

/// The `Controller`'s error policy: exponential backoff per campaign (5 s doubling to 5 min).
pub fn error_policy(
    campaign: Arc<SeckillCampaign>,
    _err: &Error,
    ctx: Arc<CampaignContext>,
) -> Action {
    Action::requeue(backoff_delay(ctx.failures.next(&key(&campaign))))
}

/// The watch events worth a reconciliation: a new generation (a spec change; the start of a
/// deletion bumps it too), a finalizer change, a deletion. Status changes, such as the
/// operator's own writes on every poll, are not: the reconciler's timers cover them.
pub fn worth_reconciling(campaign: &SeckillCampaign) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    campaign.metadata.generation.hash(&mut hasher);
    campaign.finalizers().hash(&mut hasher);
    campaign
        .metadata
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Runs the campaign controller until `shutdown` completes.
pub async fn run(
    ctx: Arc<CampaignContext>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<SeckillCampaign> = Api::all(ctx.client.clone());
    let (reader, writer) = reflector::store();
    let campaigns = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(worth_reconciling, PredicateConfig::default());
    let config = kube::runtime::controller::Config::default().concurrency(8);
    Controller::for_stream(campaigns, reader)
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => {
                    tracing::debug!(campaign = %object.name, namespace = ?object.namespace, ?action, "reconciled");
                }
                Err(err) => tracing::debug!(error = %err, "controller event"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
