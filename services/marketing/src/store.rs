//! PostgreSQL adapter of marketing: campaigns and vouchers. Every statement binds its values.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use pulse_kit::outbox::{Outbox, OutboxError};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{self, CampaignSpec, Rejection, VoucherFacts, VoucherStatus};
use crate::seckill::{Sale, SaleState};

/// Event type: a voucher entered a wallet.
pub const VOUCHER_ISSUED: &str = "VoucherIssued";

/// A database or outbox failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Outbox failure.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// A campaign's definition.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CampaignRow {
    /// Id.
    pub id: String,
    /// Voucher title.
    pub voucher_title: String,
    /// Voucher value, minor units.
    pub voucher_value_minor: i64,
    /// Currency.
    pub currency: String,
    /// Price, minor units.
    pub price_minor: i64,
    /// Total stock.
    pub stock: i32,
    /// Per-user limit.
    pub per_user_limit: i32,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// When it was closed.
    pub closed_at: Option<DateTime<Utc>>,
}

impl CampaignRow {
    /// Total stock as unsigned.
    pub fn stock_u32(&self) -> u32 {
        u32::try_from(self.stock).unwrap_or(0)
    }

    /// Per-user limit as unsigned.
    pub fn limit_u32(&self) -> u32 {
        u32::try_from(self.per_user_limit).unwrap_or(1)
    }
}

/// A voucher in a wallet.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VoucherRow {
    /// Id.
    pub id: Uuid,
    /// Owner (JWT subject).
    pub owner_subject: String,
    /// The campaign it came from.
    pub campaign_id: String,
    /// The seckill order that bought it.
    pub source_order_id: Uuid,
    /// Title.
    pub title: String,
    /// Value, minor units.
    pub value_minor: i64,
    /// Currency.
    pub currency: String,
    /// `AVAILABLE`, `HELD`, `USED` or `REVOKED`.
    pub status: String,
    /// Order holding or using it.
    pub order_id: Option<Uuid>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it was used.
    pub used_at: Option<DateTime<Utc>>,
}

impl VoucherRow {
    fn facts(&self) -> VoucherFacts<'_> {
        VoucherFacts {
            owner: &self.owner_subject,
            status: VoucherStatus::parse(&self.status).unwrap_or(VoucherStatus::Revoked),
            order: self.order_id,
            value_minor: self.value_minor,
            currency: &self.currency,
        }
    }
}

/// Payload of [`VOUCHER_ISSUED`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VoucherIssued {
    /// The voucher.
    pub voucher_id: Uuid,
    /// Its owner.
    pub user_id: String,
    /// The campaign.
    pub campaign_id: String,
    /// The seckill order that bought it.
    pub order_id: Uuid,
    /// Title.
    pub title: String,
    /// Value, minor units.
    pub value_minor: i64,
    /// Currency.
    pub currency: String,
}

/// A row of `seckill_sales` as a rebuild reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct SaleRow {
    order_id: Uuid,
    buyer_subject: String,
    status: String,
}

impl From<SaleRow> for Sale {
    fn from(row: SaleRow) -> Self {
        Self {
            order_id: row.order_id,
            buyer: row.buyer_subject,
            state: match row.status.as_str() {
                "UNPAID" => SaleState::Unpaid,
                "CANCELLED" => SaleState::Cancelled,
                _ => SaleState::Paid,
            },
        }
    }
}

const CAMPAIGN_COLUMNS: &str = "id, voucher_title, voucher_value_minor, currency, price_minor, stock, per_user_limit, starts_at, ends_at, closed_at";
const VOUCHER_COLUMNS: &str = "id, owner_subject, campaign_id, source_order_id, title, value_minor, currency, status, order_id, issued_at, used_at";

/// Marketing's tables.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    outbox: Outbox,
}

impl Store {
    /// The store over marketing's pool and outbox.
    pub fn new(pool: PgPool, outbox: Outbox) -> Self {
        Self { pool, outbox }
    }

