//! CIDR blocks as NetworkPolicy `ipBlock`s and the settings write them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An address block: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    address: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The prefix length (`/8` → 8).
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv4 block.
    pub fn is_ipv4(self) -> bool {
        self.address.is_ipv4()
    }

    /// Whether every address of `other` is in this block.
    pub fn contains(self, other: Cidr) -> bool {
        other.prefix >= self.prefix && self.same_network(other.address, self.prefix)
    }

    /// Whether the first `prefix` bits of `address` are this block's.
    fn same_network(self, address: IpAddr, prefix: u8) -> bool {
        match (self.address, address) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                masked(u128::from(a.to_bits()), prefix, 32)
                    == masked(u128::from(b.to_bits()), prefix, 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                masked(a.to_bits(), prefix, 128) == masked(b.to_bits(), prefix, 128)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit number.
fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits >> (width - prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `10.0.0.0/8` or `fd00::/8`; a bare address is a single host.
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not a CIDR block (write e.g. 10.0.0.0/8)"))?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            width
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{text:?} has a prefix length that is not 0 to {width}"))?
        };
        Ok(Cidr { address, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_contain_narrower_blocks_of_their_network() {
        assert!(cidr("0.0.0.0/0").contains(cidr("169.254.169.254/32")));
        assert!(cidr("169.254.0.0/16").contains(cidr("169.254.169.254")));
        assert!(!cidr("10.0.0.0/8").contains(cidr("169.254.169.254/32")));
        assert!(!cidr("169.254.169.254/32").contains(cidr("169.254.0.0/16")));
        assert!(cidr("::/0").contains(cidr("fd00:ec2::254/128")));
        assert!(cidr("fd00::/8").contains(cidr("fd00:ec2::254/128")));
        assert!(
            !cidr("::/0").contains(cidr("10.0.0.0/8")),
            "families differ"
        );
        assert!(
            cidr("10.1.2.3/8").contains(cidr("10.200.0.0/16")),
            "host bits ignored"
        );
    }

    #[test]
    fn malformed_blocks_are_refused_with_the_text() {
        assert!(cidr("10.0.0.0/8").is_ipv4() && cidr("10.0.0.0/8").prefix() == 8);
        assert_eq!(cidr("fd00::1").prefix(), 128);
        assert!(
            "10.0.0.0/33"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!(
            "everywhere"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("is not a CIDR")
        );
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
    }
}
