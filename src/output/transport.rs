//! Where an upstream's bytes go: a persistent TCP connection, UDP
//! datagrams, a file or stdout. Transports know nothing of formats.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncWriteExt, Stdout};
use tokio::net::{lookup_host, TcpStream, UdpSocket};

use crate::config::Target;

/// Largest UDP datagram sent; lines are never split across datagrams.
const MAX_DATAGRAM_BYTES: usize = 1400;

/// Why a send failed. Every variant is worth retrying: the bytes are
/// fine, the path to the upstream is not.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Name resolution or connection failed.
    #[error("connect to {address}")]
    Connect {
        /// The configured address.
        address: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing failed (the connection is dropped and re-made).
    #[error("write to {address}")]
    Write {
        /// The configured address or path.
        address: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An HTTP request failed before an answer (connect, timeout, reset).
    #[error("request to {url}")]
    Request {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The upstream answered with a status that says a retry may help (5xx, 429).
    #[error("{url} answered {status}: {body}")]
    Unavailable {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The upstream refused the batch (4xx other than 429): sending the same
    /// bytes again cannot help.
    #[error("{url} rejected the batch with {status}: {body}")]
    Rejected {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

impl SendError {
    /// Whether sending the same bytes again can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SendError::Rejected { .. })
    }
}

/// How much of an error response body is kept for the log.
const ERROR_BODY_BYTES: usize = 512;

/// An open (or openable) path to the upstream.
#[derive(Debug)]
pub enum Transport {
    /// Persistent TCP connection, re-made after any error.
    Tcp {
        /// `host:port` as configured (resolved at each connect).
        address: String,
        /// Limit for one connection attempt.
        connect_timeout: Duration,
        /// The live connection, if any.
        stream: Option<TcpStream>,
    },
    /// Datagrams, one or more whole lines each.
    Udp {
        /// `host:port` as configured.
        address: String,
        /// The connected socket, if any.
        socket: Option<UdpSocket>,
    },
    /// Appends to a file, opened on first use.
    File {
        /// The path.
        path: PathBuf,
        /// The open file, if any.
        file: Option<File>,
    },
    /// Writes to standard output.
    Stdout(Stdout),
    /// A target that publishes through its own task (AMQP): every send fails.
    Elsewhere(String),
    /// POSTs each chunk as one request body.
    Http {
        /// The URL.
        url: String,
        /// Keep-alive connection pool.
        client: reqwest::Client,
        /// Method, media type, compression and reply handling.
        options: HttpOptions,
    },
}

/// What a successful send reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// A new connection was made for it.
    pub connected: bool,
    /// IRONdb's `/raw` answer: records it could not store.
    pub remote_errors: u64,
    /// IRONdb's `/raw` answer: records this node does not own.
    pub misdirected: u64,
}

impl Transport {
    /// A transport for the target; nothing is opened until the first send.
    pub fn new(target: &Target, connect_timeout: Duration) -> Self {
        Self::with_http(target, connect_timeout, HttpOptions::default())
    }

    /// A transport for the target with HTTP settings for HTTP targets.
    pub fn with_http(target: &Target, connect_timeout: Duration, http: HttpOptions) -> Self {
        match target {
            Target::Tcp(address) => Transport::Tcp {
                address: address.clone(),
                connect_timeout,
                stream: None,
            },
            Target::Udp(address) => Transport::Udp {
                address: address.clone(),
                socket: None,
            },
            Target::File(path) => Transport::File {
                path: path.clone(),
                file: None,
            },
            Target::Stdout => Transport::Stdout(tokio::io::stdout()),
            Target::Amqp(amqp) => Transport::Elsewhere(amqp.url.clone()),
            Target::Http(url) => Transport::Http {
                url: url.clone(),
                client: reqwest::Client::builder()
                    .connect_timeout(connect_timeout)
                    .timeout(http.request_timeout)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .build()
                    .unwrap_or_else(|_| reqwest::Client::new()),
                options: http,
            },
        }
    }

    /// Another handle on the same HTTP client (sharing its connection
    /// pool), for a concurrent request; `None` for other transports.
    pub fn clone_http(&self) -> Option<Transport> {
        match self {
            Transport::Http {
                url,
                client,
                options,
            } => Some(Transport::Http {
                url: url.clone(),
                client: client.clone(),
                options: *options,
            }),
            _ => None,
        }
    }

    /// True while a connection (or file) is open.
    pub fn is_open(&self) -> bool {
        match self {
            Transport::Tcp { stream, .. } => stream.is_some(),
            Transport::Udp { socket, .. } => socket.is_some(),
            Transport::File { file, .. } => file.is_some(),
            Transport::Stdout(_) | Transport::Http { .. } => true,
            Transport::Elsewhere(_) => false,
        }
    }

    /// Opens the transport if it is closed, without sending anything.
    /// Returns whether a new connection was made.
    ///
    /// # Errors
    /// [`SendError::Connect`] when it cannot be opened.
    pub async fn probe(&mut self) -> Result<bool, SendError> {
        match self {
            Transport::Tcp {
                address,
                connect_timeout,
                stream,
            } => ensure_tcp(address, *connect_timeout, stream).await,
            _ => self.send(&[]).await,
        }
    }

    /// Writes all of `bytes`, opening the transport first if needed.
    /// Returns whether a new connection was made.
    ///
    /// # Errors
    /// [`SendError`]; the transport is closed and will re-open on the next call.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<bool, SendError> {
        self.send_points(bytes, 0).await.map(|sent| sent.connected)
    }

    /// Like [`Transport::send`] for bytes holding `n_points` points (HTTP
    /// upstreams may announce the count), with what the upstream answered.
    ///
    /// # Errors
    /// [`SendError`]; the transport is closed and will re-open on the next call.
    pub async fn send_points(&mut self, bytes: &[u8], n_points: usize) -> Result<Sent, SendError> {
        if let Transport::Http {
            url,
            client,
            options,
        } = self
        {
            if bytes.is_empty() {
                return Ok(Sent::default());
            }
            return send_http(url, client, options, bytes, n_points).await;
        }
        let connected = self.send_stream(bytes).await?;
        Ok(Sent {
            connected,
            ..Sent::default()
        })
    }

    async fn send_stream(&mut self, bytes: &[u8]) -> Result<bool, SendError> {
        match self {
            Transport::Tcp {
                address,
                connect_timeout,
                stream,
            } => send_tcp(address, *connect_timeout, stream, bytes).await,
            Transport::Udp { address, socket } => send_udp(address, socket, bytes).await,
            Transport::File { path, file } => {
                let opened = file.is_none();
                let write = async {
                    if file.is_none() {
                        *file = Some(
                            OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(&*path)
                                .await?,
                        );
                    }
                    let open = file
                        .as_mut()
                        .ok_or_else(|| io::Error::other("file not open"))?;
                    open.write_all(bytes).await?;
                    open.flush().await
                };
                write.await.map_err(|source| {
                    *file = None;
                    SendError::Write {
                        address: path.display().to_string(),
                        source,
                    }
                })?;
                Ok(opened)
            }
            Transport::Http { .. } => Ok(false),
            Transport::Elsewhere(address) => Err(SendError::Connect {
                address: address.clone(),
                source: io::Error::other("this target is not written through a byte transport"),
            }),
            Transport::Stdout(stdout) => {
                let write = async {
                    stdout.write_all(bytes).await?;
                    stdout.flush().await
                };
                write.await.map_err(|source| SendError::Write {
                    address: "stdout".to_owned(),
                    source,
                })?;
                Ok(false)
            }
        }
    }
}

/// Settings of HTTP transports.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// Media type of the bodies.
    pub content_type: &'static str,
    /// Gzip bodies.
    pub gzip: bool,
    /// Time limit of one request.
    pub request_timeout: Duration,
    /// PUT rather than POST.
    pub put: bool,
    /// Send `X-Snowth-Datapoints` with the number of points (IRONdb).
    pub datapoints_header: bool,
    /// Read IRONdb's JSON counts from a 200 answer.
    pub irondb_reply: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            content_type: "application/json",
            gzip: true,
            request_timeout: Duration::from_secs(30),
            put: false,
            datapoints_header: false,
            irondb_reply: false,
        }
    }
}

