//! A CIDR prefix table: all rule indices whose block contains an address, found by one walk down
//! a binary trie (at most 32 steps for IPv4, 128 for IPv6) whatever the number of rules.
//!
//! IPv4 and IPv6 have separate tries. Addresses are canonicalised first with [`canonical_ip`], so
//! an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) is looked up in the IPv4 trie, exactly as
//! [`Cidr::contains`] decides it.

use std::net::IpAddr;

use ipnet::IpNet;

use super::cidr::{Cidr, canonical_ip};

/// Sentinel for "no child": the root (index 0) is never anyone's child.
const NONE: u32 = 0;

/// One frozen node: children by next bit, and a slice of [`BitTrie::rules`].
#[derive(Debug, Clone, Copy, Default)]
struct Node {
    child: [u32; 2],
    rules_start: u32,
    rules_len: u32,
}

/// A binary trie over left-aligned 128-bit keys (IPv4 addresses sit in the top 32 bits).
#[derive(Debug, Clone)]
struct BitTrie {
    nodes: Vec<Node>,
    rules: Vec<u32>,
}

/// Building form of [`BitTrie`]: per-node rule lists, flattened on freeze.
#[derive(Debug)]
struct BitTrieBuilder {
    children: Vec<[u32; 2]>,
    rules: Vec<Vec<u32>>,
}

impl BitTrieBuilder {
    fn new() -> Self {
        BitTrieBuilder { children: vec![[NONE; 2]], rules: vec![Vec::new()] }
    }

    fn insert(&mut self, key: u128, len: u8, rule: u32) {
        let mut at = 0usize;
        for i in 0..len {
            let bit = ((key >> (127 - i)) & 1) as usize;
            let next = self.children[at][bit];
            at = if next == NONE {
                let id = self.children.len();
                self.children.push([NONE; 2]);
                self.rules.push(Vec::new());
                self.children[at][bit] = id as u32;
                id
            } else {
                next as usize
            };
        }
        self.rules[at].push(rule);
    }

    fn freeze(self) -> BitTrie {
        let mut nodes = Vec::with_capacity(self.children.len());
        let mut flat = Vec::new();
        for (child, mut rules) in self.children.into_iter().zip(self.rules) {
            rules.sort_unstable();
            rules.dedup();
            let rules_start = flat.len() as u32;
            let rules_len = rules.len() as u32;
            flat.extend(rules);
            nodes.push(Node { child, rules_start, rules_len });
        }
        BitTrie { nodes, rules: flat }
    }
}

impl BitTrie {
    /// Visit the rule list of every stored prefix of `key` (shortest first), up to `width` bits.
    fn walk(&self, key: u128, width: u8, mut visit: impl FnMut(&[u32])) {
        let mut at = 0usize;
        let mut depth = 0u8;
        loop {
            let node = self.nodes[at];
            if node.rules_len > 0 {
                let start = node.rules_start as usize;
                visit(&self.rules[start..start + node.rules_len as usize]);
            }
            if depth == width {
                return;
            }
            let bit = ((key >> (127 - depth)) & 1) as usize;
            match node.child[bit] {
                NONE => return,
                next => at = next as usize,
            }
            depth += 1;
        }
    }
}

/// CIDR blocks compiled for lookup by address.
#[derive(Debug, Clone)]
pub struct PrefixTable {
    v4: BitTrie,
    v6: BitTrie,
    len: usize,
}

impl Default for PrefixTable {
    fn default() -> Self {
        Self::from_cidrs(std::iter::empty())
    }
}

