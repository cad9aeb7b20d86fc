//! The client for a Redis URL, TLS included: `rediss://[user:password@]host[:port][/db]` connects
//! over TLS (rustls), trusting the system's roots (or the bundle `SSL_CERT_FILE` names) unless
//! the URL's query says otherwise, with the parameters redis-py reads:
//!
//! - `ssl_ca_certs=<path>`: the CA bundle (PEM) to trust instead;
//! - `ssl_certfile=<path>` and `ssl_keyfile=<path>`: a client certificate and its key (PEM), for
//!   servers that ask for one (`tls-auth-clients`); both or neither;
//! - `ssl_cert_reqs=none`: no verification of the server's certificate at all (for tests only:
//!   anyone between the client and the server can read and change the traffic); `required` (the
//!   default) and `optional` verify it (a server always shows one).
//!
//! They are taken out of the URL before the `redis` crate parses the rest; any other parameter
//! (`protocol=resp3`, ...) is left to it. A parameter of these on a `redis://` URL is an error, as
//! is a file that cannot be read (or is not a regular file of at most 1 MiB). Every message
//! shows the URL with its password masked ([`redacted`]).

use super::error::RedisLimiterError;
use redis::{Client, ClientTlsConfig, TlsCertificates};
use std::io::Read;

/// The largest certificate or key file read: a PEM bundle of the system's roots is about 200 KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// What the query of a URL says about TLS.
#[derive(Debug, Default)]
struct TlsQuery {
    ca_certs: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
    insecure: bool,
}

/// The client for `url` (TLS settings from its query, see the module docs).
pub(super) fn client(url: &str) -> Result<Client, RedisLimiterError> {
    let invalid = |e: redis::RedisError| RedisLimiterError::Config(format!("invalid Redis URL {}: {e}", redacted(url)));
    let (mut rest, query) = split_query(url)?;
    let tls = url.starts_with("rediss://");
    if !tls && (query.ca_certs.is_some() || query.certfile.is_some() || query.keyfile.is_some() || query.insecure) {
        return Err(RedisLimiterError::Config(format!(
            "invalid Redis URL {}: the ssl_* parameters need a rediss:// URL",
            redacted(url)
        )));
    }
    if query.insecure {
        // The `redis` crate's own opt-out: a `#insecure` fragment.
        if rest.contains('#') {
            return Err(RedisLimiterError::Config(format!(
                "invalid Redis URL {}: ssl_cert_reqs=none and a #fragment",
                redacted(url)
            )));
        }
        rest.push_str("#insecure");
    }
    let client_tls = match (&query.certfile, &query.keyfile) {
        (Some(certfile), Some(keyfile)) => Some(ClientTlsConfig {
            client_cert: read("ssl_certfile", certfile)?,
            client_key: read("ssl_keyfile", keyfile)?,
        }),
        (None, None) => None,
        _ => {
            return Err(RedisLimiterError::Config(format!(
                "invalid Redis URL {}: ssl_certfile and ssl_keyfile go together",
                redacted(url)
            )));
        }
    };
    // Without verification there is nothing to verify against.
    let root_cert = match &query.ca_certs {
        Some(path) if !query.insecure => Some(read("ssl_ca_certs", path)?),
        _ => None,
    };
    if client_tls.is_none() && root_cert.is_none() {
        return Client::open(rest).map_err(invalid);
    }
    Client::build_with_tls(rest, TlsCertificates { client_tls, root_cert }).map_err(invalid)
}

/// `url` without the TLS parameters of its query, and what they say.
fn split_query(url: &str) -> Result<(String, TlsQuery), RedisLimiterError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), TlsQuery::default()));
    };
    let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
    let mut tls = TlsQuery::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = || percent_decoded(value).ok_or_else(|| bad_value(url, name));
        match name {
            "ssl_ca_certs" => tls.ca_certs = Some(value()?),
            "ssl_certfile" => tls.certfile = Some(value()?),
            "ssl_keyfile" => tls.keyfile = Some(value()?),
            "ssl_cert_reqs" => match value()?.as_str() {
                "none" | "CERT_NONE" => tls.insecure = true,
                "required" | "CERT_REQUIRED" | "optional" | "CERT_OPTIONAL" => tls.insecure = false,
                _ => return Err(bad_value(url, name)),
            },
            _ => kept.push(pair),
        }
    }
    let mut rest = base.to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        rest.push('#');
        rest.push_str(fragment);
    }
    Ok((rest, tls))
}

fn bad_value(url: &str, name: &str) -> RedisLimiterError {
    RedisLimiterError::Config(format!("invalid Redis URL {}: a bad value for {name}", redacted(url)))
}

