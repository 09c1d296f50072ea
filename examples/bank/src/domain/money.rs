//! Money: an integer number of minor units (cents), never a float.

use serde::{Deserialize, Serialize};

/// The largest amount one command may move: 1_000_000_000_000 minor units.
pub const MAX_AMOUNT: u64 = 1_000_000_000_000;

/// The largest balance an account may hold. Read models keep balances in signed 64-bit
/// columns, so this is `i64::MAX`.
pub const MAX_BALANCE: u64 = i64::MAX as u64;

/// A validated amount of money in minor units: `1..=MAX_AMOUNT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Amount(u64);

/// An amount out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount must be between 1 and {MAX_AMOUNT} minor units, got {0}")]
pub struct InvalidAmount(pub u64);

impl Amount {
    /// An amount, if it is within `1..=MAX_AMOUNT`.
    pub fn new(minor_units: u64) -> Result<Self, InvalidAmount> {
        if (1..=MAX_AMOUNT).contains(&minor_units) {
            Ok(Amount(minor_units))
        } else {
            Err(InvalidAmount(minor_units))
        }
    }

    /// The number of minor units.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Amount {
    type Error = InvalidAmount;
    fn try_from(value: u64) -> Result<Self, InvalidAmount> {
        Amount::new(value)
    }
}

impl From<Amount> for u64 {
    fn from(a: Amount) -> u64 {
        a.0
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", format_minor(self.0 as i128))
    }
}

/// Formats minor units as `1,234.56`.
pub fn format_minor(minor: i128) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let units = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02}", abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(Amount::new(0).is_err());
        assert_eq!(Amount::new(1).unwrap().get(), 1);
        assert!(Amount::new(MAX_AMOUNT).is_ok());
        assert_eq!(
            Amount::new(MAX_AMOUNT + 1),
            Err(InvalidAmount(MAX_AMOUNT + 1))
        );
        assert!(serde_json::from_str::<Amount>("0").is_err());
        assert_eq!(serde_json::from_str::<Amount>("250").unwrap().get(), 250);
    }

    #[test]
    fn formatting() {
        assert_eq!(format_minor(0), "0.00");
        assert_eq!(format_minor(5), "0.05");
        assert_eq!(format_minor(123_456_789), "1,234,567.89");
        assert_eq!(format_minor(-100_000), "-1,000.00");
    }
}
