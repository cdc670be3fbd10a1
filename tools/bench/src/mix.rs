//! The kinds of order the bench places, the weighted mix between them (`--mix`), and the
//! seeded random numbers that pick kinds, customers' carts and products reproducibly.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// What an order is meant to exercise, and so which outcome the audit expects of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Ordinary products within the customer's credit: the saga's happy path → CONFIRMED.
    Normal,
    /// One product priced above the credit limit: stock is reserved, payment declined, the
    /// reservation released → REJECTED.
    OverCredit,
    /// 1000 of a product with stock 1: the reservation fails → REJECTED.
    OverStock,
    /// An ordinary cart cancelled right after the 202 → CANCELLED (from PENDING or CONFIRMED).
    Cancel,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Normal, Kind::OverCredit, Kind::OverStock, Kind::Cancel];

    pub const fn name(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::OverCredit => "over_credit",
            Kind::OverStock => "over_stock",
            Kind::Cancel => "cancel",
        }
    }

    const fn index(self) -> usize {
        match self {
            Kind::Normal => 0,
            Kind::OverCredit => 1,
            Kind::OverStock => 2,
            Kind::Cancel => 3,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    #[error("expected KIND=WEIGHT, got {0:?}")]
    NotAPair(String),
    #[error("unknown order kind {0:?} (known: normal, over_credit, over_stock, cancel)")]
    UnknownKind(String),
    #[error("{kind}: the weight must be a whole number ≥ 0, got {weight:?}")]
    BadWeight { kind: String, weight: String },
    #[error("{0} is given twice")]
    Repeated(String),
    #[error("the weights add up to 0: nothing to place")]
    Empty,
}

/// Relative weights of the kinds, e.g. `normal=85,over_credit=5,over_stock=5,cancel=5`.
/// Kinds left out weigh 0; the weights need not add up to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

impl Mix {
    pub const DEFAULT: &'static str = "normal=85,over_credit=5,over_stock=5,cancel=5";

    pub fn weight(&self, kind: Kind) -> u32 {
        self.weights[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.weights.iter().map(|w| u64::from(*w)).sum()
    }

    /// The kind for a uniform draw `r` in `0..total()`.
    pub fn pick(&self, r: u64) -> Kind {
        let mut r = r % self.total();
        for kind in Kind::ALL {
            let w = u64::from(self.weight(kind));
            if r < w {
                return kind;
            }
            r -= w;
        }
        unreachable!("r < total, so some kind's range holds it")
    }
}

impl FromStr for Mix {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = [0u32; 4];
        let mut seen = [false; 4];
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = pair.split_once('=').ok_or_else(|| MixError::NotAPair(pair.to_owned()))?;
            let (name, weight) = (name.trim(), weight.trim());
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| MixError::UnknownKind(name.to_owned()))?;
            let w: u32 =
                weight.parse().map_err(|_| MixError::BadWeight { kind: name.to_owned(), weight: weight.to_owned() })?;
            if std::mem::replace(&mut seen[kind.index()], true) {
                return Err(MixError::Repeated(name.to_owned()));
            }
            weights[kind.index()] = w;
        }
        let mix = Mix { weights };
        if mix.total() == 0 {
            return Err(MixError::Empty);
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Kind::ALL.iter().map(|k| format!("{k}={}", self.weight(*k))).collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for Mix {
    /// `{"normal": 85, ...}`: the weights as given, every kind present.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(4))?;
        for kind in Kind::ALL {
            map.serialize_entry(kind.name(), &self.weight(kind))?;
        }
        map.end()
    }
}

/// SplitMix64: tiny, fast, and good enough to spread kinds and carts; what matters here is
/// that one `--seed` always plans the same orders, not cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is negligible for the small n used here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo).unwrap_or(0) + 1;
        lo + i64::try_from(self.below(span)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mix_parses_to_its_four_weights() {
        let mix: Mix = Mix::DEFAULT.parse().unwrap();
        assert_eq!(mix.weight(Kind::Normal), 85);
        assert_eq!(mix.weight(Kind::OverCredit), 5);
        assert_eq!(mix.weight(Kind::OverStock), 5);
        assert_eq!(mix.weight(Kind::Cancel), 5);
        assert_eq!(mix.total(), 100);
        assert_eq!(mix.to_string(), Mix::DEFAULT);
    }

    #[test]
    fn kinds_left_out_weigh_nothing_and_spaces_are_allowed() {
        let mix: Mix = " normal = 3 , cancel=1 ".parse().unwrap();
        assert_eq!(mix.weight(Kind::OverCredit), 0);
        assert_eq!(mix.weight(Kind::OverStock), 0);
        assert_eq!(mix.total(), 4);
    }

    #[test]
    fn malformed_mixes_are_refused_with_the_reason() {
        assert_eq!("normal".parse::<Mix>(), Err(MixError::NotAPair("normal".into())));
        assert_eq!("bulk=5".parse::<Mix>(), Err(MixError::UnknownKind("bulk".into())));
        assert!(matches!("normal=-1".parse::<Mix>(), Err(MixError::BadWeight { .. })));
        assert!(matches!("normal=2.5".parse::<Mix>(), Err(MixError::BadWeight { .. })));
        assert_eq!("normal=1,normal=2".parse::<Mix>(), Err(MixError::Repeated("normal".into())));
        assert_eq!("normal=0,cancel=0".parse::<Mix>(), Err(MixError::Empty));
        assert_eq!("".parse::<Mix>(), Err(MixError::Empty));
    }

    #[test]
    fn pick_covers_each_kind_in_proportion_to_its_weight() {
        let mix: Mix = "normal=2,over_credit=0,over_stock=1,cancel=1".parse().unwrap();
        let picks: Vec<Kind> = (0..4).map(|r| mix.pick(r)).collect();
        assert_eq!(picks, [Kind::Normal, Kind::Normal, Kind::OverStock, Kind::Cancel]);
        assert_eq!(mix.pick(4), Kind::Normal, "draws wrap around the total");
    }

    #[test]
    fn the_mix_serializes_as_an_object_of_weights() {
        let mix: Mix = "cancel=7".parse().unwrap();
        let json = serde_json::to_value(mix).unwrap();
        assert_eq!(json, serde_json::json!({"normal": 0, "over_credit": 0, "over_stock": 0, "cancel": 7}));
    }

    #[test]
    fn the_same_seed_draws_the_same_numbers() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, {
            let mut r = Rng::new(43);
            (0..5).map(|_| r.next_u64()).collect::<Vec<_>>()
        });
    }

    #[test]
    fn between_stays_within_its_bounds_and_reaches_both() {
        let mut r = Rng::new(7);
        let draws: Vec<i64> = (0..1000).map(|_| r.between(100, 103)).collect();
        assert!(draws.iter().all(|d| (100..=103).contains(d)));
        assert!(draws.contains(&100) && draws.contains(&103));
    }
}