/// IRONdb's `/raw` answer: `{"records":N,"updated":N,"misdirected":N,"errors":N}`.
#[derive(Debug, Default, serde::Deserialize)]
struct IrondbReply {
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    misdirected: u64,
}

async fn send_http(
    url: &str,
    client: &reqwest::Client,
    options: &HttpOptions,
    bytes: &[u8],
    n_points: usize,
) -> Result<Sent, SendError> {
    let mut request = if options.put {
        client.put(url)
    } else {
        client.post(url)
    }
    .header(reqwest::header::CONTENT_TYPE, options.content_type);
    if options.datapoints_header {
        request = request.header("X-Snowth-Datapoints", n_points);
    }
    let body = if options.gzip {
        request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
        gzip_bytes(bytes)
    } else {
        bytes.to_vec()
    };
    let request_error = |source| SendError::Request {
        url: url.to_owned(),
        source,
    };
    let response = request.body(body).send().await.map_err(request_error)?;
    let status = response.status();
    if status.is_success() {
        let mut sent = Sent::default();
        if options.irondb_reply {
            // The data is stored once IRONdb answers 2xx; an unreadable
            // count only loses the statistics, so it is not an error.
            let text = response.text().await.unwrap_or_default();
            if let Ok(reply) = serde_json::from_str::<IrondbReply>(&text) {
                sent.remote_errors = reply.errors;
                sent.misdirected = reply.misdirected;
            }
        }
        return Ok(sent);
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(ERROR_BODY_BYTES).collect();
    let (url, status) = (url.to_owned(), status.as_u16());
    if status == 429 || !(400..500).contains(&status) {
        Err(SendError::Unavailable { url, status, body })
    } else {
        Err(SendError::Rejected { url, status, body })
    }
}

fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

async fn send_tcp(
    address: &str,
    connect_timeout: Duration,
    stream: &mut Option<TcpStream>,
    bytes: &[u8],
) -> Result<bool, SendError> {
    let connected = ensure_tcp(address, connect_timeout, stream).await?;
    let open = stream.as_mut().ok_or_else(|| SendError::Connect {
        address: address.to_owned(),
        source: io::Error::other("not connected"),
    })?;
    if let Err(source) = open.write_all(bytes).await {
        *stream = None;
        return Err(SendError::Write {
            address: address.to_owned(),
            source,
        });
    }
    Ok(connected)
}

/// Makes sure `stream` is a live connection; returns whether it is new.
async fn ensure_tcp(
    address: &str,
    connect_timeout: Duration,
    stream: &mut Option<TcpStream>,
) -> Result<bool, SendError> {
    // Carbon never writes to us, so a readable socket means the peer closed
    // (or reset) it: reconnect before writing into a dead connection whose
    // first write would "succeed" and be lost.
    if let Some(open) = stream.as_ref() {
        let mut probe = [0u8; 256];
        match open.try_read(&mut probe) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Ok(n) if n > 0 => {}
            _ => *stream = None,
        }
    }
    let mut connected = false;
    if stream.is_none() {
        let connect_error = |source| SendError::Connect {
            address: address.to_owned(),
            source,
        };
        let socket = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                connect_error(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            })?
            .map_err(connect_error)?;
        socket.set_nodelay(true).map_err(connect_error)?;
        *stream = Some(socket);
        connected = true;
    }
    Ok(connected)
}

