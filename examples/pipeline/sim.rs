//! The simulated world: model and tool calls whose latency and failures are functions of the
//! seed and the call, so a rerun sees the same world.

use std::time::Duration;

use leasehold::durable::DurableError;

use super::stages::Stage;

/// Deterministic simulated calls.
#[derive(Clone, Debug)]
pub(crate) struct Sim {
    pub(crate) seed: u64,
    pub(crate) latency_ms: u64,
    pub(crate) failure_rate: f64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Sim {
    fn roll(&self, parts: &[u64]) -> f64 {
        let h = parts.iter().fold(mix(self.seed), |h, p| mix(h ^ p));
        (h >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One call attempt: waits its latency, then fails transiently with the failure rate.
    pub(crate) async fn call(
        &self,
        stage: Stage,
        lead: u32,
        what: u64,
        attempt: u32,
    ) -> Result<(), DurableError> {
        let key = [stage.index(), u64::from(lead), what, u64::from(attempt)];
        let latency =
            (self.roll(&[key[0], key[1], key[2], key[3], 1]) * self.latency_ms as f64) as u64;
        tokio::time::sleep(Duration::from_millis(latency)).await;
        if self.roll(&[key[0], key[1], key[2], key[3], 2]) < self.failure_rate {
            let why = if attempt.is_multiple_of(2) {
                "model call timed out"
            } else {
                "429 rate limited"
            };
            return Err(DurableError::transient(why));
        }
        Ok(())
    }

    /// Whether a lead's domain is bad: a permanent failure in company research.
    pub(crate) fn bad_domain(&self, lead: u32) -> bool {
        self.roll(&[99, u64::from(lead)]) < 0.07
    }

    /// Whether contact research finds nobody for a lead: the gap a person decides on.
    pub(crate) fn no_contact(&self, lead: u32) -> bool {
        self.roll(&[98, u64::from(lead)]) < 0.12
    }

    /// A lead's company name and domain.
    pub(crate) fn company(&self, lead: u32) -> (String, String) {
        const A: [&str; 8] = [
            "Oak", "Harbor", "Summit", "Maple", "Cedar", "Pine", "River", "Stone",
        ];
        const B: [&str; 6] = [
            "Property", "Realty", "Rentals", "Homes", "Estates", "Living",
        ];
        let a = A[(self.roll(&[7, u64::from(lead)]) * A.len() as f64) as usize % A.len()];
        let b = B[(self.roll(&[8, u64::from(lead)]) * B.len() as f64) as usize % B.len()];
        let name = format!("{a} {b} {lead}");
        let domain = format!("{}{}{lead}.example", a.to_lowercase(), b.to_lowercase());
        (name, domain)
    }
}
