//! `pulse-operator`: the Kubernetes operator of Pulse.
//!
//! A platform engineer onboards a country by applying one [`CountryTenant`]; the tenant
//! reconciler ([`controller`]) turns it into namespace `pulse-<code>` with the country's
//! ConfigMap, and per enabled component a Deployment, Service, HorizontalPodAutoscaler and
//! PodDisruptionBudget, plus one Ingress. The objects themselves come from the pure builders in
//! [`resources`], which `pulse-operator render` also prints for review.
//!
//! A [`SeckillCampaign`] in a country namespace is run by the campaign reconciler
//! ([`campaign_controller`]): it upserts the campaign into that country's `marketing` through
//! `marketing.v1.CampaignAdmin` ([`marketing`]), mirrors the phase `marketing` reports, sold and
//! remaining into the status, looks again following the timing rules of [`campaign`], and closes
//! it on deletion.
//!
//! Both reconcilers are built on [`reconciler`]: finalizer, metrics, backoff, status patch,
//! `Degraded` on errors and Events are written once there, with the one [`error::Error`] type.

pub mod applied;
pub mod campaign;
pub mod campaign_controller;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod marketing;
pub mod metrics;
pub mod reconciler;
pub mod render;
pub mod resources;
pub mod run;
pub mod yaml;

#[cfg(test)]
mod fixtures;

pub use crd::{CountryTenant, SeckillCampaign};