    /// Creates or updates a campaign; a closed one stays closed.
    pub async fn upsert_campaign(&self, spec: &CampaignSpec) -> Result<CampaignRow, StoreError> {
        let row = sqlx::query_as::<_, CampaignRow>(&format!(
            "INSERT INTO campaigns (id, voucher_title, voucher_value_minor, currency, price_minor, stock,
                                    per_user_limit, starts_at, ends_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET
                voucher_title = EXCLUDED.voucher_title, voucher_value_minor = EXCLUDED.voucher_value_minor,
                currency = EXCLUDED.currency, price_minor = EXCLUDED.price_minor, stock = EXCLUDED.stock,
                per_user_limit = EXCLUDED.per_user_limit, starts_at = EXCLUDED.starts_at,
                ends_at = EXCLUDED.ends_at, updated_at = now()
             RETURNING {CAMPAIGN_COLUMNS}"
        ))
        .bind(&spec.id)
        .bind(&spec.voucher_title)
        .bind(spec.voucher_value_minor)
        .bind(&spec.currency)
        .bind(spec.price_minor)
        .bind(i32::try_from(spec.stock).unwrap_or(i32::MAX))
        .bind(i32::try_from(spec.per_user_limit).unwrap_or(1))
        .bind(spec.starts_at)
        .bind(spec.ends_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(row)
    }

    /// One campaign.
    pub async fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, StoreError> {
        Ok(sqlx::query_as::<_, CampaignRow>(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Campaigns ending after `since`, soonest start first (at most `limit`).
    pub async fn campaigns_ending_after(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CampaignRow>, StoreError> {
        Ok(sqlx::query_as::<_, CampaignRow>(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE ends_at > $1 ORDER BY starts_at, id LIMIT $2"
        ))
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Closes a campaign (keeps the first closing time); `None` if it does not exist.
    pub async fn close_campaign(&self, id: &str) -> Result<Option<CampaignRow>, StoreError> {
        Ok(sqlx::query_as::<_, CampaignRow>(&format!(
            "UPDATE campaigns SET closed_at = coalesce(closed_at, now()), updated_at = now()
             WHERE id = $1 RETURNING {CAMPAIGN_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A transaction on marketing's pool.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Locks a campaign exclusively for the rest of `tx` and returns it (`None` if it does not
    /// exist): what a rebuild of its Redis counters holds.
    ///
    /// Whatever changes a campaign's seckill counters in Redis together with its durable sales
    /// (the handlers of ordering's events, a late release) holds the campaign in share mode
    /// ([`Store::share_campaign`]) meanwhile; a rebuild waits for them and they wait for it, so it
    /// reads durable sales that no one is changing and writes Redis before anyone touches it
    /// again. `FOR NO KEY UPDATE` leaves inserts that reference the campaign (vouchers, sales)
    /// free.
    pub async fn lock_campaign(
        &self,
        tx: &mut PgConnection,
        id: &str,
    ) -> Result<Option<CampaignRow>, StoreError> {
        Ok(sqlx::query_as::<_, CampaignRow>(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1 FOR NO KEY UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?)
    }

    /// Holds a campaign in share mode for the rest of `tx` (see [`Store::lock_campaign`]):
    /// changes of single sales run side by side, never beside a rebuild. `false` if the
    /// campaign does not exist.
    pub async fn share_campaign(
        &self,
        tx: &mut PgConnection,
        id: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM campaigns WHERE id = $1 FOR SHARE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        Ok(found.is_some())
    }

    /// The durable sales of a campaign: the live ones (unpaid and paid), and with
    /// `with_cancelled` the cancelled ones as well.
    pub async fn sales_of(
        &self,
        conn: &mut PgConnection,
        campaign: &str,
        with_cancelled: bool,
    ) -> Result<Vec<Sale>, StoreError> {
        let rows = sqlx::query_as::<_, SaleRow>(
            "SELECT order_id, buyer_subject, status FROM seckill_sales
             WHERE campaign_id = $1 AND ($2 OR status <> 'CANCELLED') ORDER BY order_id",
        )
        .bind(campaign)
        .bind(with_cancelled)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows.into_iter().map(Sale::from).collect())
    }

    /// Live sales (not cancelled) per campaign, for the campaigns ending after `since`.
    pub async fn live_sales(
        &self,
        since: DateTime<Utc>,
    ) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT s.campaign_id, count(*) FROM seckill_sales s
             JOIN campaigns c ON c.id = s.campaign_id
             WHERE c.ends_at > $1 AND s.status <> 'CANCELLED'
             GROUP BY s.campaign_id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Records a seckill order ordering created (`UNPAID`); `true` if it was not recorded yet.
    pub async fn record_sale(
        &self,
        tx: &mut PgConnection,
        order: Uuid,
        campaign: &str,
        buyer: &str,
    ) -> Result<bool, StoreError> {
        Ok(!self
            .record_sales(tx, &[(order, campaign, buyer)])
            .await?
            .is_empty())
    }

    /// [`Store::record_sale`] of many sales (order, campaign, buyer) in one statement; returns
    /// the orders not recorded yet.
    pub async fn record_sales(
        &self,
        tx: &mut PgConnection,
        sales: &[(Uuid, &str, &str)],
    ) -> Result<HashSet<Uuid>, StoreError> {
        if sales.is_empty() {
            return Ok(HashSet::new());
        }
        let recorded: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO seckill_sales (order_id, campaign_id, buyer_subject, status)
             SELECT order_id, campaign_id, buyer_subject, 'UNPAID'
             FROM unnest($1::uuid[], $2::text[], $3::text[]) AS s (order_id, campaign_id, buyer_subject)
             ON CONFLICT (order_id) DO NOTHING
             RETURNING order_id",
        )
        .bind(sales.iter().map(|(order, _, _)| *order).collect::<Vec<_>>())
        .bind(sales.iter().map(|(_, campaign, _)| *campaign).collect::<Vec<_>>())
        .bind(sales.iter().map(|(_, _, buyer)| *buyer).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        Ok(recorded.into_iter().collect())
    }

    /// Marks a sale paid (recording it if its `OrderCreated` came before this table existed).
    pub async fn sale_paid(
        &self,
        tx: &mut PgConnection,
        order: Uuid,
        campaign: &str,
        buyer: &str,
    ) -> Result<(), StoreError> {
        write_sale(
            tx,
            "INSERT INTO seckill_sales (order_id, campaign_id, buyer_subject, status, paid_at)
             VALUES ($1, $2, $3, 'PAID', now())
             ON CONFLICT (order_id) DO UPDATE SET status = 'PAID', paid_at = now(), updated_at = now()
             WHERE seckill_sales.status = 'UNPAID'",
            order,
            campaign,
            buyer,
        )
        .await?;
        Ok(())
    }

    /// Marks an unpaid sale cancelled (recording it if unknown); `true` if this call did, so
    /// its unit is to be given back in Redis.
    pub async fn sale_cancelled(
        &self,
        tx: &mut PgConnection,
        order: Uuid,
        campaign: &str,
        buyer: &str,
    ) -> Result<bool, StoreError> {
        write_sale(
            tx,
            "INSERT INTO seckill_sales (order_id, campaign_id, buyer_subject, status, cancelled_at)
             VALUES ($1, $2, $3, 'CANCELLED', now())
             ON CONFLICT (order_id) DO UPDATE SET status = 'CANCELLED', cancelled_at = now(),
                 updated_at = now()
             WHERE seckill_sales.status = 'UNPAID'",
            order,
            campaign,
            buyer,
        )
        .await
    }

    /// Notes that Redis gave a cancelled sale's unit back.
    pub async fn sale_released(
        &self,
        tx: &mut PgConnection,
        order: Uuid,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE seckill_sales SET released_at = now(), updated_at = now()
             WHERE order_id = $1 AND status = 'CANCELLED'",
        )
        .bind(order)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Cancelled sales whose unit Redis has not given back yet (Redis failed at the time):
    /// (order, campaign), oldest first.
    pub async fn unreleased_sales(&self, limit: i64) -> Result<Vec<(Uuid, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT order_id, campaign_id FROM seckill_sales
             WHERE status = 'CANCELLED' AND released_at IS NULL
             ORDER BY cancelled_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A user's vouchers, newest first.
    pub async fn wallet(&self, owner: &str, limit: i64) -> Result<Vec<VoucherRow>, StoreError> {
        Ok(sqlx::query_as::<_, VoucherRow>(&format!(
            "SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE owner_subject = $1
             ORDER BY issued_at DESC, id LIMIT $2"
        ))
        .bind(owner)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One voucher.
    pub async fn voucher(&self, id: Uuid) -> Result<Option<VoucherRow>, StoreError> {
        Ok(sqlx::query_as::<_, VoucherRow>(&format!(
            "SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// What a voucher would take off an order (read-only).
    pub async fn validate(
        &self,
        voucher: Uuid,
        user: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Result<(i64, String), Rejection>, StoreError> {
        let Some(row) = self.voucher(voucher).await? else {
            return Ok(Err(Rejection::NotFound));
        };
        Ok(
            domain::discount(&row.facts(), user, None, amount_minor, currency)
                .map(|discount| (discount, row.title.clone())),
        )
    }

    /// Holds a voucher for `order` (idempotent for the same order); returns the discount.
    pub async fn hold(
        &self,
        voucher: Uuid,
        user: &str,
        order: Uuid,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Result<i64, Rejection>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, VoucherRow>(&format!(
            "SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE id = $1 FOR UPDATE"
        ))
        .bind(voucher)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Err(Rejection::NotFound));
        };
        let discount =
            match domain::discount(&row.facts(), user, Some(order), amount_minor, currency) {
                Ok(discount) => discount,
                Err(rejection) => return Ok(Err(rejection)),
            };
        if row.status == VoucherStatus::Available.as_str() {
            sqlx::query(
                "UPDATE vouchers SET status = 'HELD', order_id = $2, held_at = now(), updated_at = now()
                 WHERE id = $1",
            )
            .bind(voucher)
            .bind(order)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(discount))
    }

    /// Gives a voucher back if `order` holds or used it; `true` if this call did.
    pub async fn release(&self, voucher: Uuid, order: Uuid) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        release_in(&mut conn, voucher, order).await
    }

    /// Gives back holds older than `older_than` that no `OrderCreated` confirmed.
    pub async fn expire_holds(&self, older_than: std::time::Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE vouchers SET status = 'AVAILABLE', order_id = NULL, held_at = NULL, updated_at = now()
             WHERE status = 'HELD' AND held_at < now() - make_interval(secs => $1)",
        )
        .bind(older_than.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Issues the voucher a paid seckill order bought (idempotent on the order), with its
    /// `VoucherIssued` event; `None` if it was issued already or the campaign is unknown.
    pub async fn issue_voucher(
        &self,
        tx: &mut PgConnection,
        order: Uuid,
        user: &str,
        campaign: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        let id = pulse_kit::new_id();
        let issued = sqlx::query_as::<_, VoucherRow>(&format!(
            "INSERT INTO vouchers (id, owner_subject, campaign_id, source_order_id, title, value_minor, currency, status)
             SELECT $1, $2, c.id, $3, c.voucher_title, c.voucher_value_minor, c.currency, 'AVAILABLE'
             FROM campaigns c WHERE c.id = $4
             ON CONFLICT (source_order_id) DO NOTHING
             RETURNING {VOUCHER_COLUMNS}"
        ))
        .bind(id)
        .bind(user)
        .bind(order)
        .bind(campaign)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(voucher) = issued else {
            return Ok(None);
        };
        self.outbox
            .append(
                tx,
                &voucher.id.to_string(),
                VOUCHER_ISSUED,
                &VoucherIssued {
                    voucher_id: voucher.id,
                    user_id: voucher.owner_subject.clone(),
                    campaign_id: voucher.campaign_id.clone(),
                    order_id: order,
                    title: voucher.title.clone(),
                    value_minor: voucher.value_minor,
                    currency: voucher.currency.clone(),
                },
            )
            .await?;
        Ok(Some(voucher.id))
    }

    /// Marks a voucher used by `order` once the order exists; `false` if another order holds it.
    pub async fn confirm(
        &self,
        tx: &mut PgConnection,
        voucher: Uuid,
        order: Uuid,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE vouchers SET status = 'USED', order_id = $2, used_at = coalesce(used_at, now()),
                    held_at = NULL, updated_at = now()
             WHERE id = $1 AND ((status IN ('HELD', 'USED') AND order_id = $2) OR status = 'AVAILABLE')",
        )
        .bind(voucher)
        .bind(order)
        .execute(&mut *tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes the voucher a refunded seckill order bought, unless it is in use; `true` if done.
    pub async fn revoke_bought_by(
        &self,
        tx: &mut PgConnection,
        order: Uuid,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE vouchers SET status = 'REVOKED', updated_at = now()
             WHERE source_order_id = $1 AND status = 'AVAILABLE'",
        )
        .bind(order)
        .execute(&mut *tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Runs `statement`, a write of one sale taking `$1` order, `$2` campaign and `$3` buyer, on
/// `tx`; `true` if it changed the sale's row.
async fn write_sale(
    tx: &mut PgConnection,
    statement: &'static str,
    order: Uuid,
    campaign: &str,
    buyer: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(statement)
        .bind(order)
        .bind(campaign)
        .bind(buyer)
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a voucher back if `order` holds or used it, on `conn` (inside the caller's transaction
/// when there is one).
pub async fn release_in(
    conn: &mut PgConnection,
    voucher: Uuid,
    order: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE vouchers SET status = 'AVAILABLE', order_id = NULL, held_at = NULL, used_at = NULL,
                updated_at = now()
         WHERE id = $1 AND order_id = $2 AND status IN ('HELD', 'USED')",
    )
    .bind(voucher)
    .bind(order)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
