//! One logged packet as an audit record that existing audit parsers read:
//! `type=NETFILTER_PKT`, with the fields the kernel's own audit logging of
//! packets writes (`xt_AUDIT`, nftables `log level audit`: `mark=0x…
//! saddr=… daddr=… proto=N`, in that order and form) and after them what
//! NFLOG adds: the ports for TCP, UDP, UDP-Lite, SCTP and DCCP (which the
//! kernel's audit target logged until Linux 4.12), the netfilter hook, the
//! interfaces, the uid and gid of the local socket when the kernel knows
//! them, the rule's log prefix and the log group:
//!
//! ```text
//! type=NETFILTER_PKT msg=audit(1700000000.123:42): mark=0x0 saddr=10.0.0.1
//!   daddr=10.0.0.2 proto=6 sport=40000 dport=22 hook=1 iif="eth0" uid=0 gid=0
//!   prefix="ssh-in" group=5
//! ```
//!
//! Text that comes from outside (the prefix, interface names) is written as
//! the kernel writes untrusted strings: in double quotes when it is all
//! printable ASCII without spaces or quotes, otherwise as upper-case hex.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What the kernel told about one logged packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet {
    /// The log group (`log group N`, `--nflog-group N`).
    pub group: u16,
    /// Hook number (`NF_INET_PRE_ROUTING` 0 … `NF_INET_POST_ROUTING` 4).
    pub hook: u8,
    /// Link-layer protocol (`ETH_P_IP`, `ETH_P_IPV6`…), 0 if unknown.
    pub hw_protocol: u16,
    /// The packet mark.
    pub mark: u32,
    /// When the kernel stamped the packet (seconds, microseconds), if it did.
    pub timestamp: Option<(u64, u64)>,
    /// Input interface name, if the packet came in on one.
    pub iif: Option<Vec<u8>>,
    /// Output interface name, if it goes out on one.
    pub oif: Option<Vec<u8>>,
    /// fsuid and fsgid of the local socket's owner.
    pub uid: Option<u32>,
    /// See `uid`.
    pub gid: Option<u32>,
    /// The rule's log prefix.
    pub prefix: Option<Vec<u8>>,
    /// The first bytes of the packet, from the network header on.
    pub payload: Vec<u8>,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// Appends the record for `packet`, stamped `sec.msec:serial`, to `out`.
pub fn format(out: &mut Vec<u8>, node: Option<&str>, stamp: (u64, u32, u64), packet: &Packet) {
    let mut s = String::with_capacity(256);
    if let Some(node) = node {
        let _ = write!(s, "node={node} ");
    }
    let (sec, msec, serial) = stamp;
    let _ = write!(
        s,
        "type=NETFILTER_PKT msg=audit({sec}.{msec:03}:{serial}): mark={:#x}",
        packet.mark
    );
    match network(packet) {
        Some(net) => {
            let _ = write!(
                s,
                " saddr={} daddr={} proto={}",
                net.saddr, net.daddr, net.proto
            );
            if let Some((sport, dport)) = net.ports {
                let _ = write!(s, " sport={sport} dport={dport}");
            }
        }
        None => {
            let _ = write!(s, " macproto={:#06x}", packet.hw_protocol);
        }
    }
    let _ = write!(s, " hook={}", packet.hook);
    out.extend_from_slice(s.as_bytes());
    if let Some(name) = &packet.iif {
        out.extend_from_slice(b" iif=");
        untrusted(out, name);
    }
    if let Some(name) = &packet.oif {
        out.extend_from_slice(b" oif=");
        untrusted(out, name);
    }
    if let (Some(uid), Some(gid)) = (packet.uid, packet.gid) {
        out.extend_from_slice(format!(" uid={uid} gid={gid}").as_bytes());
    }
    if let Some(prefix) = &packet.prefix {
        out.extend_from_slice(b" prefix=");
        untrusted(out, prefix);
    }
    out.extend_from_slice(format!(" group={}", packet.group).as_bytes());
}

/// Writes `text` as the kernel writes an untrusted string
/// (`audit_log_untrustedstring`).
fn untrusted(out: &mut Vec<u8>, text: &[u8]) {
    if text.iter().all(|&b| b > 0x20 && b < 0x7f && b != b'"') {
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
    } else {
        for b in text {
            out.extend_from_slice(format!("{b:02X}").as_bytes());
        }
    }
}

/// The network-layer facts of a packet.
struct Network {
    saddr: String,
    daddr: String,
    proto: u8,
    ports: Option<(u16, u16)>,
}

/// Reads the IPv4 or IPv6 header at the start of the payload.
fn network(packet: &Packet) -> Option<Network> {
    let p = &packet.payload;
    let version = p.first()? >> 4;
    match (packet.hw_protocol, version) {
        (ETH_P_IP, 4) | (0, 4) => ipv4(p),
        (ETH_P_IPV6, 6) | (0, 6) => ipv6(p),
        _ => None,
    }
}

fn ipv4(p: &[u8]) -> Option<Network> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    let head = p.get(..20)?;
    let proto = head[9];
    let saddr = Ipv4Addr::new(head[12], head[13], head[14], head[15]);
    let daddr = Ipv4Addr::new(head[16], head[17], head[18], head[19]);
    // Only the first fragment carries the transport header.
    let fragment_offset = u16::from_be_bytes([head[6], head[7]]) & 0x1fff;
    let ports = if fragment_offset == 0 && ihl >= 20 {
        ports(proto, p.get(ihl..))
    } else {
        None
    };
    Some(Network {
        saddr: saddr.to_string(),
        daddr: daddr.to_string(),
        proto,
        ports,
    })
}