/// `url`, quoted, with the password of its credentials (`user:password@`) masked as `***`: what
/// a message may show.
pub(super) fn redacted(url: &str) -> String {
    let masked = url.split_once("://").map_or_else(
        || url.to_owned(),
        |(scheme, rest)| {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((credentials, host)) => {
                    let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
                    let password = if credentials.contains(':') { ":***" } else { "" };
                    format!("{scheme}://{user}{password}@{host}{path}")
                }
                None => url.to_owned(),
            }
        },
    );
    format!("{masked:?}")
}

/// `text` with its `%XX` escapes (and `+` for a space) decoded; `None` if that is not UTF-8
/// or an escape is cut short.
fn percent_decoded(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'%' => {
                let hex = std::str::from_utf8(rest.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &rest[2..];
            }
            b'+' => bytes.push(b' '),
            _ => bytes.push(byte),
        }
    }
    String::from_utf8(bytes).ok()
}

/// The contents of the PEM file `path`. Only a regular file is read (a FIFO or a device could
/// block or never end), at most [`MAX_PEM_BYTES`], and it must hold a PEM block.
fn read(what: &str, path: &str) -> Result<Vec<u8>, RedisLimiterError> {
    let refuse = |why: String| RedisLimiterError::Config(format!("cannot read {what} {path:?}: {why}"));
    let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".to_owned()));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(refuse(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM_BYTES).read_to_end(&mut bytes))
        .map_err(|e| refuse(e.to_string()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(refuse("no PEM block in it (-----BEGIN ...)".to_owned()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url_and_the_others_stay() {
        let (rest, tls) =
            split_query("rediss://u:p@h:1/2?ssl_ca_certs=%2Ftmp%2Fca+1.pem&protocol=resp3&ssl_cert_reqs=none#x")
                .expect("parsed");
        assert_eq!(rest, "rediss://u:p@h:1/2?protocol=resp3#x");
        assert_eq!(tls.ca_certs.as_deref(), Some("/tmp/ca 1.pem"));
        assert!(tls.insecure);
        assert!(split_query("rediss://h?ssl_cert_reqs=maybe").is_err());
        assert!(split_query("rediss://h?ssl_ca_certs=%zz").is_err());
        assert_eq!(split_query("redis://h/0").expect("parsed").0, "redis://h/0");
    }

    #[test]
    fn a_message_masks_the_password() {
        assert_eq!(
            redacted("rediss://app:s3cret@h:1/0?x=1"),
            r#""rediss://app:***@h:1/0?x=1""#
        );
        assert_eq!(redacted("redis://:p@ss:w@h"), r#""redis://:***@h""#);
        assert_eq!(redacted("redis://user@h/2"), r#""redis://user@h/2""#);
        assert_eq!(redacted("redis://h:6379"), r#""redis://h:6379""#);
        let err = client("redis://app:s3cret@h?ssl_cert_reqs=none").expect_err("not TLS");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = client("rediss://app:s3cret@h/notadb").expect_err("bad db");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn only_a_regular_file_is_read() {
        let err = client("rediss://h?ssl_ca_certs=/dev/zero").expect_err("a device");
        assert!(err.to_string().ends_with("not a regular file"), "{err}");
        let err = client("rediss://h?ssl_ca_certs=/tmp").expect_err("a directory");
        assert!(err.to_string().ends_with("not a regular file"), "{err}");
        let err = client("rediss://h?ssl_ca_certs=/etc/hostname").expect_err("not PEM");
        assert!(err.to_string().contains("no PEM block"), "{err}");
        // Without verification the client certificate is still sent, and checked.
        let err = client("rediss://h?ssl_cert_reqs=none&ssl_certfile=/c.pem").expect_err("no key");
        assert!(
            err.to_string().contains("ssl_certfile and ssl_keyfile go together"),
            "{err}"
        );
    }

    #[test]
    fn a_tls_parameter_needs_rediss_and_a_readable_file() {
        let err = client("redis://h?ssl_cert_reqs=none").expect_err("not TLS");
        assert!(err.to_string().contains("need a rediss:// URL"), "{err}");
        let err = client("rediss://h?ssl_ca_certs=/nonexistent/ca.pem").expect_err("no file");
        assert!(
            err.to_string()
                .starts_with("cannot read ssl_ca_certs \"/nonexistent/ca.pem\""),
            "{err}"
        );
        let err = client("rediss://h?ssl_certfile=/c.pem").expect_err("no key");
        assert!(
            err.to_string().contains("ssl_certfile and ssl_keyfile go together"),
            "{err}"
        );
        assert!(client("rediss://h:1/0").is_ok());
    }
}