async fn send_udp(
    address: &str,
    socket: &mut Option<UdpSocket>,
    bytes: &[u8],
) -> Result<bool, SendError> {
    let mut connected = false;
    if socket.is_none() {
        let connect_error = |source| SendError::Connect {
            address: address.to_owned(),
            source,
        };
        let remote: SocketAddr = lookup_host(address)
            .await
            .map_err(connect_error)?
            .next()
            .ok_or_else(|| connect_error(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
        let local: SocketAddr = if remote.is_ipv4() {
            "0.0.0.0:0"
                .parse()
                .map_err(io::Error::other)
                .map_err(connect_error)?
        } else {
            "[::]:0"
                .parse()
                .map_err(io::Error::other)
                .map_err(connect_error)?
        };
        let udp = UdpSocket::bind(local).await.map_err(connect_error)?;
        udp.connect(remote).await.map_err(connect_error)?;
        *socket = Some(udp);
        connected = true;
    }
    let Some(udp) = socket.as_ref() else {
        return Ok(connected);
    };
    for datagram in datagrams(bytes, MAX_DATAGRAM_BYTES) {
        if let Err(source) = udp.send(datagram).await {
            *socket = None;
            return Err(SendError::Write {
                address: address.to_owned(),
                source,
            });
        }
    }
    Ok(connected)
}

/// Splits newline-terminated text into runs of whole lines of at most
/// `max` bytes (a longer single line goes alone).
fn datagrams(bytes: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let window = &rest[..rest.len().min(max)];
        let cut = if window.len() == rest.len() {
            rest.len()
        } else {
            match memchr::memrchr(b'\n', window) {
                Some(newline) => newline + 1,
                None => memchr::memchr(b'\n', rest).map_or(rest.len(), |n| n + 1),
            }
        };
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_keep_lines_whole() {
        let text = b"aaaa\nbbbb\ncccccccccccc\nd\n";
        let parts: Vec<_> = datagrams(text, 10).collect();
        assert_eq!(parts, vec![&b"aaaa\nbbbb\n"[..], b"cccccccccccc\n", b"d\n"]);
        assert_eq!(parts.concat(), text);
    }
}