fn ipv6(p: &[u8]) -> Option<Network> {
    let head = p.get(..40)?;
    let addr = |b: &[u8]| {
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ipv6Addr::from(a)
    };
    let (saddr, daddr) = (addr(&head[8..24]), addr(&head[24..40]));
    // Walk the extension headers to the upper-layer protocol, as the
    // kernel's ipv6_skip_exthdr does.
    let mut next = head[6];
    let mut at = 40;
    let mut first_fragment = true;
    loop {
        match next {
            // Hop-by-hop, routing, destination options.
            0 | 43 | 60 => {
                let h = p.get(at..at + 2)?;
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            // Fragment: a later fragment has no transport header.
            44 => {
                let h = p.get(at..at + 8)?;
                next = h[0];
                first_fragment = u16::from_be_bytes([h[2], h[3]]) & 0xfff8 == 0;
                at += 8;
            }
            // Authentication header: its length is in 4-byte units.
            51 => {
                let h = p.get(at..at + 2)?;
                next = h[0];
                at += (usize::from(h[1]) + 2) * 4;
            }
            _ => break,
        }
    }
    let ports = if first_fragment {
        ports(next, p.get(at..))
    } else {
        None
    };
    Some(Network {
        saddr: saddr.to_string(),
        daddr: daddr.to_string(),
        proto: next,
        ports,
    })
}

/// Source and destination port of the transport protocols that have them at
/// the start of their header.
fn ports(proto: u8, transport: Option<&[u8]>) -> Option<(u16, u16)> {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const DCCP: u8 = 33;
    const SCTP: u8 = 132;
    const UDPLITE: u8 = 136;
    if !matches!(proto, TCP | UDP | DCCP | SCTP | UDPLITE) {
        return None;
    }
    let t = transport?.get(..4)?;
    Some((
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    fn line(packet: &Packet) -> String {
        let mut out = Vec::new();
        format(&mut out, None, (1700000000, 7, 42), packet);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_tcp_packet_has_the_kernels_fields_then_ports_hook_and_the_rest() {
        let p = Packet {
            group: 5,
            hook: 1,
            hw_protocol: ETH_P_IP,
            mark: 0x2a,
            iif: Some(b"eth0".to_vec()),
            uid: Some(0),
            gid: Some(0),
            prefix: Some(b"ssh-in".to_vec()),
            payload: ipv4_tcp(40000, 22),
            ..Packet::default()
        };
        assert_eq!(
            line(&p),
            "type=NETFILTER_PKT msg=audit(1700000000.007:42): mark=0x2a saddr=10.0.0.1 \
             daddr=10.0.0.2 proto=6 sport=40000 dport=22 hook=1 iif=\"eth0\" uid=0 gid=0 \
             prefix=\"ssh-in\" group=5"
        );
        let text = line(&p);
        let parsed = audisp::record::parse(text.as_bytes()).expect("a record audisp parses");
        assert_eq!(parsed.rtype, 1324);
        assert_eq!(parsed.serial, 42);
    }

    #[test]
    fn a_zero_mark_is_written_as_the_kernel_writes_it() {
        let p = Packet {
            payload: ipv4_tcp(1, 2),
            ..Packet::default()
        };
        assert!(line(&p).contains("mark=0x0 saddr=10.0.0.1"), "{}", line(&p));
    }

    #[test]
    fn prefixes_with_spaces_or_quotes_are_hex() {
        let p = Packet {
            prefix: Some(b"tcp syn".to_vec()),
            oif: Some(b"lo".to_vec()),
            payload: ipv4_tcp(1, 2),
            ..Packet::default()
        };
        assert!(line(&p).ends_with(" oif=\"lo\" prefix=7463702073796E group=0"));
    }

    #[test]
    fn ipv6_behind_extension_headers_and_icmp_without_ports() {
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 0, 64];
        let mut a = [0u8; 16];
        a[15] = 1;
        p.extend_from_slice(&a);
        p.extend_from_slice(&a);
        // Hop-by-hop options (8 bytes) then UDP 5353 -> 53.
        p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x14, 0xe9, 0, 53, 0, 8, 0, 0]);
        let udp = Packet {
            hw_protocol: ETH_P_IPV6,
            payload: p.clone(),
            ..Packet::default()
        };
        assert!(line(&udp).contains(" saddr=::1 daddr=::1 proto=17 sport=5353 dport=53 hook=0"));
        p[6] = 58;
        let icmp = Packet {
            payload: p,
            ..Packet::default()
        };
        assert!(line(&icmp).contains(" proto=58 hook=0"), "{}", line(&icmp));
    }

    #[test]
    fn later_fragments_and_truncated_headers_have_no_ports() {
        let mut p = ipv4_tcp(1, 2);
        p[6] = 0x00;
        p[7] = 0x10;
        let frag = Packet {
            payload: p,
            ..Packet::default()
        };
        assert!(line(&frag).contains(" proto=6 hook=0"), "{}", line(&frag));
        let short = Packet {
            payload: ipv4_tcp(1, 2)[..22].to_vec(),
            ..Packet::default()
        };
        assert!(line(&short).contains(" proto=6 hook=0"));
        let arp = Packet {
            hw_protocol: 0x0806,
            payload: vec![0, 1, 8, 0],
            ..Packet::default()
        };
        assert!(line(&arp).contains("mark=0x0 macproto=0x0806 hook=0"));
    }
}
