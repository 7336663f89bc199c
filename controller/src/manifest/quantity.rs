//! Kubernetes resource quantities: `250m`, `0.5`, `128Mi`, `1Gi`, `1G`, `1e3`.
//!
//! Kept to what resource requests need: CPU becomes millicores, memory and
//! counts become whole units. Rounding is up (Kubernetes rounds a request of
//! `0.1m` CPU up to `1m`), so a request is never smaller than written.

use std::fmt;

/// Why a quantity string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {text:?}: {reason}")]
pub struct QuantityError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A parsed quantity, as an exact value times 10^-3 (milli-units), which
/// covers every suffix Kubernetes allows down to `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    millis: u128,
}

impl Quantity {
    /// Parses a Kubernetes quantity.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let err = |reason| QuantityError { text: text.to_owned(), reason };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err("empty"));
        }
        if trimmed.starts_with('-') {
            return Err(err("negative quantities are not allowed"));
        }
        let trimmed = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let number_end = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
        let (number, suffix) = trimmed.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("expected a number such as 250m, 0.5, 128Mi or 1Gi"));
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        // Value = mantissa / 10^frac_digits, scaled by the suffix.
        let digits = format!("{int_part}{frac_part}");
        if digits.len() > 30 {
            return Err(err("too many digits"));
        }
        let mantissa: u128 = digits.parse().map_err(|_| err("expected a number"))?;
        let frac_digits = frac_part.len() as u32;
        // (multiplier, decimal exponent) of the suffix, relative to milli-units.
        let (multiplier, exp10): (u128, i32) = match suffix {
            "" => (1, 3),
            "m" => (1, 0),
            "k" => (1, 6),
            "M" => (1, 9),
            "G" => (1, 12),
            "T" => (1, 15),
            "P" => (1, 18),
            "E" => (1, 21),
            "Ki" => (1 << 10, 3),
            "Mi" => (1 << 20, 3),
            "Gi" => (1 << 30, 3),
            "Ti" => (1 << 40, 3),
            "Pi" => (1 << 50, 3),
            "Ei" => (1 << 60, 3),
            s if s.starts_with(['e', 'E']) => {
                let exp: i32 = s[1..].parse().map_err(|_| err("bad exponent"))?;
                if !(-3..=18).contains(&exp) {
                    return Err(err("exponent out of range"));
                }
                (1, exp + 3)
            }
            _ => return Err(err("unknown suffix (use m, k, M, G, T, Ki, Mi, Gi, Ti or an exponent)")),
        };
        let scale = exp10 - frac_digits as i32;
        let overflow = || err("too large");
        let value = mantissa.checked_mul(multiplier).ok_or_else(overflow)?;
        let millis = if scale >= 0 {
            value.checked_mul(10u128.checked_pow(scale as u32).ok_or_else(overflow)?).ok_or_else(overflow)?
        } else {
            let div = 10u128.checked_pow((-scale) as u32).ok_or_else(overflow)?;
            value.div_ceil(div)
        };
        Ok(Quantity { millis })
    }

    /// As CPU millicores, rounded up.
    pub fn as_millis(self) -> u128 {
        self.millis
    }

    /// As whole units (bytes, counts), rounded up.
    pub fn as_units(self) -> u128 {
        self.millis.div_ceil(1000)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis.is_multiple_of(1000) {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_millicores() {
        for (text, millis) in
            [("250m", 250), ("1", 1000), ("0.5", 500), ("1.5", 1500), ("2", 2000), ("0.1m", 1), ("100e-3", 100)]
        {
            assert_eq!(Quantity::parse(text).unwrap().as_millis(), millis, "{text}");
        }
    }

    #[test]
    fn memory_quantities_become_bytes() {
        for (text, bytes) in [
            ("128Mi", 128 << 20),
            ("1Gi", 1 << 30),
            ("1G", 1_000_000_000),
            ("500M", 500_000_000),
            ("64Ki", 65_536),
            ("1k", 1000),
            ("1024", 1024),
            ("1e3", 1000),
            ("1.5Gi", 3 << 29),
            ("0.5Ki", 512),
        ] {
            assert_eq!(Quantity::parse(text).unwrap().as_units(), bytes, "{text}");
        }
    }

    #[test]
    fn bad_quantities_say_why() {
        for (text, reason) in [
            ("", "empty"),
            ("-1", "negative quantities are not allowed"),
            ("12Q", "unknown suffix (use m, k, M, G, T, Ki, Mi, Gi, Ti or an exponent)"),
            ("Mi", "expected a number such as 250m, 0.5, 128Mi or 1Gi"),
            ("1.2.3", "expected a number such as 250m, 0.5, 128Mi or 1Gi"),
            ("1e99", "exponent out of range"),
        ] {
            assert_eq!(Quantity::parse(text).unwrap_err().reason, reason, "{text}");
        }
        assert!(Quantity::parse("999999999999999999999999999Ei").is_err());
    }
}
