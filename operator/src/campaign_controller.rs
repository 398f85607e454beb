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
//! The phase `marketing` answers (it owns the rule), sold and remaining are mirrored into the
//! status subresource with `Ready`/`Degraded` conditions; the campaign is looked at again when it
//! opens, when it ends, and every `poll` while it is open ([`crate::campaign`]), so the status
//! follows the sales. The finalizer closes the campaign in `marketing` on deletion and is only
//! removed once `Close` succeeded (or the whole namespace is going away and `marketing` with it).
//! The shared parts (finalizer, metrics, backoff, `Degraded` on errors, Events) are in
//! [`crate::reconciler`].
//!
//! Status writes happen on every poll, so the controller only wakes up for changes that matter
//! (generation, finalizers, deletion; see [`worth_reconciling`]) and its own timers.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use pulse_kit::settings::cluster;
use pulse_proto::marketing::v1 as pb;
use pulse_proto::time::{from_timestamp, to_timestamp};

use crate::campaign::next_action;
use crate::crd::condition::{self, DEGRADED, READY};
use crate::crd::{
    CampaignPhase, Condition, ConditionStatus, CountryTenant, SeckillCampaign, SeckillCampaignSpec,
    SeckillCampaignStatus,
};
use crate::marketing::{MarketingClient, MarketingError};
use crate::reconciler::{self, Error, Reconcile, is_not_found, patch_status};

/// Finalizer that closes the campaign in `marketing`.
pub const FINALIZER: &str = "pulse.dev/campaign-close";
/// Metric label of this controller.
pub const CONTROLLER: &str = "seckillcampaign";
/// How often an open campaign's sales are read by default.
pub const DEFAULT_POLL: Duration = Duration::from_secs(10);

/// What only the campaign controller needs.
pub struct Campaigns {
    /// The `marketing.v1.CampaignAdmin` client.
    pub marketing: MarketingClient,
    /// How often an open campaign's sales are read.
    pub poll: Duration,
}

/// What every campaign reconciliation shares.
pub type CampaignContext = reconciler::Context<Campaigns>;

/// `<namespace>/<name>`: the campaign's id in `marketing`.
pub fn campaign_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn namespace_of(campaign: &SeckillCampaign) -> Result<String, Error> {
    campaign.namespace().ok_or_else(|| {
        Error::Campaign("a SeckillCampaign is namespaced: it has no namespace".to_owned())
    })
}

/// The tenant (lower-case country code) whose namespace is `namespace`, if it is a country's.
fn tenant_of(namespace: &str) -> Option<&str> {
    namespace
        .strip_prefix(cluster::namespace("").as_str())
        .filter(|tenant| !tenant.is_empty() && cluster::namespace(tenant) == namespace)
}

