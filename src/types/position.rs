//! Source positions: where a change stream stands, typed per source (invariant 4 in `docs/architecture.md`).
//!
//! - [`PgLsn`]: PostgreSQL's WAL position, `16/B374D848`.
//! - [`GtidSet`]: the transactions a MySQL or MariaDB server has executed. MySQL writes
//!   `uuid:1-5:7,uuid2:1-3`; MariaDB writes `domain-server-seq` per replication domain
//!   (`0-1-100,1-2-5`). Sets are ordered by inclusion: a later position contains an earlier one.
//! - [`Scn`]: Oracle's system change number.
//! - [`Hlc`]: CockroachDB's hybrid logical clock, written as MOLT's checkpoints store it:
//!   `<nanos>.<logical, 10 digits>`.
//!
//! Each parses from and formats to the text its database uses, and never compares across kinds.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Why a position did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {text:?}: {reason}")]
pub struct PositionError {
    kind: &'static str,
    text: String,
    reason: String,
}

fn err(kind: &'static str, text: &str, reason: impl Into<String>) -> PositionError {
    PositionError { kind, text: text.to_owned(), reason: reason.into() }
}

// ---------------------------------------------------------------------------------------------

/// A PostgreSQL log sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PgLsn(pub u64);

impl FromStr for PgLsn {
    type Err = PositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| err("LSN", s, "expected XXX/XXX, e.g. 16/B374D848"))?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(err("LSN", s, "each half is 1 to 8 hex digits"));
            }
            u32::from_str_radix(p, 16).map_err(|_| err("LSN", s, "not hexadecimal"))
        };
        Ok(PgLsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

impl fmt::Display for PgLsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

// ---------------------------------------------------------------------------------------------

/// An Oracle system change number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Scn(pub u64);

impl FromStr for Scn {
    type Err = PositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(Scn).map_err(|_| err("SCN", s, "expected a non-negative integer"))
    }
}

impl fmt::Display for Scn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

// ---------------------------------------------------------------------------------------------

/// A CockroachDB hybrid logical clock timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    /// Wall time, nanoseconds since the Unix epoch.
    pub nanos: i64,
    /// Logical counter within the same wall time.
    pub logical: u32,
}

impl FromStr for Hlc {
    type Err = PositionError;
    /// Accepts `nanos.logical` (MOLT's checkpoint form, logical zero-padded to 10 digits, or
    /// changefeed's `resolved` form) and plain `nanos`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (nanos, logical) = t.split_once('.').unwrap_or((t, "0"));
        let nanos = nanos.parse().map_err(|_| err("HLC", s, "expected <nanos>.<logical>"))?;
        if logical.is_empty() || !logical.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("HLC", s, "the logical part is digits"));
        }
        let logical =
            logical.parse().map_err(|_| err("HLC", s, "the logical part is too large"))?;
        Ok(Hlc { nanos, logical })
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:010}", self.nanos, self.logical)
    }
}

// ---------------------------------------------------------------------------------------------

/// A set of executed transactions of a MySQL or MariaDB server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GtidSet {
    /// MySQL: source UUID (lowercase) → sorted, disjoint, non-adjacent inclusive intervals.
    MySql(BTreeMap<String, Vec<(u64, u64)>>),
    /// MariaDB: replication domain → (server id, sequence number) of its last transaction.
    MariaDb(BTreeMap<u32, (u32, u64)>),
}

impl Default for GtidSet {
    fn default() -> Self {
        GtidSet::MySql(BTreeMap::new())
    }
}

fn merge(intervals: &mut Vec<(u64, u64)>) {
    intervals.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
    for &(a, b) in intervals.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *intervals = out;
}

impl GtidSet {
    /// Whether nothing is in the set.
    pub fn is_empty(&self) -> bool {
        match self {
            GtidSet::MySql(m) => m.is_empty(),
            GtidSet::MariaDb(m) => m.is_empty(),
        }
    }

