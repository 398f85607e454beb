//! Pulse's gRPC contracts: the `.proto` files under `proto/` and the tonic code built from them.

/// `booking.v1`: appointments and free slots for internal callers.
pub mod booking {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("booking.v1");
    }
}

/// `marketing.v1`: seckill campaign administration (`CampaignAdmin`, called by the operator) and
/// vouchers for internal callers (`Vouchers`, called by ordering).
pub mod marketing {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("marketing.v1");
    }
}
