//! Who listens on the port a command is about to send the API key to. While sluice is stopped,
//! any local user may listen on its port; `sluice openpipe` would hand that user the key. The
//! kernel says which user owns each listening socket (`/proc/net/tcp`, `/proc/net/tcp6`), so
//! the key goes only to a listener of the command's own user or root, and not at all when
//! nothing listens (whoever binds the port next would get it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why the key is not sent.
#[derive(Debug, PartialEq)]
pub enum NotSent {
    /// Another user's socket listens there.
    Foreign { uid: u32 },
    /// Nothing listens there: the key is not sent to whatever might listen a moment later.
    NoListener,
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotSent::Foreign { uid } => write!(
                f,
                "what listens on that port belongs to user {uid}, not to this user or root: the API key is not \
                 sent to it (run this as the server's user, or find out what listens there)"
            ),
            NotSent::NoListener => write!(
                f,
                "no server listens there: start it, or set SLUICE_PORT to its port (for a server in a \
                 container, run this inside it)"
            ),
        }
    }
}

/// Refuses unless a socket listens on `port` at `ip` and every such socket belongs to
/// `own_uid` or root. Where the kernel's tables cannot be read (not Linux), nothing is refused.
pub fn check(ip: IpAddr, port: u16, own_uid: u32) -> Result<(), NotSent> {
    match tables() {
        Some(tables) => verdict(&owners(&tables, ip, port), own_uid),
        None => Ok(()),
    }
}

/// Of a host name's addresses, the one a command calls: the first where this user's (or
/// root's) server listens on `port`, else the first anything listens at, else the first. The
/// kernel's tables are read once for all of them.
pub fn pick(found: &[IpAddr], port: u16, own_uid: u32) -> Option<IpAddr> {
    pick_in(&tables().unwrap_or_default(), found, port, own_uid)
}

fn pick_in(tables: &str, found: &[IpAddr], port: u16, own_uid: u32) -> Option<IpAddr> {
    let at = |ip: &IpAddr| owners(tables, *ip, port);
    found
        .iter()
        .find(|ip| verdict(&at(ip), own_uid).is_ok())
        .or_else(|| found.iter().find(|ip| !at(ip).is_empty()))
        .or(found.first())
        .copied()
}

/// Whether `ip` is an address of this machine: a loopback address, or one a socket can be
/// bound to here.
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::TcpListener::bind((ip, 0)).is_ok()
}

/// The kernel's tables of TCP sockets, both families; `None` where there are none to read.
fn tables() -> Option<String> {
    let read: Vec<String> =
        ["/proc/net/tcp", "/proc/net/tcp6"].iter().filter_map(|t| std::fs::read_to_string(t).ok()).collect();
    (!read.is_empty()).then(|| read.join("\n"))
}

/// [`check`]'s answer for the users owning the listening sockets found.
fn verdict(owners: &[u32], own_uid: u32) -> Result<(), NotSent> {
    match owners.iter().find(|uid| **uid != own_uid && **uid != 0) {
        Some(uid) => Err(NotSent::Foreign { uid: *uid }),
        None if owners.is_empty() => Err(NotSent::NoListener),
        None => Ok(()),
    }
}

/// The users owning listening sockets on `port` that a connection to `ip` may reach (its own
/// address, the wildcard, and for IPv4 the IPv6 wildcard and mapped forms), read from the
/// kernel's tables.
fn owners(tables: &str, ip: IpAddr, port: u16) -> Vec<u32> {
    const LISTEN: &str = "0A";
    tables
        .lines()
        .filter_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, uid) = (fields.get(1)?, fields.get(3)?, fields.get(7)?);
            let (address, at_port) = local.split_once(':')?;
            if *state != LISTEN || u16::from_str_radix(at_port, 16).ok()? != port {
                return None;
            }
            let bound = address_of(address)?;
            reaches(bound, ip).then(|| uid.parse().ok()).flatten()
        })
        .collect()
}

/// A connection to `ip` may land on a socket bound to `bound`.
fn reaches(bound: IpAddr, ip: IpAddr) -> bool {
    if bound.is_unspecified() {
        return true;
    }
    match (bound, ip) {
        (IpAddr::V6(b), IpAddr::V4(i)) => b.to_ipv4_mapped() == Some(i),
        (IpAddr::V4(b), IpAddr::V6(i)) => i.to_ipv4_mapped() == Some(b),
        _ => bound == ip,
    }
}

/// An address as the kernel prints it: the bytes of each 32-bit word in the machine's order.
fn address_of(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let value = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(value.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A table line for a socket at `hex:port` in `state`, owned by `uid`.
    fn line(hex: &str, port: u16, state: &str, uid: u32) -> String {
        format!("  0: {hex}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000 {uid:>5} 0 1 1 0")
    }

    fn v4(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    fn v6(ip: Ipv6Addr) -> String {
        ip.octets().chunks(4).map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))).collect()
    }

    #[test]
    fn listeners_are_read_as_the_kernel_prints_them() {
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        let tables = [
            header.to_string(),
            line(&v4([127, 0, 0, 1]), 9099, "0A", 2001),
            line(&v4([127, 0, 0, 1]), 9100, "0A", 2002),
            line(&v4([127, 0, 0, 1]), 9099, "01", 2003),
            line(&v4([10, 0, 0, 5]), 9099, "0A", 2004),
            line(&v6(Ipv6Addr::UNSPECIFIED), 9099, "0A", 2005),
            line(&v6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()), 9099, "0A", 2006),
            line(&v6(Ipv6Addr::LOCALHOST), 9099, "0A", 2007),
        ]
        .join("\n");
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (v6_localhost, elsewhere) = (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(owners(&tables, localhost, 9099), vec![2001, 2005, 2006], "its address, wildcards, mapped");
        assert_eq!(owners(&tables, v6_localhost, 9099), vec![2005, 2007]);
        assert_eq!(owners(&tables, elsewhere, 9099), vec![2004, 2005]);
        assert_eq!(owners(&tables, localhost, 9101), Vec::<u32>::new());
        // A name's addresses: the one where this user's server listens, else any listener.
        let none = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(pick_in(&tables, &[v6_localhost, localhost], 9100, 2002), Some(localhost));
        assert_eq!(pick_in(&tables, &[none, localhost], 9100, 1), Some(localhost));
        assert_eq!(pick_in(&tables, &[none, localhost], 9101, 1), Some(none));
        assert_eq!(address_of(&v4([192, 168, 1, 20])), Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20))));
    }

    #[test]
    fn only_its_own_user_or_root_is_trusted() {
        assert_eq!(verdict(&[1000], 1000), Ok(()));
        assert_eq!(verdict(&[0, 1000], 1000), Ok(()));
        assert_eq!(verdict(&[1000, 2001], 1000), Err(NotSent::Foreign { uid: 2001 }));
        assert_eq!(verdict(&[2001], 0), Err(NotSent::Foreign { uid: 2001 }));
        assert_eq!(verdict(&[], 1000), Err(NotSent::NoListener));
    }

    #[test]
    fn only_this_machine_s_addresses_are_local() {
        assert!(is_local(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(is_local(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        // Documentation addresses (RFC 5737, 3849): no machine has them.
        assert!(!is_local(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5))));
        assert!(!is_local("2001:db8::5".parse().unwrap()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn its_own_listener_is_found_in_the_kernel_s_tables() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = rustix::process::geteuid().as_raw();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(check(localhost, port, me), Ok(()));
        assert_eq!(owners(&tables().unwrap(), localhost, port), vec![me]);
    }
}