    /// Adds one MySQL transaction `uuid:n`. Errors when the set is MariaDB's.
    pub fn add_mysql(&mut self, uuid: &str, n: u64) -> Result<(), PositionError> {
        match self {
            GtidSet::MySql(m) => {
                let intervals = m.entry(uuid.to_ascii_lowercase()).or_default();
                intervals.push((n, n));
                merge(intervals);
                Ok(())
            }
            GtidSet::MariaDb(_) => {
                Err(err("GTID set", uuid, "a MySQL GTID cannot join a MariaDB set"))
            }
        }
    }

    /// Records MariaDB transaction `domain-server-seq` (the domain's position moves to it).
    pub fn add_mariadb(&mut self, domain: u32, server: u32, seq: u64) -> Result<(), PositionError> {
        if let GtidSet::MySql(m) = self
            && m.is_empty()
        {
            *self = GtidSet::MariaDb(BTreeMap::new());
        }
        match self {
            GtidSet::MariaDb(m) => {
                m.insert(domain, (server, seq));
                Ok(())
            }
            GtidSet::MySql(_) => Err(err(
                "GTID set",
                &format!("{domain}-{server}-{seq}"),
                "a MariaDB GTID cannot join a MySQL set",
            )),
        }
    }

    /// Whether every transaction in `other` is in `self`.
    pub fn contains(&self, other: &GtidSet) -> bool {
        match (self, other) {
            (_, o) if o.is_empty() => true,
            (GtidSet::MySql(a), GtidSet::MySql(b)) => b.iter().all(|(uuid, ivs)| {
                let Some(mine) = a.get(uuid) else { return false };
                ivs.iter().all(|&(lo, hi)| mine.iter().any(|&(a, b)| a <= lo && hi <= b))
            }),
            (GtidSet::MariaDb(a), GtidSet::MariaDb(b)) => b
                .iter()
                .all(|(domain, (_, seq))| a.get(domain).is_some_and(|(_, mine)| mine >= seq)),
            _ => false,
        }
    }
}

impl PartialOrd for GtidSet {
    /// Inclusion order: `a <= b` when `b` contains `a`; unrelated sets do not compare.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.contains(other), other.contains(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }
}

