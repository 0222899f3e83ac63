//! A small SMTP client for handing mail to the local MTA (RFC 5321; no TLS or AUTH: the MTA
//! is on loopback or a private link).

use std::time::Duration;

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    time::timeout,
};

/// How long one command may wait for its answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// One reply: its code and its text lines.
async fn reply<R: AsyncBufReadExt + Unpin>(input: &mut R) -> anyhow::Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = timeout(REPLY_TIMEOUT, input.read_line(&mut line))
            .await
            .context("the MTA did not answer")??;
        anyhow::ensure!(n > 0, "the MTA closed the connection");
        let code = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .context("not an SMTP reply")?;
        text.push_str(line.get(4..).unwrap_or("").trim_end());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
        text.push(' ');
    }
}

/// Dot-stuffs a message for DATA and ends it with `.`; line ends become CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    // `split` yields an empty last piece after a final newline: that CRLF is already there.
    if message.ends_with(b"\n") {
        out.truncate(out.len() - 2);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The MTA refused the message itself for good: a `5xx` reply to `MAIL FROM` or to the
/// message's data (too large, say). Sending it again would be refused again.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused for good: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// Sends one message: `MAIL FROM:<from>`, a `RCPT TO` per recipient, `DATA` (none when
/// every recipient was refused). Returns the recipients the MTA refused, with its reply code
/// (`4xx`: try again later; `5xx`: never).
pub async fn send(
    host: &str,
    port: u16,
    helo: &str,
    from: &str,
    to: &[String],
    message: &[u8],
) -> anyhow::Result<Vec<(String, u16)>> {
    let stream = timeout(REPLY_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .context("connecting to the MTA: timed out")?
        .with_context(|| format!("connecting to the MTA at {host}:{port}"))?;
    let (read, mut write) = stream.into_split();
    let mut input = BufReader::new(read);
    let expect = async |input: &mut BufReader<_>, want: u16, what: &str| -> anyhow::Result<()> {
        let (code, text) = reply(input).await?;
        anyhow::ensure!(code / 100 == want / 100, "{what}: {code} {text}");
        Ok(())
    };
    expect(&mut input, 220, "greeting").await?;
    write
        .write_all(format!("EHLO {helo}\r\n").as_bytes())
        .await?;
    expect(&mut input, 250, "EHLO").await?;
    write
        .write_all(format!("MAIL FROM:<{from}>\r\n").as_bytes())
        .await?;
    let (code, text) = reply(&mut input).await?;
    if code / 100 == 5 {
        return Err(Refused(format!("MAIL FROM: {code} {text}")).into());
    }
    anyhow::ensure!(code / 100 == 2, "MAIL FROM: {code} {text}");
    let mut refused = Vec::new();
    for rcpt in to {
        write
            .write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .await?;
        let (code, text) = reply(&mut input).await?;
        if code / 100 != 2 {
            tracing::warn!("the MTA refused {rcpt}: {code} {text}");
            refused.push((rcpt.clone(), code));
        }
    }
    if refused.len() == to.len() {
        let _ = write.write_all(b"QUIT\r\n").await;
        return Ok(refused);
    }
    write.write_all(b"DATA\r\n").await?;
    expect(&mut input, 354, "DATA").await?;
    write.write_all(&dot_stuff(message)).await?;
    let (code, text) = reply(&mut input).await?;
    if code / 100 == 5 {
        return Err(Refused(format!("the message: {code} {text}")).into());
    }
    anyhow::ensure!(code / 100 == 2, "the message: {code} {text}");
    let _ = write.write_all(b"QUIT\r\n").await;
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\n.b\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\nb"), b"a\r\nb\r\n.\r\n");
    }
}
