//! A MaxMind DB writer for tests: enough of format 2.0 to build a small
//! country database (an IPv6 tree with IPv4 under ::/96, 24-bit records,
//! `{"country": {"iso_code": "XX"}}` records), so tests need no download.

#![allow(dead_code)]

use std::collections::HashMap;

use ipnet::IpNet;

#[derive(Clone, Copy)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

/// Build a database mapping each network to a country code. A later entry
/// inside an earlier one overrides it for its range.
pub fn country_db(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut offsets: HashMap<String, usize> = HashMap::new();
    let mut nodes: Vec<[Child; 2]> = vec![[Child::Empty, Child::Empty]];
    for (net, code) in entries {
        let net: IpNet = net.parse().expect("a CIDR");
        let offset = *offsets.entry((*code).to_owned()).or_insert_with(|| {
            let at = data.len();
            map_header(&mut data, 1);
            string(&mut data, "country");
            map_header(&mut data, 1);
            string(&mut data, "iso_code");
            string(&mut data, code);
            at
        });
        let (bits, len) = match net {
            IpNet::V4(n) => (u128::from(u32::from(n.network())), 96 + n.prefix_len()),
            IpNet::V6(n) => (u128::from(n.network()), n.prefix_len()),
        };
        insert(&mut nodes, bits, len, offset);
    }
    let count = nodes.len();
    let record = |c: Child| match c {
        Child::Empty => count,
        Child::Node(i) => i,
        Child::Data(off) => count + 16 + off,
    };
    let mut out = Vec::new();
    for [l, r] in &nodes {
        for v in [record(*l), record(*r)] {
            assert!(
                v < 1 << 24,
                "the test database is too large for 24-bit records"
            );
            out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let mut meta = Vec::new();
    map_header(&mut meta, 9);
    string(&mut meta, "binary_format_major_version");
    uint(&mut meta, 5, 2);
    string(&mut meta, "binary_format_minor_version");
    uint(&mut meta, 5, 0);
    string(&mut meta, "build_epoch");
    uint(&mut meta, 9, 1_700_000_000);
    string(&mut meta, "database_type");
    string(&mut meta, "Portcullis-Test-Country");
    string(&mut meta, "description");
    map_header(&mut meta, 1);
    string(&mut meta, "en");
    string(&mut meta, "portcullis test database");
    string(&mut meta, "ip_version");
    uint(&mut meta, 5, 6);
    string(&mut meta, "languages");
    array_header(&mut meta, 1);
    string(&mut meta, "en");
    string(&mut meta, "node_count");
    uint(&mut meta, 6, count as u64);
    string(&mut meta, "record_size");
    uint(&mut meta, 5, 24);
    out.extend_from_slice(&meta);
    out
}

fn insert(nodes: &mut Vec<[Child; 2]>, bits: u128, len: u8, offset: usize) {
    let mut node = 0;
    for depth in 0..len {
        let bit = ((bits >> (127 - depth)) & 1) as usize;
        if depth + 1 == len {
            nodes[node][bit] = Child::Data(offset);
            return;
        }
        node = match nodes[node][bit] {
            Child::Node(i) => i,
            other => {
                // Empty, or a wider network's data: split it below here.
                let fill = match other {
                    Child::Data(_) => other,
                    _ => Child::Empty,
                };
                nodes.push([fill, fill]);
                let i = nodes.len() - 1;
                nodes[node][bit] = Child::Node(i);
                i
            }
        };
    }
}

/// A control byte (and extension bytes) for `kind` of `size`.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (low, ext): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        _ => {
            let n = size - 285;
            (30, vec![(n >> 8) as u8, n as u8])
        }
    };
    if kind <= 7 {
        out.push((kind << 5) | low);
    } else {
        out.push(low);
        out.push(kind - 7);
    }
    out.extend_from_slice(&ext);
}

fn string(out: &mut Vec<u8>, s: &str) {
    control(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn map_header(out: &mut Vec<u8>, pairs: usize) {
    control(out, 7, pairs);
}

fn array_header(out: &mut Vec<u8>, items: usize) {
    control(out, 11, items);
}

/// uint16 (5), uint32 (6) or uint64 (9), big-endian without leading zeros.
fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}
