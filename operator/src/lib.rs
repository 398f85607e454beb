//! `pulse-operator`: the Kubernetes operator of Pulse.
//!
//! A platform engineer onboards a country by applying one [`CountryTenant`]; the tenant
//! reconciler ([`controller`]) turns it into namespace `pulse-<code>` with the country's
//! ConfigMap, and per enabled component a Deployment, Service, HorizontalPodAutoscaler and
//! PodDisruptionBudget, plus one Ingress. The objects themselves come from the pure builders in
//! [`resources`], which `pulse-operator render` also prints for review.
//!
//! [`SeckillCampaign`] has its CRD, status and timing rules ([`campaign`]); its reconciler,
//! which talks to `marketing.v1.CampaignAdmin`, comes with that API.

pub mod campaign;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod resources;
pub mod run;
pub mod yaml;

#[cfg(test)]
mod fixtures;

pub use crd::{CountryTenant, SeckillCampaign};
