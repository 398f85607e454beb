//! `SeckillCampaign`: a flash sale of vouchers in one country, namespaced in `pulse-<code>`.

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// A flash sale ("seckill") of vouchers. The operator upserts it into the country's
/// `marketing` component through `marketing.v1.CampaignAdmin` (as campaign
/// `<namespace>/<name>`, priced in the currency of the namespace's `CountryTenant`), mirrors its
/// sales here, and closes it when the object is deleted.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pulse.dev",
    version = "v1alpha1",
    kind = "SeckillCampaign",
    plural = "seckillcampaigns",
    singular = "seckillcampaign",
    shortname = "sk",
    category = "pulse",
    namespaced,
    status = "SeckillCampaignStatus",
    derive = "PartialEq",
    doc = "A flash sale of vouchers in one country; lives in the country's namespace pulse-<code>.",
    validation = kube::core::Rule::new("!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Scheduled' || self.spec.stock == oldSelf.spec.stock")
        .message("spec.stock is immutable once the campaign is active: to sell more, create another campaign when this one ends")
        .field_path(".spec.stock"),
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Stock","type":"integer","jsonPath":".spec.stock"}"#,
    printcolumn = r#"{"name":"Sold","type":"integer","jsonPath":".status.sold"}"#,
    printcolumn = r#"{"name":"Remaining","type":"integer","jsonPath":".status.remaining"}"#,
    printcolumn = r#"{"name":"Starts","type":"string","format":"date-time","jsonPath":".spec.startsAt"}"#,
    printcolumn = r#"{"name":"Ends","type":"string","format":"date-time","jsonPath":".spec.endsAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.endsAt > self.startsAt").message("endsAt must be after startsAt"))]
pub struct SeckillCampaignSpec {
    /// The voucher a buyer gets.
    pub voucher: VoucherSpec,
    /// Price of one voucher, in minor units of the country's currency (`990` is 9.90 EUR).
    #[schemars(range(min = 0))]
    pub price: i64,
    /// Vouchers on sale. Immutable once the campaign is active.
    #[schemars(range(min = 0))]
    pub stock: i64,
    /// Vouchers one user may buy.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub per_user_limit: i32,
    /// Opening of the sale (RFC 3339).
    pub starts_at: DateTime<Utc>,
    /// End of the sale (RFC 3339), after `startsAt`.
    pub ends_at: DateTime<Utc>,
}

fn one() -> i32 {
    1
}

/// What the voucher is worth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoucherSpec {
    /// Title shown to buyers.
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// Face value, in minor units of the country's currency.
    #[schemars(range(min = 1))]
    pub value: i64,
}

/// Where a campaign is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CampaignPhase {
    /// Before `startsAt`.
    Scheduled,
    /// Between `startsAt` and `endsAt`, with stock left.
    Active,
    /// Between `startsAt` and `endsAt`, nothing left.
    SoldOut,
    /// After `endsAt`.
    Ended,
}

impl CampaignPhase {
    /// The spelling in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "Scheduled",
            Self::Active => "Active",
            Self::SoldOut => "SoldOut",
            Self::Ended => "Ended",
        }
    }
}

/// What the operator observed of a campaign.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeckillCampaignStatus {
    /// The `metadata.generation` last sent to marketing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (synced with marketing) and `Degraded` (the last sync or close failed; the
    /// message says why).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where the campaign is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CampaignPhase>,
    /// Vouchers sold so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub sold: Option<i64>,
    /// Vouchers left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub remaining: Option<i64>,
    /// When sold/remaining were last read from `marketing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<DateTime<Utc>>,
}
