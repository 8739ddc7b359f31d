//! The one rule for "this machine" in a URL (127.0.0.0/8, ::1, localhost): where an http:// gateway, a proxy for
//! one, and `tick --simulate` are allowed.

/// Whether `url` names this machine: 127.0.0.0/8, ::1 or localhost.
pub fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// [`loopback`] for a URL as written (an unreadable one is not this machine).
pub fn loopback_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| loopback(&u))
}
