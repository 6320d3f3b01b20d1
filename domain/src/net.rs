//! Network addresses as configuration files name them: the authority of a
//! service URL (`HOST[:PORT]`, an IPv6 host in brackets) and whether a host
//! is this machine. String checks only, no IO.

/// Splits the part of a URL after its scheme, `HOST[:PORT]` (a trailing `/`
/// allowed, nothing else after it), into the host (an IPv6 address without
/// its brackets) and the port when one is given (1 to 65535, digits only).
/// `None` when it is anything else: a path, a user, an empty or odd host.
pub fn authority(rest: &str) -> Option<(&str, Option<u16>)> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (v6, after) = bracketed.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (v6, port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        if !host_ok {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return None,
        },
    };
    Some((host, port))
}

/// Whether `host` (an IPv6 address without its URL brackets) names this
/// machine: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_are_host_and_optional_port() {
        assert_eq!(
            authority("mqtt.example:8883"),
            Some(("mqtt.example", Some(8883)))
        );
        assert_eq!(authority("127.0.0.1/"), Some(("127.0.0.1", None)));
        assert_eq!(authority("[::1]:1883"), Some(("::1", Some(1883))));
        assert_eq!(authority("[::1]"), Some(("::1", None)));
        for bad in [
            "",
            "host:0",
            "host:+1",
            "host:99999",
            "host/path",
            "u@host",
            "[zz]:1",
            "[::1]x",
            "ho st",
            "host:",
        ] {
            assert_eq!(authority(bad), None, "{bad:?}");
        }
        assert!(
            is_loopback_host("localhost")
                && is_loopback_host("127.1.2.3")
                && is_loopback_host("::1")
        );
        assert!(!is_loopback_host("10.0.0.5") && !is_loopback_host("example"));
    }
}