impl FromStr for GtidSet {
    type Err = PositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return Ok(GtidSet::default());
        }
        if parts[0].contains(':') {
            let mut set = BTreeMap::<String, Vec<(u64, u64)>>::new();
            for part in parts {
                let mut pieces = part.split(':');
                let uuid = pieces.next().unwrap_or_default().to_ascii_lowercase();
                let valid_uuid = uuid.len() == 36
                    && uuid.chars().enumerate().all(|(i, c)| {
                        if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() }
                    });
                if !valid_uuid {
                    return Err(err("GTID set", s, format!("{uuid:?} is not a server UUID")));
                }
                let intervals = set.entry(uuid).or_default();
                let mut any = false;
                for iv in pieces {
                    let (a, b) = iv.split_once('-').unwrap_or((iv, iv));
                    let (a, b): (u64, u64) = match (a.parse(), b.parse()) {
                        (Ok(a), Ok(b)) if a >= 1 && a <= b => (a, b),
                        _ => {
                            return Err(err(
                                "GTID set",
                                s,
                                format!("{iv:?} is not an interval like 1-5"),
                            ));
                        }
                    };
                    intervals.push((a, b));
                    any = true;
                }
                if !any {
                    return Err(err(
                        "GTID set",
                        s,
                        "a UUID needs at least one interval (uuid:1-5)",
                    ));
                }
                merge(intervals);
            }
            return Ok(GtidSet::MySql(set));
        }
        let mut set = BTreeMap::new();
        for part in parts {
            let nums: Vec<&str> = part.split('-').collect();
            let parsed = match nums.as_slice() {
                [d, srv, seq] => (d.parse::<u32>(), srv.parse::<u32>(), seq.parse::<u64>()),
                _ => {
                    return Err(err(
                        "GTID set",
                        s,
                        format!(
                            "{part:?} is neither uuid:1-5 (MySQL) nor domain-server-seq (MariaDB)"
                        ),
                    ));
                }
            };
            let (Ok(d), Ok(srv), Ok(seq)) = parsed else {
                return Err(err(
                    "GTID set",
                    s,
                    format!("{part:?}: domain, server and sequence are numbers"),
                ));
            };
            if set.insert(d, (srv, seq)).is_some() {
                return Err(err("GTID set", s, format!("domain {d} appears twice")));
            }
        }
        Ok(GtidSet::MariaDb(set))
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidSet::MySql(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .map(|(uuid, ivs)| {
                        let ivs: Vec<String> = ivs
                            .iter()
                            .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                            .collect();
                        format!("{uuid}:{}", ivs.join(":"))
                    })
                    .collect();
                f.write_str(&parts.join(","))
            }
            GtidSet::MariaDb(m) => {
                let parts: Vec<String> =
                    m.iter().map(|(d, (srv, seq))| format!("{d}-{srv}-{seq}")).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_and_orders() {
        let lsn: PgLsn = "16/B374D848".parse().expect("lsn");
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<PgLsn>(), Ok(PgLsn(0)));
        assert!("0/1".parse::<PgLsn>().expect("lsn") < "1/0".parse().expect("lsn"));
        for bad in ["", "16", "16/", "/1", "G/0", "123456789/0"] {
            assert!(bad.parse::<PgLsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hlc_uses_molt_checkpoint_form() {
        let h: Hlc = "1700000000000000000.0000000002".parse().expect("hlc");
        assert_eq!(h, Hlc { nanos: 1_700_000_000_000_000_000, logical: 2 });
        assert_eq!(h.to_string(), "1700000000000000000.0000000002");
        assert_eq!("5".parse::<Hlc>().expect("hlc"), Hlc { nanos: 5, logical: 0 });
        assert!("5.2".parse::<Hlc>().expect("hlc") < "5.10".parse().expect("hlc"));
        assert!("x.1".parse::<Hlc>().is_err() && "1.".parse::<Hlc>().is_err());
    }

    #[test]
    fn scn_parses() {
        assert_eq!("  123 ".parse::<Scn>(), Ok(Scn(123)));
        assert!("-1".parse::<Scn>().is_err());
    }

    #[test]
    fn mysql_gtid_sets_normalise_and_order_by_inclusion() {
        let a: GtidSet = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:6:9-10, 3e11fa47-71ca-11e1-9e33-c80aa9429562:20"
            .parse()
            .expect("set");
        assert_eq!(a.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-6:9-10:20");
        let b: GtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:2-4".parse().expect("set");
        assert!(a.contains(&b) && !b.contains(&a));
        assert_eq!(b.partial_cmp(&a), Some(Ordering::Less));
        let mut c = b.clone();
        c.add_mysql("3E11FA47-71CA-11E1-9E33-C80AA9429562", 1).expect("add");
        c.add_mysql("3e11fa47-71ca-11e1-9e33-c80aa9429562", 5).expect("add");
        assert_eq!(c.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5");
        let other: GtidSet = "4e11fa47-71ca-11e1-9e33-c80aa9429562:1".parse().expect("set");
        assert_eq!(other.partial_cmp(&c), None, "unrelated sets do not compare");
        for bad in [
            "nope:1",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:5-3",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:0",
        ] {
            assert!(bad.parse::<GtidSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mariadb_gtid_sets_track_each_domain() {
        let a: GtidSet = "0-1-100,1-2-5".parse().expect("set");
        assert_eq!(a.to_string(), "0-1-100,1-2-5");
        let mut b = a.clone();
        b.add_mariadb(0, 1, 101).expect("add");
        assert!(b > a && b.contains(&a));
        let c: GtidSet = "0-1-50".parse().expect("set");
        assert!(a.contains(&c));
        assert!("0-1-1,0-1-2".parse::<GtidSet>().is_err(), "duplicate domain");
        assert!("0-1".parse::<GtidSet>().is_err());
        let mut empty = GtidSet::default();
        empty.add_mariadb(0, 1, 4).expect("an empty set takes either form");
        assert_eq!(empty.to_string(), "0-1-4");
        assert!(empty.add_mysql("3e11fa47-71ca-11e1-9e33-c80aa9429562", 1).is_err());
        assert_eq!("".parse::<GtidSet>(), Ok(GtidSet::default()));
    }
}
