//! `stomp://[login:passcode@]host[:port][/virtual-host]`.

use cqrs_core::{Error, Result};

/// Where a STOMP broker listens and how to log in: parsed from
/// `stomp://[login:passcode@]host[:port][/virtual-host]` (port 61613 by default).
///
/// ```
/// use cqrs_activemq::StompUrl;
///
/// let url: StompUrl = "stomp://admin:secret@127.0.0.1:61613".parse()?;
/// assert_eq!(url.address(), "127.0.0.1:61613");
/// assert_eq!(url.to_string(), "stomp://127.0.0.1:61613"); // no password in logs
/// # Ok::<(), cqrs_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StompUrl {
    host: String,
    port: u16,
    login: Option<(String, String)>,
    virtual_host: Option<String>,
}

impl StompUrl {
    /// `host:port`, to connect to.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub(crate) fn host_header(&self) -> &str {
        self.virtual_host.as_deref().unwrap_or(&self.host)
    }

    pub(crate) fn login(&self) -> Option<(&str, &str)> {
        self.login.as_ref().map(|(l, p)| (l.as_str(), p.as_str()))
    }
}

impl std::str::FromStr for StompUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("bad STOMP URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("stomp://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| bad("expected stomp://host:port"))?;
        let (authority, virtual_host) = match rest.split_once('/') {
            Some((a, v)) if !v.is_empty() => (a, Some(v.to_owned())),
            Some((a, _)) => (a, None),
            None => (rest, None),
        };
        let (login, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hp)) => {
                let (l, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((l.to_owned(), p.to_owned())), hp)
            }
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport, 61613),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(StompUrl {
            host: host.to_owned(),
            port,
            login,
            virtual_host,
        })
    }
}

impl std::fmt::Display for StompUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stomp://{}:{}", self.host, self.port)?;
        if let Some(v) = &self.virtual_host {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for StompUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // NOTE: the passcode stays out of logs.
        write!(f, "StompUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_logins_ports_and_virtual_hosts() {
        let u: StompUrl = "stomp://a:b@h:1/v".parse().unwrap();
        assert_eq!(
            (u.address(), u.login(), u.host_header()),
            ("h:1".into(), Some(("a", "b")), "v")
        );
        let u: StompUrl = "stomp://h".parse().unwrap();
        assert_eq!(
            (u.address(), u.login(), u.host_header()),
            ("h:61613".into(), None, "h")
        );
        assert!("amqp://h".parse::<StompUrl>().is_err());
        assert!("stomp://h:x".parse::<StompUrl>().is_err());
    }
}
