//! Which listen addresses let other machines in. Nodes and routers bind loopback by default
//! (only this machine reaches their APIs, admin calls included); binding anything else is an
//! explicit choice that needs an admin token (`access`).

/// Whether binding `host` (an IP address or a host name) serves other machines: anything but
/// a loopback address or `localhost`.
pub fn is_exposed(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return false;
    }
    match h.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_not_exposed() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(!is_exposed(h), "{h}");
        }
        for h in ["0.0.0.0", "::", "10.0.0.5", "db1.example.com"] {
            assert!(is_exposed(h), "{h}");
        }
    }
}
