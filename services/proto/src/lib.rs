//! Pulse's gRPC contracts: the `.proto` files under `proto/` and the tonic code built from them.

/// `booking.v1`: appointments and free slots for internal callers.
pub mod booking {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("booking.v1");
    }
}

/// `identity.v1`: users' contact data for internal callers (`Directory`, called by notifier).
pub mod identity {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("identity.v1");
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

/// Conversions between `google.protobuf.Timestamp` and `chrono`, the one pair every client and
/// server of these contracts uses.
pub mod time {
    use chrono::{DateTime, Utc};
    use prost_types::Timestamp;

    /// A timestamp that no `DateTime<Utc>` can hold.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[error("timestamp {seconds}s {nanos}ns is out of range")]
    pub struct OutOfRange {
        /// Seconds as sent.
        pub seconds: i64,
        /// Nanoseconds as sent.
        pub nanos: i32,
    }

    /// The protobuf form of `at`.
    pub fn to_timestamp(at: DateTime<Utc>) -> Timestamp {
        Timestamp {
            seconds: at.timestamp(),
            // Below 1e9 by construction, so it always fits.
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        }
    }

    /// The instant `ts` denotes. Non-canonical values (negative or oversized `nanos`) are
    /// normalised first, as the protobuf definition allows, so every reader agrees on them.
    pub fn from_timestamp(ts: &Timestamp) -> Result<DateTime<Utc>, OutOfRange> {
        let mut normal = *ts;
        normal.normalize();
        let nanos = u32::try_from(normal.nanos).map_err(|_| OutOfRange {
            seconds: ts.seconds,
            nanos: ts.nanos,
        })?;
        DateTime::from_timestamp(normal.seconds, nanos).ok_or(OutOfRange {
            seconds: ts.seconds,
            nanos: ts.nanos,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip_and_negative_nanos() {
            let at = DateTime::from_timestamp(1_700_000_000, 250_000_000).expect("valid");
            assert_eq!(from_timestamp(&to_timestamp(at)), Ok(at));
            // -0.25 s after second 1_700_000_001 is 1_700_000_000.75.
            let ts = Timestamp {
                seconds: 1_700_000_001,
                nanos: -250_000_000,
            };
            let expected = DateTime::from_timestamp(1_700_000_000, 750_000_000).expect("valid");
            assert_eq!(from_timestamp(&ts), Ok(expected));
            let ts = Timestamp {
                seconds: 1,
                nanos: 1_500_000_000,
            };
            assert_eq!(
                from_timestamp(&ts),
                Ok(DateTime::from_timestamp(2, 500_000_000).expect("valid"))
            );
            let huge = Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            };
            assert!(from_timestamp(&huge).is_err());
        }
    }
}