/// The left-aligned key and address width of `ip`.
fn key_of(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => ((u32::from(v4) as u128) << 96, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

impl PrefixTable {
    /// Build from `(block, rule index)` pairs, in any order.
    pub fn from_cidrs<'a>(cidrs: impl IntoIterator<Item = (&'a Cidr, u32)>) -> Self {
        let mut v4 = BitTrieBuilder::new();
        let mut v6 = BitTrieBuilder::new();
        let mut len = 0;
        for (cidr, rule) in cidrs {
            len += 1;
            match cidr.net() {
                IpNet::V4(net) => {
                    let (key, _) = key_of(IpAddr::V4(net.network()));
                    v4.insert(key, net.prefix_len(), rule);
                }
                IpNet::V6(net) => {
                    let (key, _) = key_of(IpAddr::V6(net.network()));
                    v6.insert(key, net.prefix_len(), rule);
                }
            }
        }
        PrefixTable { v4: v4.freeze(), v6: v6.freeze(), len }
    }

    /// How many `(block, rule)` pairs were inserted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no block was inserted.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append the indices of all rules with a block containing `ip` to `out` (unsorted; a rule
    /// may appear more than once when several of its blocks contain the address).
    pub fn extend_matches(&self, ip: IpAddr, out: &mut Vec<u32>) {
        let ip = canonical_ip(ip);
        let (key, width) = key_of(ip);
        let trie = if width == 32 { &self.v4 } else { &self.v6 };
        trie.walk(key, width, |rules| out.extend_from_slice(rules));
    }

    /// Sorted, de-duplicated indices of all rules with a block containing `ip`.
    pub fn matches(&self, ip: IpAddr) -> Vec<u32> {
        let mut out = Vec::new();
        self.extend_matches(ip, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn table(cidrs: &[&str]) -> (PrefixTable, Vec<Cidr>) {
        let parsed: Vec<Cidr> = cidrs.iter().map(|c| c.parse().expect("test cidr")).collect();
        (PrefixTable::from_cidrs(parsed.iter().zip(0u32..)), parsed)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn nested_blocks_and_families() {
        let (t, _) = table(&["10.0.0.0/8", "10.1.0.0/16", "0.0.0.0/0", "fc00::/7", "::/0", "10.1.2.3"]);
        assert_eq!(t.len(), 6);
        assert_eq!(t.matches(ip("10.1.2.3")), vec![0, 1, 2, 5]);
        assert_eq!(t.matches(ip("::ffff:10.1.2.3")), vec![0, 1, 2, 5]);
        assert_eq!(t.matches(ip("11.0.0.1")), vec![2]);
        assert_eq!(t.matches(ip("fd00::1")), vec![3, 4]);
        assert_eq!(t.matches(ip("2001:db8::1")), vec![4]);
    }

    #[test]
    fn empty_table_matches_nothing() {
        let t = PrefixTable::default();
        assert!(t.is_empty());
        assert!(t.matches(ip("1.2.3.4")).is_empty());
        assert!(t.matches(ip("::1")).is_empty());
    }

    fn any_cidr() -> impl Strategy<Value = Cidr> {
        prop_oneof![
            // Few distinct high bytes so that blocks nest and addresses hit them.
            (0u8..4, any::<[u8; 3]>(), 0u8..=32).prop_map(|(a, rest, len)| {
                let addr = Ipv4Addr::new(a, rest[0], rest[1], rest[2]);
                format!("{addr}/{len}").parse().expect("valid v4 cidr")
            }),
            (0u16..4, any::<u16>(), any::<u64>(), 0u8..=128).prop_map(|(a, b, rest, len)| {
                let addr = Ipv6Addr::from(((a as u128) << 112) | ((b as u128) << 96) | rest as u128);
                format!("{addr}/{len}").parse().expect("valid v6 cidr")
            }),
        ]
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..4, any::<[u8; 3]>()).prop_map(|(a, r)| IpAddr::V4(Ipv4Addr::new(a, r[0], r[1], r[2]))),
            (0u8..4, any::<[u8; 3]>())
                .prop_map(|(a, r)| IpAddr::V6(Ipv4Addr::new(a, r[0], r[1], r[2]).to_ipv6_mapped())),
            (0u16..4, any::<u16>(), any::<u64>()).prop_map(|(a, b, rest)| {
                IpAddr::V6(Ipv6Addr::from(((a as u128) << 112) | ((b as u128) << 96) | rest as u128))
            }),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_contains(
            cidrs in prop::collection::vec(any_cidr(), 0..16),
            ips in prop::collection::vec(any_ip(), 1..16),
        ) {
            let t = PrefixTable::from_cidrs(cidrs.iter().zip(0u32..));
            for addr in ips {
                let expected: Vec<u32> =
                    (0u32..).zip(&cidrs).filter(|(_, c)| c.contains(addr)).map(|(i, _)| i).collect();
                prop_assert_eq!(t.matches(addr), expected);
            }
        }
    }
}
