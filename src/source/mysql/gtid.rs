//! GTIDs as the binlog carries them: MySQL's GTID event (through the binlog library) and
//! MariaDB's own events, parsed here from their documented layouts.
//!
//! MariaDB GTID event (type 0xa2), after the common header: sequence number u64 LE, domain id
//! u32 LE, flags u8 (bit 0: standalone, a statement without BEGIN/COMMIT); the server id is
//! the header's. GTID list (0xa3): a u32 LE whose low 28 bits count the entries, then per
//! entry domain u32, server u32, sequence u64 (all LE).

use mysql_common::binlog::events::GtidEvent;

/// MariaDB's GTID event type.
pub const MARIADB_GTID: u8 = 0xa2;
/// MariaDB's GTID list event type.
pub const MARIADB_GTID_LIST: u8 = 0xa3;
/// MariaDB's start-encryption event type.
pub const MARIADB_START_ENCRYPTION: u8 = 0xa4;
/// MariaDB's compressed query and rows events (0xa5–0xab).
pub const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 0xa5..=0xab;

/// One transaction's GTID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gtid {
    /// MySQL `uuid:gno`.
    MySql {
        /// Source server UUID, lowercase with hyphens.
        uuid: String,
        /// Transaction number.
        gno: u64,
    },
    /// MariaDB `domain-server-seq`.
    MariaDb {
        /// Replication domain.
        domain: u32,
        /// Originating server id.
        server: u32,
        /// Sequence number.
        seq: u64,
        /// A statement without BEGIN/COMMIT (DDL).
        standalone: bool,
    },
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gtid::MySql { uuid, gno } => write!(f, "{uuid}:{gno}"),
            Gtid::MariaDb { domain, server, seq, .. } => write!(f, "{domain}-{server}-{seq}"),
        }
    }
}

/// Formats 16 bytes as a UUID.
pub fn uuid_text(sid: [u8; 16]) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// A MySQL GTID event's GTID.
pub fn mysql(event: &GtidEvent) -> Gtid {
    Gtid::MySql { uuid: uuid_text(event.sid()), gno: event.gno() }
}

/// A MariaDB GTID event's GTID, from the event body and the header's server id.
pub fn mariadb(data: &[u8], server: u32) -> Option<Gtid> {
    let seq = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    let flags = *data.get(12)?;
    Some(Gtid::MariaDb { domain, server, seq, standalone: flags & 1 != 0 })
}

/// A MariaDB GTID list event's entries `(domain, server, seq)`.
pub fn mariadb_list(data: &[u8]) -> Option<Vec<(u32, u32, u64)>> {
    let count = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) & 0x0FFF_FFFF;
    let mut entries = Vec::new();
    for i in 0..usize::try_from(count).ok()? {
        let at = 4 + i * 16;
        let entry = data.get(at..at + 16)?;
        entries.push((
            u32::from_le_bytes(entry[0..4].try_into().ok()?),
            u32::from_le_bytes(entry[4..8].try_into().ok()?),
            u64::from_le_bytes(entry[8..16].try_into().ok()?),
        ));
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_events() {
        let mut data = 123u64.to_le_bytes().to_vec();
        data.extend(7u32.to_le_bytes());
        data.push(1);
        assert_eq!(
            mariadb(&data, 42),
            Some(Gtid::MariaDb { domain: 7, server: 42, seq: 123, standalone: true })
        );
        assert_eq!(mariadb(&data[..5], 42), None);
        let mut list = (2u32 | 0x1000_0000).to_le_bytes().to_vec();
        for (d, s, q) in [(0u32, 1u32, 10u64), (3, 2, 99)] {
            list.extend(d.to_le_bytes());
            list.extend(s.to_le_bytes());
            list.extend(q.to_le_bytes());
        }
        assert_eq!(mariadb_list(&list), Some(vec![(0, 1, 10), (3, 2, 99)]));
        assert_eq!(mariadb_list(&list[..20]), None);
        assert_eq!(
            uuid_text([0x4c, 0x65, 0x8a, 0xe6, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
            "4c658ae6-0001-0203-0405-060708090a0b"
        );
    }
}