/// The `Upsert` request for a campaign, with prices in `currency`.
pub fn upsert_request(
    spec: &SeckillCampaignSpec,
    id: &str,
    currency: &str,
) -> Result<pb::UpsertCampaignRequest, Error> {
    let stock = u32::try_from(spec.stock).map_err(|_| {
        Error::Campaign(format!(
            "spec.stock {} is out of range (0 to {})",
            spec.stock,
            u32::MAX
        ))
    })?;
    let per_user_limit = u32::try_from(spec.per_user_limit).map_err(|_| {
        Error::Campaign(format!(
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
        starts_at: Some(to_timestamp(spec.starts_at)),
        ends_at: Some(to_timestamp(spec.ends_at)),
    })
}

/// What `marketing` holds that differs from the spec (stock, start, end), if anything.
/// Times are compared to the microsecond, the precision `marketing` stores.
pub fn drift(spec: &SeckillCampaignSpec, marketing: &pb::CampaignStatus) -> Option<String> {
    let micros = |at: Option<&prost_types::Timestamp>| {
        at.and_then(|t| from_timestamp(t).ok())
            .map(|t| t.timestamp_micros())
    };
    let mut differences = Vec::new();
    if i64::from(marketing.stock) != spec.stock {
        differences.push(format!(
            "stock {} instead of {}",
            marketing.stock, spec.stock
        ));
    }
    if micros(marketing.starts_at.as_ref()) != Some(spec.starts_at.timestamp_micros()) {
        differences.push("another start".to_owned());
    }
    if micros(marketing.ends_at.as_ref()) != Some(spec.ends_at.timestamp_micros()) {
        differences.push("another end".to_owned());
    }
    (!differences.is_empty()).then(|| {
        format!(
            "marketing differed from the spec ({})",
            differences.join(", ")
        )
    })
}

/// The phase `marketing` reports, in the status's spelling; `None` when it reports none this
/// operator knows.
pub fn marketing_phase(marketing: &pb::CampaignStatus) -> Option<CampaignPhase> {
    match marketing.phase() {
        pb::CampaignPhase::Scheduled => Some(CampaignPhase::Scheduled),
        pb::CampaignPhase::Active => Some(CampaignPhase::Active),
        pb::CampaignPhase::SoldOut => Some(CampaignPhase::SoldOut),
        pb::CampaignPhase::Ended => Some(CampaignPhase::Ended),
        pb::CampaignPhase::Unspecified => None,
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

/// The status after a successful sync with `marketing` (reachable at `url`), which reported
/// `phase`.
pub fn synced_status(
    campaign: &SeckillCampaign,
    marketing: &pb::CampaignStatus,
    phase: CampaignPhase,
    url: &str,
    now: DateTime<Utc>,
) -> SeckillCampaignStatus {
    let generation = campaign.metadata.generation;
    let previous = campaign.status.clone().unwrap_or_default();
    let ready = Condition::new(
        READY,
        ConditionStatus::True,
        "Synced",
        summary(phase, marketing, url),
        generation,
        now,
    );
    let fresh = vec![ready, condition::as_expected(generation, now)];
    SeckillCampaignStatus {
        observed_generation: generation,
        conditions: condition::merge(&previous.conditions, fresh),
        phase: Some(phase),
        sold: Some(i64::from(marketing.sold)),
        remaining: Some(i64::from(marketing.remaining)),
        last_sync_time: Some(now),
    }
}

impl Reconcile for SeckillCampaign {
    const CONTROLLER: &'static str = CONTROLLER;
    const FINALIZER: &'static str = FINALIZER;
    type Extra = Campaigns;
    type Status = SeckillCampaignStatus;

    fn api(&self, client: Client) -> Result<Api<Self>, Error> {
        Ok(Api::namespaced(client, &namespace_of(self)?))
    }

    /// Syncs with `marketing`, mirrors what it says into the status, and tells what changed.
    #[tracing::instrument(skip_all)]
    async fn reconcile(&self, ctx: &CampaignContext) -> Result<Action, Error> {
        let namespace = namespace_of(self)?;
        let url = ctx.extra.marketing.url_for(&namespace);
        let synced = sync(self, &namespace, ctx).await;
        let synced = ctx.degrade_on_error(self, synced).await?;
        let now = ctx.now();
        let m = &synced.marketing;
        let status = synced_status(self, m, synced.phase, &url, now);
        patch_status(self, &status, &ctx.client).await?;

        if let Some(why) = &synced.upserted {
            let note = format!(
                "{why}: upserted as {} into marketing at {url}: stock {}, {} per user, from {} to {}",
                m.campaign_id,
                m.stock,
                self.spec.per_user_limit,
                self.spec.starts_at.to_rfc3339(),
                self.spec.ends_at.to_rfc3339()
            );
            ctx.publish(self, EventType::Normal, "Upserted", note).await;
        }
        let before = self.status.as_ref().and_then(|s| s.phase);
        if before != Some(synced.phase) {
            let note = summary(synced.phase, m, &url);
            ctx.publish(self, EventType::Normal, synced.phase.as_str(), note)
                .await;
        }
        let was_degraded = self
            .status
            .as_ref()
            .is_some_and(|s| condition::is_true(&s.conditions, DEGRADED));
        if was_degraded {
            let note = format!("synced with marketing at {url} again");
            ctx.publish(self, EventType::Normal, "Recovered", note)
                .await;
        }
        Ok(next_action(&self.spec, m, now, ctx.extra.poll))
    }

    /// Closes the campaign in `marketing`, unless its whole namespace (and `marketing` with it)
    /// is going away.
    #[tracing::instrument(skip_all)]
    async fn cleanup(&self, ctx: &CampaignContext) -> Result<Action, Error> {
        let namespace = namespace_of(self)?;
        let id = campaign_id(&namespace, &self.name_any());
        let url = ctx.extra.marketing.url_for(&namespace);
        let note = match ctx.extra.marketing.close(&namespace, &id).await {
            Ok(Some(m)) => format!(
                "closed {id} in marketing at {url}: {} of {} sold",
                m.sold, m.stock
            ),
            Ok(None) => format!("marketing at {url} does not know {id}: nothing to close"),
            Err(err) if err.is_unreachable() && namespace_terminating(&namespace, ctx).await => {
                let note = format!(
                    "namespace {namespace} is being deleted and {err}: removing the finalizer without closing; {id} stays open in marketing's database until closed there (POST /v1/campaigns/{{id}}/close)"
                );
                ctx.publish(self, EventType::Warning, "CloseSkipped", note)
                    .await;
                return Ok(Action::await_change());
            }
            Err(source) => {
                let err = Error::Close {
                    finalizer: FINALIZER,
                    source,
                };
                return ctx.degrade_on_error(self, Err(err)).await;
            }
        };
        ctx.publish(self, EventType::Normal, "Closed", note).await;
        Ok(Action::await_change())
    }

    /// `Ready` false and `Degraded` true with the error; the last mirrored sales and
    /// `observedGeneration` (the generation last sent to `marketing`) stay.
    fn failed_status(&self, err: &Error, now: DateTime<Utc>) -> SeckillCampaignStatus {
        let previous = self.status.clone().unwrap_or_default();
        let fresh = condition::failed(
            err.reason(),
            &err.to_string(),
            self.metadata.generation,
            now,
        );
        SeckillCampaignStatus {
            conditions: condition::merge(&previous.conditions, fresh),
            ..previous
        }
    }
}

/// The currency of the country owning `namespace` (`pulse-fr` → `CountryTenant` `fr`).
async fn country_currency(namespace: &str, ctx: &CampaignContext) -> Result<String, Error> {
    let Some(tenant) = tenant_of(namespace) else {
        return Err(Error::NoCountry {
            namespace: namespace.to_owned(),
            why: format!(
                "a SeckillCampaign lives in the namespace of its country, {}",
                cluster::namespace("<code>")
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
        Err(source) => Err(Error::kube(format!("get CountryTenant {tenant}"))(source)),
    }
}

/// What `marketing` said, the phase it reported, and why the spec was upserted (when it was).
struct Synced {
    marketing: pb::CampaignStatus,
    phase: CampaignPhase,
    upserted: Option<String>,
}

async fn sync(
    campaign: &SeckillCampaign,
    namespace: &str,
    ctx: &CampaignContext,
) -> Result<Synced, Error> {
    let marketing_client = &ctx.extra.marketing;
    let id = campaign_id(namespace, &campaign.name_any());
    let generation = campaign.metadata.generation;
    let observed = campaign.status.as_ref().and_then(|s| s.observed_generation);
    let why = if generation.is_some() && observed == generation {
        match marketing_client.get_status(namespace, &id).await? {
            Some(marketing) => match drift(&campaign.spec, &marketing) {
                None => return with_phase(marketing, None, namespace, ctx),
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
    let marketing = marketing_client.upsert(namespace, request).await?;
    with_phase(marketing, Some(why), namespace, ctx)
}

/// `marketing`'s answer with the phase it reported, which must be one this operator knows.
fn with_phase(
    marketing: pb::CampaignStatus,
    upserted: Option<String>,
    namespace: &str,
    ctx: &CampaignContext,
) -> Result<Synced, Error> {
    let Some(phase) = marketing_phase(&marketing) else {
        return Err(MarketingError::Incompatible {
            url: ctx.extra.marketing.url_for(namespace),
            what: format!(
                "campaign {} in phase {}, which this operator does not know",
                marketing.campaign_id, marketing.phase
            ),
        }
        .into());
    };
    Ok(Synced {
        marketing,
        phase,
        upserted,
    })
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
    let controller = Controller::for_stream(campaigns, reader);
    reconciler::run(controller, config, ctx, shutdown).await;
}

#[cfg(test)]
mod tests;
