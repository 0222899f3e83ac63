//! The LMTP server (RFC 2033) the MTA delivers the lists' mail to. A message is answered
//! `250` for its recipients only once it is stored (the store fsyncs), so what the MTA
//! hands over survives a crash; anything else is refused with the code that makes the MTA
//! retry (`4xx`) or bounce (`5xx`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::timeout,
};

/// How long the server waits for the next command or line.
const IDLE: Duration = Duration::from_secs(300);
/// Longest command line taken (RFC 5321 allows 512 with the CRLF; extensions a bit more).
const MAX_LINE: usize = 2048;

/// What the server does with what it receives.
pub trait Inbox: Send + Sync + 'static {
    /// Whether the bridge takes mail for this address (`550` otherwise).
    fn accepts(&self, rcpt: &str) -> bool;
    /// Stores a received message for its recipients, durably, before it is acknowledged.
    fn store(&self, from: &str, rcpts: &[String], message: &[u8]) -> anyhow::Result<()>;
}

/// Limits of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest message, in bytes.
    pub max_message: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Recipients per transaction.
    pub max_recipients: usize,
}

/// Serves LMTP on `listen` forever.
pub async fn serve(
    listen: SocketAddr,
    limits: Limits,
    inbox: Arc<impl Inbox>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!("LMTP on {listen}");
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accepting an LMTP connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let inbox = inbox.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, limits, &*inbox).await {
                tracing::debug!("LMTP session with {peer}: {e:#}");
            }
            drop(permit);
        });
    }
}

/// Reads one line (without its line end), bounded; `None` at the end of input.
async fn line<R: AsyncBufReadExt + Unpin>(input: &mut R) -> anyhow::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = timeout(
        IDLE,
        (&mut *input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf),
    )
    .await??;
    if n == 0 {
        return Ok(None);
    }
    anyhow::ensure!(buf.len() <= MAX_LINE, "command line too long");
    Ok(Some(
        String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
    ))
}

/// The address in `MAIL FROM:<a>` / `RCPT TO:<a>` (parameters after it ignored).
fn path(arg: &str) -> Option<String> {
    let start = arg.find('<')?;
    let end = arg[start..].find('>')? + start;
    Some(arg[start + 1..end].trim().to_lowercase())
}

async fn session(stream: TcpStream, limits: Limits, inbox: &impl Inbox) -> anyhow::Result<()> {
    let (read, mut out) = stream.into_split();
    let mut input = BufReader::new(read);
    out.write_all(b"220 tsunagu-email LMTP ready\r\n").await?;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    while let Some(cmd) = line(&mut input).await? {
        let (verb, arg) = cmd.split_once(' ').unwrap_or((&cmd, ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "LHLO" => format!(
                "250-tsunagu-email\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n\
                 250-8BITMIME\r\n250 SIZE {}\r\n",
                limits.max_message
            ),
            "MAIL" => match path(arg) {
                Some(f) => {
                    from = Some(f);
                    rcpts.clear();
                    "250 2.1.0 OK\r\n".into()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" => match (path(arg), &from) {
                (_, None) => "503 5.5.1 MAIL first\r\n".into(),
                (None, _) => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into(),
                (Some(_), _) if rcpts.len() >= limits.max_recipients => {
                    "452 4.5.3 Too many recipients\r\n".into()
                }
                (Some(r), _) if inbox.accepts(&r) => {
                    rcpts.push(r);
                    "250 2.1.5 OK\r\n".into()
                }
                (Some(r), _) => format!("550 5.1.1 <{r}>: no such list here\r\n"),
            },
            "DATA" if from.is_none() || rcpts.is_empty() => {
                "503 5.5.1 No valid recipients\r\n".into()
            }
            "DATA" => {
                out.write_all(b"354 Go ahead, end with <CRLF>.<CRLF>\r\n")
                    .await?;
                let (message, too_large) = data(&mut input, limits.max_message).await?;
                let sender = from.take().unwrap_or_default();
                let per_rcpt = if too_large {
                    "552 5.3.4 Message too big\r\n".to_owned()
                } else {
                    match inbox.store(&sender, &rcpts, &message) {
                        Ok(()) => "250 2.0.0 Stored\r\n".to_owned(),
                        Err(e) => {
                            tracing::warn!("storing a received message: {e:#}");
                            "451 4.3.0 Could not store the message, try again later\r\n".to_owned()
                        }
                    }
                };
                // LMTP answers once per recipient.
                let all = per_rcpt.repeat(rcpts.len());
                rcpts.clear();
                all
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                "250 2.0.0 OK\r\n".into()
            }
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "500 5.5.2 Unknown command\r\n".into(),
        };
        out.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}

/// Reads DATA up to the lone `.`, undoing dot-stuffing; past `max` bytes the rest is read
/// and dropped (so the session stays in step) and the message counts as too large.
async fn data<R: AsyncBufReadExt + Unpin>(
    input: &mut R,
    max: usize,
) -> anyhow::Result<(Vec<u8>, bool)> {
    let mut message = Vec::new();
    let mut too_large = false;
    loop {
        let mut buf = Vec::new();
        // A line longer than the whole limit cannot belong to a message that is taken.
        let mut bounded = (&mut *input).take(max as u64 + 3);
        let n = timeout(IDLE, bounded.read_until(b'\n', &mut buf)).await??;
        anyhow::ensure!(n > 0, "connection closed in DATA");
        let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content == b"." {
            return Ok((message, too_large));
        }
        let content = content.strip_prefix(b".").unwrap_or(content);
        if message.len() + content.len() + 2 > max {
            too_large = true;
            message.clear();
            message.shrink_to_fit();
        }
        if !too_large {
            message.extend_from_slice(content);
            message.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            path("FROM:<Bob@Example.org> SIZE=10").as_deref(),
            Some("bob@example.org")
        );
        assert_eq!(path("FROM:<>").as_deref(), Some(""));
        assert_eq!(path("TO:bob"), None);
    }

    #[tokio::test]
    async fn data_is_unstuffed_and_bounded() {
        let mut input = &b"a\r\n..b\r\n.\r\nafter"[..];
        let (m, big) = data(&mut input, 100).await.unwrap();
        assert_eq!((m.as_slice(), big), (&b"a\r\n.b\r\n"[..], false));
        let long = format!("{}\r\n.\r\n", "x".repeat(200));
        let mut input = long.as_bytes();
        let (m, big) = data(&mut input, 100).await.unwrap();
        assert!(big && m.is_empty());
    }
}
